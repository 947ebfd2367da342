"""The service's first schema: readers, events, summaries, briefings served, audit log, jobs and runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "readers",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.Column("session_since", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("reader_id", sa.String(100), nullable=False, index=True),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("article_id", sa.String(200), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False, index=True),
        sa.Column("dwell_s", sa.Float(), nullable=True),
    )
    op.create_table(
        "summaries",
        sa.Column("id", sa.String(240), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("article_id", sa.String(200), nullable=False, index=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("prompt", sa.String(100), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("adapter", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("basis", sa.JSON(), nullable=False),
        sa.Column("sentences", sa.JSON(), nullable=False),
        sa.Column("dropped", sa.JSON(), nullable=False),
        sa.Column("reviewed_by", sa.String(100), nullable=True),
        sa.Column("reviewed_at", UTCDateTime(), nullable=True),
        sa.Column("original_text", sa.Text(), nullable=True),
    )
    op.create_table(
        "briefings_served",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("reader_id", sa.String(100), nullable=False, index=True),
        sa.Column("served_at", UTCDateTime(), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=True),
        sa.Column("variant", sa.String(50), nullable=False),
        sa.Column("policy", sa.String(50), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False, index=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("target", sa.String(240), nullable=False, index=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("every_s", sa.Float(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
    )
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(50), sa.ForeignKey("jobs.name", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_job_runs_job_started", "job_runs", ["job", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_job_runs_job_started", table_name="job_runs")
    for table in ("job_runs", "jobs", "audit_log", "briefings_served", "summaries", "events", "readers"):
        op.drop_table(table)
