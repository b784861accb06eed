"""Shared fixtures. The public data files live beside the checkout in ../shared/data (CI has them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$SRSCALE_SHARED_DATA`` or ``<repo>/../shared/data``; fails loudly when absent."""
    path = Path(os.environ.get("SRSCALE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        raise RuntimeError(f"test data not found at {path}: set SRSCALE_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()
