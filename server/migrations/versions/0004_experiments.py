"""Experiments (definition, status, layer range) and exposures (a briefing served under an arm).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("key", sa.String(60), primary_key=True),
        sa.Column("layer", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("range_start", sa.Float(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.Column("decision", sa.String(50), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_experiments_layer", "experiments", ["layer"])
    op.create_index("ix_experiments_status", "experiments", ["status"])
    # The key (experiment, reader, briefing) makes a cached briefing served again one exposure
    # (insert-or-ignore) and serves the per-reader GROUP BY of an experiment's metrics.
    op.create_table(
        "exposures",
        sa.Column(
            "experiment",
            sa.String(60),
            sa.ForeignKey("experiments.key", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("reader_id", sa.String(100), primary_key=True),
        sa.Column("briefing_key", sa.String(32), primary_key=True),
        sa.Column("arm", sa.String(50), nullable=False),
        sa.Column("served_at", UTCDateTime(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("fallback_items", sa.Integer(), nullable=False),
    )
    op.create_index("ix_exposures_reader_id", "exposures", ["reader_id"])  # erasing a reader


def downgrade() -> None:
    op.drop_index("ix_exposures_reader_id", table_name="exposures")
    op.drop_table("exposures")
    op.drop_index("ix_experiments_status", table_name="experiments")
    op.drop_index("ix_experiments_layer", table_name="experiments")
    op.drop_table("experiments")
