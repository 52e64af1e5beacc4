"""Who issued each mark; every answered Issue request; the audit log's hash chain.

- marks: issued_by ("role/caller_id" of the calling certificate), issuer_fingerprint (its SHA-256).
- issue_requests: one row per answered Issue request (a grant or a copy of the current mark), so a
  retry gets the same answer; filled with one row per existing mark (its grant's request, digest
  unknown).
- audit_events: fingerprint (the caller's certificate), chain (store/audit_chain.py), computed here
  for the events already stored, in id order, so an upgraded log verifies from its first event.
- audit_chain_anchor: where the chain continues after pruned events.
- audit_events.verdict: 48 characters, for an issuer's REFUSED_<reason>; marks.station_id: 64, a
  station's certificate id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from vimark.server.store.audit_chain import GENESIS, link

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_PAGE = 5000


def upgrade() -> None:
    op.add_column("marks", sa.Column("issued_by", sa.String(80), nullable=False, server_default=""))
    op.add_column("marks", sa.Column("issuer_fingerprint", sa.String(64), nullable=False, server_default=""))
    # A station issues in its own name: its certificate's caller id, up to 64 characters.
    with op.batch_alter_table("marks") as batch:
        batch.alter_column("station_id", type_=sa.String(64), existing_type=sa.String(32), existing_nullable=False)
    op.create_table(
        "issue_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("serial", sa.BigInteger(), nullable=False),  # the mark answered
        sa.Column("digest", sa.String(64), nullable=False, server_default=""),  # "" = unknown
        sa.Column("at", sa.Double(), nullable=False),  # Unix seconds
    )
    op.execute(
        "INSERT INTO issue_requests (request_id, serial, digest, at)"
        " SELECT request_id, serial, '', issued_at FROM marks"
    )
    op.add_column("audit_events", sa.Column("fingerprint", sa.String(64), nullable=False, server_default=""))
    op.add_column("audit_events", sa.Column("chain", sa.String(64), nullable=False, server_default=""))
    # Issuers' refusals are recorded as REFUSED_<reason>: longer than a Verdict name. (Batch mode:
    # SQLite alters a column by copying the table.)
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("verdict", type_=sa.String(48), existing_type=sa.String(32), existing_nullable=False)
    op.create_table(
        "audit_chain_anchor",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),  # always 1
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("chain", sa.String(64), nullable=False),
    )
    _chain_existing_events()


def _chain_existing_events() -> None:
    """Chain the events stored before this revision, in id order (they have no fingerprint: "")."""
    conn = op.get_bind()
    select = sa.text(
        "SELECT id, at, caller_id, role, rpc, plate_type, plate_number, verdict, serial, fingerprint"
        " FROM audit_events WHERE id > :after ORDER BY id LIMIT :page"
    )
    update = sa.text("UPDATE audit_events SET chain = :chain WHERE id = :id")
    prev, after = GENESIS, 0
    while True:
        rows = conn.execute(select, {"after": after, "page": _PAGE}).all()
        if not rows:
            return
        chains = []
        for r in rows:
            prev = link(prev, float(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], int(r[8]), r[9])
            chains.append({"chain": prev, "id": r[0]})
        conn.execute(update, chains)
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_table("audit_chain_anchor")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("chain")
        batch.drop_column("fingerprint")
    op.drop_table("issue_requests")
    with op.batch_alter_table("marks") as batch:
        batch.drop_column("issuer_fingerprint")
        batch.drop_column("issued_by")
