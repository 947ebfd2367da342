"""Model versions: a counter per thing serving processes load (the candidate matrix, the ranker,
the adapter), bumped when a job or a write changes it, so every API worker reloads (server.versions).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from server.db import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NAMES = ("matrix", "ranker", "adapter")  # server.versions.NAMES when this was written


def upgrade() -> None:
    table = op.create_table(
        "model_versions",
        sa.Column("name", sa.String(20), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
    )
    # Every row exists from the start: a bump is then one UPDATE, atomic on both engines.
    at = datetime.now(UTC)
    op.bulk_insert(table, [{"name": name, "version": 0, "changed_at": at} for name in NAMES])


def downgrade() -> None:
    op.drop_table("model_versions")
