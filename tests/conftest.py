import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# share compiled XLA programs between the test processes and the example subprocesses
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dormancy_model as dm  # noqa: E402


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def human():
    return dm.load_parameters(ROOT / "src" / "dormancy_model" / "params" / "data" / "human.toml")


@pytest.fixture(scope="session")
def mouse():
    return dm.load_parameters(ROOT / "src" / "dormancy_model" / "params" / "data" / "mouse.toml")


@pytest.fixture(scope="session")
def model():
    return dm.DormancyModel()
