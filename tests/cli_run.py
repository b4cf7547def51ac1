"""Run the `dormancy` command in-process: (exit code, stdout, stderr)."""

import pytest

from dormancy_model.cli.main import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err
