"""Deleting the server's stored copies of job audio, and nothing else."""

from __future__ import annotations

from pathlib import Path


def remove_audio(data_dir: Path, paths: list[str]) -> None:
    """Delete stored copies, only ever under ``data_dir/uploads``: files of the input folder
    are the user's own and are never deleted, whatever a row names."""
    uploads = (data_dir / "uploads").resolve()
    for p in paths:
        path = (data_dir / p).resolve()
        if path.is_relative_to(uploads):
            path.unlink(missing_ok=True)
