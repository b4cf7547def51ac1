"""The import contract in pyproject.toml ([tool.importlinter]) holds: subpackages are layered
(arrows only run down), inside pk the presets sit above the schedules, and no sibling modules or
subpackages import each other in a cycle. A broken contract prints the offending imports."""

import os
from pathlib import Path

import pytest
from importlinter import api
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "pyproject.toml")
CONTRACTS = [c["id"] for c in api.read_configuration(CONFIG)["contracts_options"]]


def test_contracts_are_configured():
    assert {"layers", "pk", "acyclic"} <= set(CONTRACTS)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_import_contract_holds(contract, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert os.path.samefile(__import__("dormancy_model").__path__[0],
                            ROOT / "src" / "dormancy_model")  # this checkout is what is checked
    code = lint_imports(config_filename=CONFIG, limit_to_contracts=(contract,), no_cache=True,
                        no_logo=True)
    assert code == 0, f"import contract {contract!r} is broken (see the output above)"
