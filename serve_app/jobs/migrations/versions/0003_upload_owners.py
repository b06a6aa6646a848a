"""Uploads belong to the keys that made them; input-folder files are read in place.

* ``upload_owners``: one row per (content, owner) — the same content is stored once, but a key
  sees and references only what it uploaded itself. Existing uploads are given to the owners of
  the jobs that use them ('' for jobs made without API keys).
* ``files.source_path``: an input-folder file is read where it lies (and its hash checked when
  read); before this revision such files were recorded as uploads whose ``path`` was absolute.
  Those rows are turned into content-only rows (no stored audio: released, empty path).
* ``uploads.duration_s``: the recording's length from its header, probed when it was stored
  (queued-audio quotas and job totals know it before a worker starts).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "upload_owners",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "owner", name="pk_upload_owners"),
        sa.ForeignKeyConstraint(
            ["sha256"], ["uploads.sha256"], name="fk_upload_owners_sha256_uploads", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_upload_owners_owner", "upload_owners", ["owner", "sha256"])
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("source_path", sa.Text(), nullable=True))
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("duration_s", sa.Float(), nullable=True))

    # Input-folder files recorded as uploads with an absolute path: read in place from now on.
    op.execute(
        "UPDATE files SET source_path = (SELECT u.path FROM uploads u WHERE u.sha256 = files.sha256) "
        "WHERE sha256 IN (SELECT sha256 FROM uploads WHERE path LIKE '/%')"
    )
    op.execute(
        "UPDATE uploads SET path = '', released_at = COALESCE(released_at, created_at) WHERE path LIKE '/%'"
    )
    # Stored uploads belong to the owners of the jobs that use them.
    op.execute(
        "INSERT INTO upload_owners (sha256, owner, created_at) "
        "SELECT DISTINCT f.sha256, COALESCE(j.owner, ''), u.created_at "
        "FROM files f JOIN jobs j ON j.id = f.job_id JOIN uploads u ON u.sha256 = f.sha256 "
        "WHERE u.path <> ''"
    )


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("duration_s")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("source_path")
    op.drop_index("ix_upload_owners_owner", table_name="upload_owners")
    op.drop_table("upload_owners")
