"""Each mark's signed plate and VIN (marks.signed_plate_type, signed_plate_number, signed_vin),
kept at issue so police terminals' status snapshot is built by SQL joins instead of decoding
every mark's QR text (server/terminal_status.py).

Rows already there keep '' (the server default): they are not filled from their vehicle's plate
and VIN now, because a vehicle re-plated since its mark was issued holds another plate than the
one its mark signs, and the snapshot must judge what the mark says. The build reads '' rows'
plates from their QR text (a slow path that shrinks as those marks leave their validity months).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("marks", sa.Column("signed_plate_type", sa.String(2), nullable=False, server_default=""))
    op.add_column("marks", sa.Column("signed_plate_number", sa.String(16), nullable=False, server_default=""))
    op.add_column("marks", sa.Column("signed_vin", sa.String(17), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("marks") as batch:
        batch.drop_column("signed_vin")
        batch.drop_column("signed_plate_number")
        batch.drop_column("signed_plate_type")
