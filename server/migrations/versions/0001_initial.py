"""Initial schema: vehicles, marks, change log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "vehicles",
        sa.Column("id", _Id, primary_key=True),
        sa.Column("plate_type", sa.String(2), nullable=False),
        sa.Column("plate_number", sa.String(16), nullable=False),
        sa.Column("vin", sa.String(17), nullable=False, unique=True),
        sa.Column("category", sa.String(24), nullable=False),
        sa.Column("registered_on", sa.Date(), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("exemption_lost", sa.Boolean(), nullable=False),
        sa.Column("status_bits", sa.Integer(), nullable=False),
        sa.Column("valid_until", sa.Integer(), nullable=True),
        sa.Column("current_serial", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("plate_type", "plate_number", name="uq_vehicles_plate"),
    )
    op.create_table(
        "marks",
        sa.Column("serial", _Id, primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("vehicle_id", sa.BigInteger(), sa.ForeignKey("vehicles.id"), nullable=False, index=True),
        sa.Column("valid_until", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("inspected_on", sa.Date(), nullable=True),
        sa.Column("station_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("qr_text", sa.Text(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("revoked_reason", sa.String(200), nullable=False),
    )
    op.create_table(
        "change_log",
        sa.Column("id", _Id, primary_key=True),
        sa.Column("vehicle_id", sa.BigInteger(), sa.ForeignKey("vehicles.id"), nullable=False),
        sa.Column("revoked_serial", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_change_log_vehicle", "change_log", ["vehicle_id"])


def downgrade() -> None:
    op.drop_table("change_log")
    op.drop_table("marks")
    op.drop_table("vehicles")
