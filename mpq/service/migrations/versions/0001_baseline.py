"""The store as mpq 0.1.0 first wrote it: plans and searches.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mpq_plans",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created", sa.Float, nullable=False, index=True),
        sa.Column("fingerprint", sa.String(256), index=True),
        sa.Column("model_name", sa.String(512)),
        sa.Column("solver", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("avg_bits", sa.Float, nullable=False),
        sa.Column("distortion", sa.Float, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "mpq_searches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created", sa.Float, nullable=False, index=True),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("solver", sa.String(64), nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("problem", sa.Text, nullable=False),
        sa.Column("best", sa.Text),
        sa.Column("plan_id", sa.String(32)),
        sa.Column("error", sa.Text),
        sa.Column("restarts", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(64)),
        sa.Column("heartbeat", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("mpq_searches")
    op.drop_table("mpq_plans")
