"""Editor decisions carry a version (optimistic concurrency) and a reason; event ids are per reader.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("summaries") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    # Two readers may both send an event "c1": the key is (reader, event id), not the event id.
    # A new table and a copy: SQLite cannot change a primary key in place.
    _events_keyed_by(["reader_id", "event_id"])


def downgrade() -> None:
    _events_keyed_by(["event_id"])  # fails if two readers share an event id: nothing is dropped
    with op.batch_alter_table("summaries") as batch:
        batch.drop_column("version")
        batch.drop_column("reason")


def _events_keyed_by(key: list[str]) -> None:
    op.create_table(
        "events_next",
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("reader_id", sa.String(100), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("article_id", sa.String(200), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("dwell_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint(*key, name="pk_events_" + "_".join(key)),
    )
    columns = "event_id, reader_id, type, article_id, at, dwell_s"
    op.execute(f"INSERT INTO events_next ({columns}) SELECT {columns} FROM events")
    op.drop_table("events")
    op.rename_table("events_next", "events")
    if key[0] != "reader_id":  # a key that starts with the reader serves their lookups itself
        op.create_index("ix_events_reader_id", "events", ["reader_id"])
    op.create_index("ix_events_at", "events", ["at"])
