"""Initial schema: jobs, idempotency keys, uploads, files, windows, history.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Frozen: later changes go in new revisions, never here. Types are spelled out rather than
imported from ``schema.py``, which moves on.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

JOB_STATES = "'queued', 'running', 'completed', 'failed', 'cancelled'"
FILE_STATES = "'pending', 'running', 'done', 'failed', 'cancelled'"


def _time(nullable: bool = False) -> dict[str, Any]:
    return {"type_": sa.DateTime(timezone=True), "nullable": nullable}


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("options", _json(), nullable=False),
        sa.Column("user_metadata", _json(), nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("created_at", **_time()),
        sa.Column("updated_at", **_time()),
        sa.Column("started_at", **_time(nullable=True)),
        sa.Column("finished_at", **_time(nullable=True)),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.CheckConstraint(f"state IN ({JOB_STATES})", name="ck_jobs_state_valid"),
    )
    op.create_index("ix_jobs_created", "jobs", ["created_at", "id"])
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at", "id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("expires_at", **_time()),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_idempotency_keys_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_idempotency_keys_job", "idempotency_keys", ["job_id"])

    op.create_table(
        "uploads",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", **_time()),
        sa.PrimaryKeyConstraint("sha256", name="pk_uploads"),
    )

    op.create_table(
        "files",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", **_time(nullable=True)),
        sa.Column("progress_s", sa.Float(), nullable=False),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.Column("created_at", **_time()),
        sa.Column("updated_at", **_time()),
        sa.Column("finished_at", **_time(nullable=True)),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_files_job_id_jobs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["sha256"], ["uploads.sha256"], name="fk_files_sha256_uploads", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("job_id", "position", name="uq_files_job_id_position"),
        sa.CheckConstraint(f"state IN ({FILE_STATES})", name="ck_files_state_valid"),
    )
    op.create_index("ix_files_job_state", "files", ["job_id", "state"])
    op.create_index("ix_files_state_lease", "files", ["state", "lease_expires_at"])
    op.create_index("ix_files_sha256", "files", ["sha256"])

    op.create_table(
        "windows",
        sa.Column("file_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=False),
        sa.Column("language", sa.String(32), nullable=True),
        sa.Column("segments", _json(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", **_time()),
        sa.PrimaryKeyConstraint("file_id", "seq", name="pk_windows"),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name="fk_windows_file_id_files", ondelete="CASCADE"
        ),
    )

    op.create_table(
        "history",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", **_time()),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("source_name", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("language", sa.String(32), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("segments", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_history"),
    )
    op.create_index("ix_history_created", "history", ["created_at", "id"])
    op.create_index("ix_history_owner_created", "history", ["owner", "created_at", "id"])


def downgrade() -> None:
    for table in ("history", "windows", "files", "uploads", "idempotency_keys", "jobs"):
        op.drop_table(table)
