"""API keys: generated, hashed, parsed and matched here; no Ray, no web framework, so the CLI
(``funasr-serve keys create``) uses it as the server does. Enforcement is in
``serve_app.api.auth``.

A key is ``fsk_`` and 43 URL-safe characters (256 random bits). The server stores only its
SHA-256 (hex) with a label and an admin flag, one key per entry::

    <sha256 hex>:<label>[:admin]

in ``FUNASR_SERVE_API_KEYS`` (entries separated by commas) and/or in the file named by
``FUNASR_SERVE_API_KEYS_FILE`` (one entry per line; blank lines and ``#`` comments ignored).
The label owns what the key creates (jobs, history); several keys may share a label (rotate a
key without losing its jobs). An admin key sees every label's jobs and history.

With so many random bits a stored hash needs no salt or slow hash: it cannot be reversed by
guessing, unlike a password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

KEY_PREFIX = "fsk_"
"""Marks a funasr-serve key (secret scanners, a glance at a log that should not have it)."""

LABEL_LEN = 200
"""Longest label: the job store's owner column (``serve_app.jobs.schema.OWNER_LEN``)."""

_HASH = re.compile(r"[0-9a-f]{64}")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")


class KeySource(Protocol):
    """Where keys are configured: ``serve_app.settings.Settings``'s fields."""

    api_keys: str
    api_keys_file: Path | None
    funasr_socket_open: bool


def generate_key() -> str:
    """A new random key (shown once, never stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of ``key``: what the server stores and compares."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_label(label: str) -> str:
    """``label`` if it can name a key's owner (letters, digits and ``._@+-``), else ValueError."""
    if not _LABEL.fullmatch(label) or len(label) > LABEL_LEN:
        raise ValueError(
            f"a key label is 1 to {LABEL_LEN} letters, digits and ._@+- (starting with a letter or digit): "
            f"got {label!r}"
        )
    return label


@dataclass(frozen=True)
class ApiKey:
    """One configured key: its hash, whose it is, and whether it sees everyone's jobs/history."""

    sha256: str
    label: str
    admin: bool = False

    def entry(self) -> str:
        """The configuration line for this key."""
        return f"{self.sha256}:{self.label}" + (":admin" if self.admin else "")

    @classmethod
    def parse(cls, entry: str) -> ApiKey:
        parts = entry.strip().split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "admin"):
            raise ValueError("an API key entry is <sha256 hex>:<label>[:admin]")
        digest = parts[0].lower()
        if not _HASH.fullmatch(digest):
            raise ValueError("an API key entry starts with the key's SHA-256 as 64 hex digits")
        return cls(sha256=digest, label=check_label(parts[1]), admin=len(parts) == 3)


def new_key(label: str, admin: bool = False) -> tuple[str, ApiKey]:
    """A new key and its configuration entry."""
    key = generate_key()
    return key, ApiKey(sha256=hash_key(key), label=check_label(label), admin=admin)


@dataclass(frozen=True)
class KeyRing:
    """The configured keys (none: the server is open, as without this feature) and which
    sockets stay open when there are some. Picklable: built once in ``build_app`` and handed
    to the ingress replicas."""

    keys: tuple[ApiKey, ...] = ()
    funasr_socket_open: bool = False
    """Leave FunASR's WebSocket protocol (``/`` and ``/v1/realtime/funasr``) open while keys
    are required elsewhere: FunASR's own clients cannot send a key."""

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for k in self.keys:
            if k.sha256 in seen:
                raise ValueError(f"the same key is configured twice (labels {seen[k.sha256]!r}, {k.label!r})")
            seen[k.sha256] = k.label

    @property
    def enabled(self) -> bool:
        """Keys are required (some are configured)."""
        return bool(self.keys)

    def match(self, presented: str | None) -> ApiKey | None:
        """The key whose hash is ``presented``'s, compared in constant time against every
        stored hash (no early exit, so the time says nothing about which one matched)."""
        if not presented:
            return None
        digest = hash_key(presented).encode()
        found = None
        for k in self.keys:
            if hmac.compare_digest(digest, k.sha256.encode()):
                found = k
        return found

    @classmethod
    def parse(
        cls, text: str, *, source: str = "FUNASR_SERVE_API_KEYS", funasr_socket_open: bool = False
    ) -> KeyRing:
        """Entries separated by commas or new lines; blanks and ``#`` comments skipped. A bad
        entry is an error naming ``source`` and its line (never a silent open server)."""
        return cls(_parse_entries(text, source), funasr_socket_open)

    @classmethod
    def from_settings(cls, s: KeySource) -> KeyRing:
        keys = _parse_entries(s.api_keys, "FUNASR_SERVE_API_KEYS")
        if s.api_keys_file is not None:
            path = s.api_keys_file
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as e:
                raise ValueError(f"FUNASR_SERVE_API_KEYS_FILE: cannot read {path}: {e.strerror}") from None
            keys += _parse_entries(text, str(path))
            if not keys:
                # A file that is there but empty is more likely a mistake than a wish to be open.
                raise ValueError(f"FUNASR_SERVE_API_KEYS_FILE {path} holds no keys")
        return cls(keys, s.funasr_socket_open)


def _parse_entries(text: str, source: str) -> tuple[ApiKey, ...]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        for entry in line.split("#", 1)[0].split(","):
            if entry.strip():
                try:
                    out.append(ApiKey.parse(entry))
                except ValueError as e:
                    raise ValueError(f"{source}, line {n}: {e}") from None
    return tuple(out)
