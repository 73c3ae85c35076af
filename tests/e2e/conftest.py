"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def home() -> Iterator[Path]:
    """Where a test's `vigil up` keeps its data dir and log: not under pytest's temp folder,
    which another pytest run as this user resets to 0700, and the embedded Postgres runs as
    its own OS user (as in conftest's postgres_dsn)."""
    path = Path(tempfile.mkdtemp(prefix="vigil-test-up-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
