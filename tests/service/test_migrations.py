"""The store's schema migrations: a database written before migrations existed upgrades in place."""
from __future__ import annotations

import sqlalchemy as sa

from mpq.service.store import Store


def legacy_schema() -> sa.MetaData:
    """The tables exactly as mpq wrote them before migrations (metadata.create_all of mpq 0.1.0's store)."""
    md = sa.MetaData()
    sa.Table("mpq_plans", md,
             sa.Column("id", sa.String(32), primary_key=True), sa.Column("created", sa.Float, nullable=False, index=True),
             sa.Column("fingerprint", sa.String(256), index=True), sa.Column("model_name", sa.String(512)),
             sa.Column("solver", sa.String(64), nullable=False), sa.Column("status", sa.String(16), nullable=False),
             sa.Column("bytes", sa.BigInteger, nullable=False), sa.Column("avg_bits", sa.Float, nullable=False),
             sa.Column("distortion", sa.Float, nullable=False), sa.Column("source", sa.String(16), nullable=False),
             sa.Column("body", sa.Text, nullable=False))
    sa.Table("mpq_searches", md,
             sa.Column("id", sa.String(32), primary_key=True), sa.Column("created", sa.Float, nullable=False, index=True),
             sa.Column("updated", sa.Float, nullable=False), sa.Column("status", sa.String(16), nullable=False, index=True),
             sa.Column("progress", sa.Float, nullable=False, default=0.0), sa.Column("solver", sa.String(64), nullable=False),
             sa.Column("options", sa.Text, nullable=False), sa.Column("problem", sa.Text, nullable=False),
             sa.Column("best", sa.Text), sa.Column("plan_id", sa.String(32)), sa.Column("error", sa.Text),
             sa.Column("restarts", sa.Integer, nullable=False, default=0), sa.Column("owner", sa.String(64)),
             sa.Column("heartbeat", sa.Float))
    return md


def test_a_database_written_before_migrations_is_upgraded_and_keeps_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    md = legacy_schema()
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(md.tables["mpq_searches"].insert().values(
            id="s1", created=1.0, updated=1.0, status="done", progress=1.0, solver="auto", options="{}", problem="{}", restarts=0))
    engine.dispose()

    store = Store(url)
    assert store.revision == "0002"
    inspector = sa.inspect(store.engine)
    assert "mpq_alembic_version" in inspector.get_table_names()
    assert "ix_mpq_searches_status_created" in {i["name"] for i in inspector.get_indexes("mpq_searches")}
    total, items = store.list_searches("done", 10, 0)
    assert total == 1 and items[0]["id"] == "s1"
    store.close()
    assert Store(url).revision == "0002"  # opening again changes nothing


def test_a_new_database_is_created_by_the_migrations_and_matches_the_store_tables(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    inspector = sa.inspect(store.engine)
    for table in ("mpq_plans", "mpq_searches"):
        columns = {c["name"] for c in inspector.get_columns(table)}
        from mpq.service.store import metadata

        assert columns == {c.name for c in metadata.tables[table].columns}


def test_a_database_shared_with_an_optuna_storage_keeps_both_revisions(tmp_path):
    """Optuna keeps its own revision in ``alembic_version``; mpq's migrations must neither read nor change it."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('v3.2.0.a')"))
    engine.dispose()

    store = Store(url)
    assert store.revision == "0002"
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "v3.2.0.a"
    store.close()
