"""Schema migrations (Alembic), run programmatically at start-up: ``upgrade(url)``.

The scripts live in ``serve_app/jobs/migrations/`` so they ship inside the package. Several
replicas may start at once: on PostgreSQL the whole upgrade runs in one transaction under an
advisory lock, on SQLite under the write lock (``BEGIN IMMEDIATE``), so the second one waits and
then finds the schema current. The version lives in its own table, ``jobs_schema_version``, so
the store can share a database with other Alembic users.

A new migration: ``.venv/bin/python -c "from serve_app.jobs.migrate import revision;
revision('add x')"``, then edit the generated file under ``migrations/versions/`` and the
matching table in ``schema.py`` (the tests compare the two)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import URL

from serve_app.jobs.db import create_db_engine

SCRIPTS = Path(__file__).parent / "migrations"
VERSION_TABLE = "jobs_schema_version"
_PG_LOCK_KEY = 0x6A6F6273  # "jobs": the advisory lock serialising concurrent upgrades


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged scripts; ``env.py`` runs on ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations under {SCRIPTS}"
    return head


def upgrade(target: str | Path | URL | Engine, revision: str = "head") -> None:
    """Bring the database at ``target`` (URL, SQLite path or engine) to ``revision``.
    Idempotent; safe to call from several processes at once."""
    engine = target if isinstance(target, Engine) else create_db_engine(target)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            command.upgrade(alembic_config(conn), revision)
    finally:
        if engine is not target:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None``: never migrated)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def revision(message: str) -> None:
    """Write a new, empty migration script (a developer tool; not used at run time)."""
    command.revision(alembic_config(), message=message)
