"""Fixtures of the service tests."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mpq.service.app import create_app
from mpq.service.limits import ServiceConfig


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """An in-process service (no worker processes) on its own SQLite database, with the slow test solver."""
    db = tmp_path_factory.mktemp("svc") / "api.db"
    config = ServiceConfig(db_url=f"sqlite:///{db}", solve_workers=0, plugins=("tests.helpers.slow_solver",))
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        yield c
