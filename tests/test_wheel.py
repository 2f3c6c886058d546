"""A user who installed with pip, not from a clone, can start at once: the wheel carries the bundled
recipes, and the quick start works in an empty folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def pip_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with nndiag installed from its wheel. Its dependencies (torch ...)
    are borrowed from this environment through a .pth file rather than downloaded again."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-w", str(root / "dist"), "-q"], capture_output=True, text=True
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here (no network for the build backend?): {built.stderr.strip()[-300:]}")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((root / "dist").glob("nndiag-*.whl"))
    with zipfile.ZipFile(wheel) as archive:  # what pyproject.toml promises: typed, every subpackage, no development tool
        names = set(archive.namelist())
    assert "nndiag/py.typed" in names and {f"nndiag/{p}/__init__.py" for p in ("config", "zoo", "training", "output", "diagnosis")} <= names
    assert not any(n.startswith(("tools/", "tests/")) for n in names)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--ignore-installed", "-q", str(wheel)], check=True
    )  # --ignore-installed: the borrowed site-packages may hold an editable nndiag, which pip would keep
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NNDIAG_RECIPES")}
    env["NNDIAG_RUNS"] = str(cwd / "runs")
    return subprocess.run([str(venv / "bin" / "nndiag"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_quick_start_works_for_a_pip_user_in_an_empty_folder(pip_install: Path, tmp_path: Path) -> None:
    listed = _run(pip_install, "recipes", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = {r["name"]: r["file"] for r in json.loads(listed.stdout)}
    assert "quickstart" in names and "share/nndiag/recipes" in names["quickstart"]
    assert str(REPO) not in names["quickstart"]  # the installed copy, not this checkout
    checked = _run(pip_install, "check-loss", "quickstart", "--set", "device=cpu", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "using the bundled recipe" in checked.stderr and "share/nndiag/recipes/quickstart.yaml" in checked.stderr
    verdict = json.loads(_run(pip_install, "check-loss", "quickstart", "--json", "--set", "device=cpu", cwd=tmp_path).stdout)
    assert verdict["status"] == "pass" and verdict["recipe"].endswith("share/nndiag/recipes/quickstart.yaml")


def test_the_readme_quick_start_runs_verbatim_from_the_wheel(pip_install: Path, tmp_path: Path) -> None:
    """README.md and docs/index.md: `pip install nndiag`, then this command in an empty folder."""
    quick_start = "nndiag babysit quickstart --budget quick"
    for page in (REPO / "README.md", REPO / "docs" / "index.md"):
        assert f"```bash\n{quick_start}\n```" in page.read_text(), page
    env_device = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # the CPU, one thread: as the other tests (2 shared cores)
    done = subprocess.run(
        [str(pip_install / "bin" / "nndiag"), *quick_start.split()[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NNDIAG_RECIPES", "NNDIAG_RUNS")}, **env_device},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.glob("runs/quickstart/babysit-*/report.html")), done.stdout[-2000:]
