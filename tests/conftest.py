import os

import pytest

from tests.helpers.hf_tiny import tiny_hf  # noqa: F401  (session fixture: each tiny model is built once per run)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Sensitivity tables are cached on disk; tests use a private cache so they never see a user's."""
    monkeypatch.setenv("MPQ_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mpq-cache"))


# CI runs the same examples every time (a failure there reproduces); locally hypothesis keeps exploring.
from hypothesis import settings as _hypothesis_settings

_hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and several threads contend on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
