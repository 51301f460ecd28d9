"""Database URLs pick the PostgreSQL driver that is installed, and leave every other URL alone."""
from __future__ import annotations

import importlib.util

import pytest

from mpq.dburl import with_installed_driver


@pytest.mark.parametrize("url", ["sqlite:///x.db", "journal:///s.log", "postgresql+psycopg2://u@h/db", "mysql://h/db"])
def test_urls_other_than_plain_postgres_are_unchanged(url):
    assert with_installed_driver(url) == url


@pytest.mark.parametrize("installed, driver", [({"psycopg", "psycopg2"}, "psycopg"), ({"psycopg2"}, "psycopg2"), (set(), None)])
def test_postgres_urls_get_the_installed_driver(monkeypatch, installed, driver):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in installed else
                        (None if name in ("psycopg", "psycopg2") else real(name, *a)))
    for scheme in ("postgresql", "postgres"):
        got = with_installed_driver(f"{scheme}://user:pw@host:5432/db")
        assert got == (f"postgresql+{driver}://user:pw@host:5432/db" if driver else "postgresql://user:pw@host:5432/db")
