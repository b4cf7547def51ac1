"""`dormancy` command line (thin: parse, call the verbs, write files).

Bad input prints one line `dormancy: error: <file>: <field>: <problem>` on stderr and exits 2,
with no traceback and no partial output. Feature commands live in the `cli/` modules listed in
COMMAND_MODULES; each defines `register(app)`.
"""

from __future__ import annotations

import importlib
import sys

import typer

from dormancy_model.errors import InputError

# typer vendors its own click; take the exception classes from typer's public ones.
_BadParameter = typer.BadParameter
_UsageError = typer.BadParameter.__mro__[1]
_ClickException = typer.BadParameter.__mro__[2]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Mechanistic modelling of breast-cancer tumour dormancy.")

COMMAND_MODULES = (
    "dormancy_model.cli.simulate",
    "dormancy_model.cli.sweep",
    "dormancy_model.cli.fit",
    "dormancy_model.cli.vpc",
    "dormancy_model.cli.agents",
    "dormancy_model.cli.trial",
    "dormancy_model.cli.design",
    "dormancy_model.cli.demo",
)

for _mod in COMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def _error(msg: str, code: int = 2) -> None:
    print(f"dormancy: error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def main(argv=None) -> None:
    from dormancy_model.engine.devices import use_compilation_cache
    from dormancy_model.model.simulate import SolveError

    use_compilation_cache()  # compiled programs kept between runs (off: DORMANCY_CACHE_DIR=off)

    try:
        app(args=argv, standalone_mode=False)
    except InputError as e:
        _error(str(e))
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        _error("aborted", 130)
    except _UsageError as e:
        opt = ""
        if isinstance(e, _BadParameter) and getattr(e, "param", None) is not None:
            opt = "/".join(e.param.opts) + ": "
        _error(f"{opt}{e.format_message()}".replace("\n", " "))
    except _ClickException as e:
        _error(e.format_message().replace("\n", " "))
    except SolveError as e:
        _error(f"solver failed: {e}", 1)
    except FileNotFoundError as e:
        _error(f"{e.filename}: file: not found")


if __name__ == "__main__":
    main()
