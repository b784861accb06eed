"""An installed srscale finds its configuration: conf/ and sweeps/ ship inside the package.

The fast tests check the layout (the package links to the top-level folders; every file there has a
suffix the package data takes, so a new file ships without being listed). The slow one builds a
wheel from a copy of the checkout, installs it alone into a folder, and runs the installed command
from an empty directory with nothing of the checkout on the path.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

SHIPPED = ("conf", "sweeps")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@pytest.mark.parametrize("name", SHIPPED)
def test_package_links_the_top_level_folder(name: str) -> None:
    link = REPO / "src" / "srscale" / name
    assert link.is_symlink() and os.readlink(link) == f"../../{name}"
    assert link.resolve() == (REPO / name).resolve() and (REPO / name).is_dir()


def test_every_config_file_is_package_data() -> None:
    try:
        import tomllib  # Python >= 3.11

        pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    except ModuleNotFoundError:  # Python 3.10, whose venvs carry setuptools
        from setuptools.config.pyprojecttoml import read_configuration

        pyproject = read_configuration(REPO / "pyproject.toml")
    patterns = pyproject["tool"]["setuptools"]["package-data"]["srscale"]
    for name in SHIPPED:
        for path in _files(REPO / name):
            rel = f"{name}/{path.relative_to(REPO / name).as_posix()}"
            # setuptools' "**/" also matches no folder at all
            assert any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.replace("**/", "")) for p in patterns), rel


def _copy_checkout(dest: Path) -> Path:
    """What ``pip install .`` reads, copied with the links as links (the checkout stays clean)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("src", *SHIPPED):
        shutil.copytree(REPO / name, dest / name, symlinks=True, ignore=ignore)
    return dest


@pytest.mark.slow
def test_wheel_runs_from_an_empty_directory(tmp_path: Path) -> None:
    checkout = _copy_checkout(tmp_path / "checkout")
    wheels, site, empty = tmp_path / "wheels", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Offline with the venv's setuptools where it has one (Python < 3.12 venvs do); else pip fetches it.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([*pip, "wheel", "--no-deps", *isolation, str(checkout), "-w", str(wheels)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("srscale-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SHIPPED:
        expected = {f"srscale/{name}/{p.relative_to(REPO / name).as_posix()}" for p in _files(REPO / name)}
        assert expected and expected <= names, sorted(expected - names)
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300,
                   capture_output=True)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=empty, env=env, capture_output=True, text=True, timeout=180)

    where = run(sys.executable, "-c", "import srscale.package_files as p; print(p.CONF_DIR)")
    assert where.stdout.strip() == str(site / "srscale" / "conf"), where.stderr
    script = site / "bin" / "srscale"
    helped = run(str(script), "--help")
    assert helped.returncode == 0, helped.stderr
    assert "model: " in helped.stdout and "tiny_1m" in helped.stdout
    job = run(str(script), "--cfg", "job")
    assert job.returncode == 0 and "name: tiny" in job.stdout, job.stderr
    sweep = run(str(script), "+sweeps=tiny_ladder", "--cfg", "hydra")
    assert sweep.returncode == 0 and "model: tiny_300k,tiny_1m,tiny_4m" in sweep.stdout, sweep.stderr
    bad = run(str(script), "model=no_such")
    assert bad.returncode == 2 and bad.stderr.startswith("srscale: unknown option model=no_such"), bad.stderr
    fsdp = run(sys.executable, "-c", "from srscale.launch import accelerate_config_path as a; print(a('fsdp'))")
    assert fsdp.stdout.strip() == str(site / "srscale" / "conf" / "accelerate" / "fsdp.yaml"), fsdp.stderr
    assert list(empty.iterdir()) == []
