"""The README's Python examples for the foundation run as written."""

import re

import pytest

SECTIONS = ("## Parameter files", "## Python API")


def _blocks(root):
    text = (root / "README.md").read_text()
    out = []
    for head in SECTIONS:
        start = text.index(head)
        end = text.find("\n## ", start + 3)
        out += re.findall(r"```python\n(.*?)```", text[start:end], re.S)
    return out


def test_readme_python_examples_run(root, monkeypatch):
    blocks = _blocks(root)
    assert len(blocks) == 2
    monkeypatch.chdir(root)
    ns = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), ns)  # noqa: S102
    assert ns["traj"].ok
    assert ns["p2"]["eve_cl"] == pytest.approx(500.0)
