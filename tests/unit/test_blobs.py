"""The stored copies under ``uploads/``: one module writes, moves and deletes them, and it never
deletes anything outside ``uploads/``; one helper hashes files and streams."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

import serve_app
from serve_app.errors import PayloadTooLarge
from serve_app.hashing import Sha256, sha256_file
from serve_app.jobs import blobs

BLOBS = Path(blobs.__file__).resolve()
DELETERS = {"unlink", "rmdir", "rmtree", "remove", "removedirs"}
"""Calls that delete a file or folder (``Path.unlink``, ``os.remove``, ``shutil.rmtree``, ...)."""


def deletions(path: Path) -> list[str]:
    """``file:line call`` of every deleting call in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            owner = node.func.value
            # ``list.remove`` / ``set.remove`` are not deletions: only os.remove / os.removedirs.
            if name in ("remove", "removedirs") and not (isinstance(owner, ast.Name) and owner.id == "os"):
                continue
            if name in DELETERS:
                found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_only_the_blobs_module_deletes_files() -> None:
    root = Path(serve_app.__file__).resolve().parent
    found = [d for p in sorted(root.rglob("*.py")) if p.resolve() != BLOBS for d in deletions(p)]
    assert found == [], f"files deleted outside serve_app/jobs/blobs.py: {found}"
    assert deletions(BLOBS), "the scan finds the blobs module's own deletions"


def test_remove_deletes_stored_copies_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stored = blobs.blob_path(data, "ab" * 32)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"audio")
    outside = tmp_path / "input" / "mine.wav"  # the user's own file in the input folder
    outside.parent.mkdir()
    outside.write_bytes(b"audio")
    beside = data / "funasr-serve.db"
    beside.write_bytes(b"db")
    link = data / "uploads" / "ab" / "link"
    link.symlink_to(outside)

    blobs.remove(
        data,
        [str(outside), "../input/mine.wav", "funasr-serve.db", "uploads/ab/link", "uploads", "uploads/gone"],
    )
    assert outside.read_bytes() == b"audio" and beside.exists() and link.is_symlink()
    assert (data / "uploads").is_dir()
    blobs.remove(data, [str(stored.relative_to(data))])
    assert not stored.exists()


def test_blob_writer_moves_into_place_or_discards(tmp_path: Path) -> None:
    w = blobs.BlobWriter(tmp_path, max_bytes=10)
    w.write(b"hello")
    sha, rel = w.finish()
    assert sha == hashlib.sha256(b"hello").hexdigest() and w.size == 5
    assert rel.startswith(f"uploads/{sha[:2]}/{sha}.") and (tmp_path / rel).read_bytes() == b"hello"

    w = blobs.BlobWriter(tmp_path, max_bytes=4)
    with pytest.raises(PayloadTooLarge):
        w.write(b"hello")
    w.discard()
    assert list((tmp_path / blobs.INCOMING).iterdir()) == []


def test_one_hash_for_files_and_streams(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # more than one chunk
    (tmp_path / "f").write_bytes(data)
    h = Sha256()
    h.update(data[:1000])
    h.update(data[1000:])
    assert sha256_file(tmp_path / "f") == (hashlib.sha256(data).hexdigest(), len(data))
    assert (h.hexdigest(), h.size) == sha256_file(tmp_path / "f")
