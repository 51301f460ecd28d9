import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Sensitivity tables are cached on disk; tests use a private cache so they never see a user's."""
    monkeypatch.setenv("MPQ_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mpq-cache"))


# CI runs the same examples every time (a failure there reproduces); locally hypothesis keeps exploring.
from hypothesis import settings as _hypothesis_settings

_hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")
