"""The adapter registry: LoRA adapters, their provenance, gate report and state.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PROMOTED = sa.text("state = 'promoted'")


def upgrade() -> None:
    op.create_table(
        "adapters",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("base_model", sa.String(300), nullable=False),
        sa.Column("base_hash", sa.String(64), nullable=False),
        sa.Column("snapshot_id", sa.String(40), nullable=False),
        sa.Column("hyper", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("promoted_at", UTCDateTime(), nullable=True),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("previous", sa.String(40), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
    )
    op.create_index("ix_adapters_state", "adapters", ["state"])
    op.create_index("ix_adapters_generation", "adapters", ["generation"])  # version(): max(generation)
    # At most one promoted adapter, enforced by the database: racing promotes cannot leave two.
    op.create_index(
        "ux_adapters_one_promoted",
        "adapters",
        ["state"],
        unique=True,
        sqlite_where=PROMOTED,
        postgresql_where=PROMOTED,
    )


def downgrade() -> None:
    op.drop_index("ux_adapters_one_promoted", table_name="adapters")
    op.drop_index("ix_adapters_generation", table_name="adapters")
    op.drop_index("ix_adapters_state", table_name="adapters")
    op.drop_table("adapters")
