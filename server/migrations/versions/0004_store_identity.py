"""The store's identity: a random id made once per database, so an index checkpoint written for
one database is never used with another (server/index_checkpoint.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "store_identity",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),  # always 1
        sa.Column("store_id", sa.String(36), nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "store_id": str(uuid.uuid4())}])


def downgrade() -> None:
    op.drop_table("store_identity")
