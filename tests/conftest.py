"""Fixtures shared by the whole suite."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data sits beside the checkout in CI and on the dev machine; a user's clone lacks it.
SHARED_DATA = Path(os.environ.get("BOTAI_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data directory, or skip when this machine does not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (set BOTAI_SHARED_DATA)")
    return SHARED_DATA
