"""Tables of the job store (SQLAlchemy Core), the single source the migrations must match.

``tests/unit/test_job_store.py`` compares this metadata with a freshly migrated database, so a
column added here without a migration (or the reverse) fails the tests. Constraint names come
from ``NAMING`` so later migrations can address them on both databases (SQLite batch mode
needs names to rebuild a table).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

from serve_app.jobs.states import FileState, JobState

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

ID_LEN = 36
OWNER_LEN = 200
KEY_LEN = 255


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on both databases.

    PostgreSQL stores ``timestamptz``; SQLite has no time zone type, so the value is stored
    as naive UTC text (SQLAlchemy's fixed-width format, which sorts and compares correctly)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the job store only takes aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> TypeEngine[Any]:
    # JSONB on PostgreSQL: smaller, and indexable should the API ever filter on metadata.
    return JSON().with_variant(JSONB(), "postgresql")


def _one_of(column: str, values: type[JobState] | type[FileState]) -> CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_valid")


jobs = Table(
    "jobs",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("options", _json(), nullable=False),
    Column("user_metadata", _json(), nullable=True),
    Column("owner", String(OWNER_LEN), nullable=True),  # API-key label that owns the job
    Column("idempotency_key", String(KEY_LEN), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=True),  # first claim of any of its files
    Column("finished_at", UtcDateTime(), nullable=True),
    _one_of("state", JobState),
    Index("ix_jobs_created", "created_at", "id"),
    Index("ix_jobs_owner_created", "owner", "created_at", "id"),
)

# One row per live idempotency key. Kept out of ``jobs`` so that the key's 24 h validity is a
# row that can be replaced, while the primary key still makes concurrent creates collide.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(OWNER_LEN), nullable=False),  # owner, or '' for unowned jobs
    Column("key", String(KEY_LEN), nullable=False),
    Column("job_id", String(ID_LEN), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("scope", "key"),
    Index("ix_idempotency_keys_job", "job_id"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size_bytes", BigInteger(), nullable=False),
    Column("path", Text(), nullable=False),  # relative to the data directory
    Column("created_at", UtcDateTime(), nullable=False),
    # Set when the audio was deleted (no unfinished file needed it): migration 0002. A row
    # with an empty path never had stored audio (content of an input-folder file): 0003.
    Column("released_at", UtcDateTime(), nullable=True),
    Column("duration_s", Float(), nullable=True),  # from the header when stored: migration 0003
)

# Who may see and reference an upload (migration 0003): the content is stored once, each key
# reaches only what it uploaded itself. ``owner`` is the key's label, '' without API keys.
upload_owners = Table(
    "upload_owners",
    metadata,
    Column("sha256", String(64), ForeignKey("uploads.sha256", ondelete="CASCADE"), nullable=False),
    Column("owner", String(OWNER_LEN), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("sha256", "owner"),
    Index("ix_upload_owners_owner", "owner", "sha256"),
)

files = Table(
    "files",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("job_id", String(ID_LEN), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer(), nullable=False),  # order within the job
    Column("name", Text(), nullable=False),
    # RESTRICT: an upload row cannot vanish while a file needs it (see JobRecords.delete).
    Column("sha256", String(64), ForeignKey("uploads.sha256", ondelete="RESTRICT"), nullable=False),
    Column("size_bytes", BigInteger(), nullable=False),
    Column("duration_s", Float(), nullable=True),
    Column("state", String(16), nullable=False),
    Column("error", Text(), nullable=True),
    Column("attempts", Integer(), nullable=False),  # claims so far; the fencing token
    Column("lease_owner", String(KEY_LEN), nullable=True),
    Column("lease_expires_at", UtcDateTime(), nullable=True),
    Column("progress_s", Float(), nullable=False),  # audio seconds committed in windows
    Column("windows", Integer(), nullable=False),  # windows committed
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    # An input-folder file read in place (absolute path), its content checked against sha256
    # when read; NULL for stored uploads (migration 0003).
    Column("source_path", Text(), nullable=True),
    _one_of("state", FileState),
    UniqueConstraint("job_id", "position"),
    Index("ix_files_job_state", "job_id", "state"),
    Index("ix_files_state_lease", "state", "lease_expires_at"),
    Index("ix_files_sha256", "sha256"),
)

windows = Table(
    "windows",
    metadata,
    Column("file_id", String(ID_LEN), ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer(), nullable=False),  # 0, 1, ... in audio order
    Column("start_s", Float(), nullable=False),
    Column("end_s", Float(), nullable=False),
    Column("language", String(32), nullable=True),
    Column("segments", _json(), nullable=False),
    Column("attempt", Integer(), nullable=False),  # the claim that committed it
    Column("created_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("file_id", "seq"),
)

history = Table(
    "history",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("owner", String(OWNER_LEN), nullable=True),
    Column("source_name", Text(), nullable=True),
    Column("duration_s", Float(), nullable=True),
    Column("language", String(32), nullable=True),
    Column("model", String(KEY_LEN), nullable=True),
    Column("text", Text(), nullable=False),
    # casefold(text): the same case-insensitive substring match on both databases (SQLite's
    # lower() folds ASCII only; PostgreSQL's depends on the collation).
    Column("search_text", Text(), nullable=False),
    Column("segments", _json(), nullable=False),
    Index("ix_history_created", "created_at", "id"),
    Index("ix_history_owner_created", "owner", "created_at", "id"),
)
