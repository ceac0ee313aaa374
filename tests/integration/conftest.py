"""Registry databases for integration tests.

``registry_url`` runs a test on both backends: a SQLite file, or a private PostgreSQL
database (``postgres_url`` in tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry database URL: a SQLite file under ``tmp_path``, or a private PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
