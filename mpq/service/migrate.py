"""Bring the store's database to the newest schema with Alembic (``mpq/service/migrations``).

A database written before migrations existed (tables, no ``mpq_alembic_version``) is stamped with the
baseline it matches, then upgraded like any other; a new one is created by the migrations. mpq keeps
its revision in its own ``mpq_alembic_version`` table: a database shared with an Optuna storage
already has Optuna's ``alembic_version``.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from mpq.extras import require

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"
VERSION_TABLE = "mpq_alembic_version"


def upgrade(engine: Engine) -> str:
    """Upgrade ``engine``'s database to the newest revision; returns that revision."""
    require("alembic", "the service's database migrations")
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        tables = set(inspect(conn).get_table_names())
        if "mpq_plans" in tables and VERSION_TABLE not in tables:
            command.stamp(config, BASELINE)  # written by mpq before migrations: it is the baseline schema
        command.upgrade(config, "head")
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
