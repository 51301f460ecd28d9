"""Alembic migrations of the service's store (``mpq.service.store``); run by :func:`mpq.service.migrate.upgrade`."""
