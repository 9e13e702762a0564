"""Packaging: light imports, typed marker, a consistent __all__, and a wheel that builds offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import hiercls

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("timm", "matplotlib", "sklearn")


def test_import_does_not_pull_heavy_optional_dependencies() -> None:
    code = (
        "import json, sys; import hiercls; "
        f"print(json.dumps({{m: any(k == m or k.startswith(m + '.') for k in sys.modules) for m in {list(HEAVY)!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == dict.fromkeys(HEAVY, False), f"import hiercls imported {[m for m, v in loaded.items() if v]}"


def test_the_check_above_can_see_a_heavy_import() -> None:
    """Guard against a vacuous check: the same probe reports a module that was imported."""
    code = "import json, sys; import hiercls, sklearn; print(json.dumps('sklearn' in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) is True


def test_py_typed_marker_ships() -> None:
    assert (Path(hiercls.__file__).parent / "py.typed").is_file()


def test_every_name_in_all_exists() -> None:
    assert hiercls.__all__, "hiercls.__all__ is empty"
    assert len(set(hiercls.__all__)) == len(hiercls.__all__), "duplicate names in hiercls.__all__"
    missing = [name for name in hiercls.__all__ if not hasattr(hiercls, name)]
    assert not missing, f"hiercls.__all__ names missing attributes: {missing}"
    for name in ("Taxonomy", "TaxonomyError", "UnknownNodeError"):
        assert name in hiercls.__all__


def test_contract_names_importable() -> None:
    from hiercls import Taxonomy, TaxonomyError, UnknownNodeError  # noqa: F401 - the DESIGN.md contract

    assert issubclass(UnknownNodeError, TaxonomyError) and issubclass(TaxonomyError, ValueError)


@pytest.mark.slow
def test_wheel_and_sdist_build_offline_with_licence(tmp_path: Path) -> None:
    pytest.importorskip("build")
    # build from a copy so that build/ and *.egg-info never land in the (shared) checkout
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "hiercls", "tests", "examples", "benchmarks"):
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        elif path.is_file():
            shutil.copy2(path, src / name)
    outdir = tmp_path / "dist"
    # --no-isolation: offline, with the tools already in this venv; the wheel package is not needed by
    # setuptools >= 70.1, hence --skip-dependency-check for the build-system 'wheel' requirement
    cmd = [
        sys.executable,
        "-m",
        "build",
        "--sdist",
        "--wheel",
        "--no-isolation",
        "--skip-dependency-check",
        "--outdir",
        str(outdir),
    ]
    run = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"python -m build failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    wheels = list(outdir.glob("hiercls-*.whl"))
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "hiercls/py.typed" in names and "hiercls/__init__.py" in names and "hiercls/taxonomy.py" in names
    top = {n.split("/")[0] for n in names}
    assert not {"tests", "examples", "benchmarks", "docs"} & top, f"wheel ships {sorted(top)}"
    assert all(t == "hiercls" or t.startswith("hiercls-") for t in top), sorted(top)
    # the licence the metadata declares travels with the wheel
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), [n for n in names if "dist-info" in n]
    # the sdist: the library, its licence and metadata, and no half of the test suite (whose helpers it would lack)
    sdists = list(outdir.glob("hiercls-*.tar.gz"))
    assert len(sdists) == 1, sdists
    with tarfile.open(sdists[0]) as tar:
        members = [m.split("/", 1)[1] for m in tar.getnames() if "/" in m]
    assert {"LICENSE", "pyproject.toml", "README.md", "hiercls/taxonomy.py", "hiercls/py.typed"} <= set(members)
    stray = sorted({m.split("/")[0] for m in members} & {"tests", "examples", "benchmarks", "docs"})
    assert not stray, f"the sdist ships {stray}"
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [
        line
        for line in zipfile.ZipFile(wheels[0]).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    core = [r for r in requires if "extra ==" not in r]
    assert not any(h in r for r in core for h in ("timm", "matplotlib", "scikit-learn")), core


def test_the_version_is_the_same_in_the_package_and_its_metadata() -> None:
    """hiercls.__version__ and pyproject's version are written in two places: a release that bumps one
    would ship a wheel whose __version__ lies."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert hiercls.__version__ == declared
