import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Sensitivity tables are cached on disk; tests use a private cache so they never see a user's."""
    monkeypatch.setenv("MPQ_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mpq-cache"))
