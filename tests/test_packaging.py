"""The installed package works: the wheel holds every package-data file and every module, and
(slow) a fresh venv with the wheel installed runs the README's commands from an unrelated folder."""

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "dormancy_model"
LOCK = ROOT / "requirements" / "lock.txt"


def _env():
    """The environment without this checkout on the path (the wheel must stand alone)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _package_data_globs():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return cfg["tool"]["setuptools"]["package-data"]["dormancy_model"]


def _source_files():
    """Every file of the package source, relative to src/ (caches left out)."""
    return sorted(p.relative_to(PKG.parent).as_posix() for p in PKG.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the checkout (so the build leaves nothing in the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    dist = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(tree),
                        "-w", str(dist)], capture_output=True, text=True, env=_env(),
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = dist.glob("dormancy_model-*.whl")
    return whl


def test_package_data_globs_cover_every_data_file():
    globs = _package_data_globs()
    data = [f for f in _source_files() if not f.endswith(".py")]
    rel = [f.removeprefix("dormancy_model/") for f in data]
    for name in ("params/data/human.toml", "params/data/mouse.toml"):
        assert name in rel
    missing = [f for f in rel if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, f"package files no package-data glob ships: {missing}"


def test_wheel_holds_every_module_and_data_file(wheel):
    from dormancy_model._version import __version__

    assert wheel.name.startswith(f"dormancy_model-{__version__}-")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(f"dormancy_model-{__version__}.dist-info/METADATA").decode()
    missing = [f for f in _source_files() if f not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert f"\nVersion: {__version__}\n" in meta
    assert "dormancy = dormancy_model.cli.main:main" in zipfile.ZipFile(wheel).read(
        f"dormancy_model-{__version__}.dist-info/entry_points.txt").decode()


def test_package_data_loads_from_the_wheel(wheel, tmp_path):
    """Imported from the wheel itself (zipimport), not from this checkout."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import dormancy_model as dm\n"
        "assert dm.__file__.startswith(sys.argv[1]), dm.__file__\n"
        "from dormancy_model.params.table import load_model_parameters\n"
        "h, m = load_model_parameters('human'), load_model_parameters('mouse')\n"
        "print(dm.__version__, len(h.names), len(m.names), h['eve_cl'])\n")
    r = subprocess.run([sys.executable, "-c", code, str(wheel)], capture_output=True, text=True,
                       cwd=tmp_path, env=_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    version, n_human, n_mouse, _ = r.stdout.split()
    from dormancy_model._version import __version__

    assert version == __version__
    assert int(n_human) > 10 and int(n_mouse) > 10


@pytest.mark.slow
def test_installed_wheel_runs_the_commands(wheel, tmp_path):
    """`pip install` of the wheel (the tested versions as constraints) into a fresh venv, then
    `dormancy simulate` and `dormancy trial` from an unrelated folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_env())
    bin_ = venv / "bin"
    r = subprocess.run([str(bin_ / "python"), "-m", "pip", "install", "--quiet", "-c", str(LOCK),
                        str(wheel)], capture_output=True, text=True, env=_env(), timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env()
    for args, out, files in (
            (["simulate", "--schedule", "clever-combo", "--years", "1"], "sim",
             ("trajectory.csv", "summary.json", "trajectory.png")),
            (["trial", "--replicates", "2"], "trial", ("report.md", "report.html", "trials.csv"))):
        r = subprocess.run([str(bin_ / "dormancy"), *args, "--out", out], capture_output=True,
                           text=True, cwd=work, env=env, timeout=1800)
        assert r.returncode == 0, r.stdout + r.stderr
        for f in files:
            assert (work / out / f).stat().st_size > 0, f
    r = subprocess.run([str(bin_ / "python"), "-c", "import dormancy_model; "
                        "print(dormancy_model.__file__)"], capture_output=True, text=True,
                       cwd=work, env=env, check=True)
    assert r.stdout.startswith(str(venv)), r.stdout
