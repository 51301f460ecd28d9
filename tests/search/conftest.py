"""Fixtures of the search tests: scratch storages and a tiny model-backed problem."""
from __future__ import annotations

import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def db_dir():
    """A scratch directory, in memory when the machine has /dev/shm (SQLite commits are fsync-bound)."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="mpq-search-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sqlite_url(db_dir) -> str:
    return f"sqlite:///{db_dir / 'search.db'}"


TINY_WORKLOAD = textwrap.dedent('''
    import torch
    from torch import nn
    from mpq.workload import Workload

    def workload():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
        x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
        return Workload(model, [(x, y)], nn.functional.cross_entropy, name="tinywl:workload")
''')


@pytest.fixture
def tiny_problem(tmp_path, monkeypatch):
    from mpq.cost import CandidateSet, build_problem
    from mpq.graph import discover
    from mpq.pipeline import sensitivities
    from mpq.model_ref import load_workload

    (tmp_path / "tinywl.py").write_text(TINY_WORKLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    wl = load_workload("tinywl:workload")
    graph = discover(wl)
    table = sensitivities(wl, "weight-error", graph=graph, use_cache=False)
    return wl, build_problem(graph, table, CandidateSet(bits=(2, 4, 8)), {"max_avg_bits": 5})
