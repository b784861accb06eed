"""Where the configuration srscale ships lives: ``conf/`` (the Hydra groups) and ``sweeps/``.

Both folders sit at the top of a checkout (the product's layout) and are linked into the package
(``src/srscale/conf -> ../../conf``, ``src/srscale/sweeps -> ../../sweeps``), so one path next to
this file finds them in every install mode: a checkout on ``PYTHONPATH``, ``pip install -e .`` (a path
entry to ``src/``) and ``pip install .`` or a wheel (setuptools follows the links and copies the files
as package data). A file added to either folder ships without being listed anywhere.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Resolved: in a checkout these are the top-level folders themselves (what messages and Hydra show).
CONF_DIR = (PACKAGE_DIR / "conf").resolve()
SWEEPS_DIR = (PACKAGE_DIR / "sweeps").resolve()
ACCELERATE_DIR = CONF_DIR / "accelerate"


def missing_config_problem() -> str | None:
    """One line when the installed package lacks its configuration (a broken install), else None."""
    if (CONF_DIR / "config.yaml").is_file():
        return None
    return (f"srscale's configuration is missing ({CONF_DIR / 'config.yaml'} not found): the install is "
            "incomplete; reinstall it (pip install . or pip install -e . from a checkout)")
