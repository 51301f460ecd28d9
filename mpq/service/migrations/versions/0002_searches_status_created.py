"""Index searches by (status, created): GET /v1/searches?status=... lists newest first.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_mpq_searches_status_created", "mpq_searches", ["status", "created"])


def downgrade() -> None:
    op.drop_index("ix_mpq_searches_status_created", table_name="mpq_searches")
