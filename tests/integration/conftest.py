"""Fixtures shared by the integration tests that need more than a database."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def throwaway_server() -> Iterator[tuple[Path, str]]:
    """A throwaway embedded server the test may stop and start (never the shared one):
    (its home, its URL)."""
    from jobsys.db import embedded

    # Its own short folder: a socket path must stay under ~100 bytes.
    home = Path(tempfile.mkdtemp(prefix="jobsys-restart-"))
    st = embedded.start(home)
    assert st.url is not None
    try:
        yield home, st.url
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
