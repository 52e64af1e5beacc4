"""Audit log: who verified or looked up which plate, when, and the answer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", _Id, primary_key=True),
        sa.Column("at", sa.Double(), nullable=False),  # Unix seconds, sub-second precision
        sa.Column("caller_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("rpc", sa.String(32), nullable=False),
        sa.Column("plate_type", sa.String(8), nullable=False),
        sa.Column("plate_number", sa.String(32), nullable=False),  # empty when the QR was not authentic
        sa.Column("verdict", sa.String(32), nullable=False),  # a Verdict name, or FOUND / NOT_FOUND
        sa.Column("serial", sa.BigInteger(), nullable=False),  # 0 = no mark identified
    )
    op.create_index("ix_audit_events_plate_at", "audit_events", ["plate_number", "at"])
    op.create_index("ix_audit_events_caller_at", "audit_events", ["caller_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_caller_at", table_name="audit_events")
    op.drop_index("ix_audit_events_plate_at", table_name="audit_events")
    op.drop_table("audit_events")
