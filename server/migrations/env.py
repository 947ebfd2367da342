"""Alembic environment: runs on the connection `server.db.migrate` passes in, or on DATABASE_URL."""

from __future__ import annotations

from alembic import context

from server.db import Base, connect
from server.settings import Settings

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # the `alembic` command line: use the service's own settings
    with connect(Settings.from_env().database_url).begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
