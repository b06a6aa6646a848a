"""Alembic environment: runs on the connection ``serve_app.jobs.migrate`` hands over (inside
its transaction and lock), never on a URL of its own."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from serve_app.jobs.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through serve_app.jobs.migrate.upgrade(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=config.get_main_option("version_table") or "jobs_schema_version",
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
