"""Alembic environment: migrations run on the connection that :func:`mpq.service.migrate.upgrade` passes in."""
from alembic import context

from mpq.service.migrate import VERSION_TABLE
from mpq.service.store import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
