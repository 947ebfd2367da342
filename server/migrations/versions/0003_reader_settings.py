"""Readers have a name, a language and a time zone of their own (None: the publication's).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable with no default: a reader who never chose follows the publication's setting, also
    # after the publication changes it.
    with op.batch_alter_table("readers") as batch:
        batch.add_column(sa.Column("name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("language", sa.String(10), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("readers") as batch:
        batch.drop_column("timezone")
        batch.drop_column("language")
        batch.drop_column("name")
