"""What goes into files that users open: names taken from the server for files written on a
client's disk or into a zip, and CSV cells. Shared by the server's exports
(``serve_app.api.jobs.export``, ``serve_app.api.history``) and the CLI (``funasr-serve jobs export``),
which must not trust names it receives.

* A file name from a job (chosen by whoever uploaded it) becomes a safe base name: no path
  separators, no ``..``, no drive letters, no control or reserved characters, not hidden, not
  empty, not too long; names that collide get ``-2``, ``-3``, ... until every file an export
  writes has a name of its own.
* A CSV cell whose text starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return)
  is a formula to a spreadsheet (OWASP "CSV injection"): it is prefixed with ``'``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MAX_STEM = 120
_RESERVED = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def safe_stem(name: str, fallback: str = "file") -> str:
    """A base name, without its extension, for a file named ``name`` by someone else:
    ``"../../etc/passwd"`` → ``"etc_passwd"``, ``"C:\\\\x\\\\a.wav"`` → ``"x_a"``,
    ``"sub/a.wav"`` → ``"sub_a"``."""
    parts = [p for p in re.split(r"[\\/]+", name) if p not in ("", ".", "..")]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]  # a drive letter
    if parts:
        last = parts[-1]
        dot = last.rfind(".")
        if dot > 0:
            parts[-1] = last[:dot]  # the extension of the recording
    stem = "_".join(parts)
    stem = "".join(c for c in stem if unicodedata.category(c)[0] != "C")  # control, format, ...
    stem = _RESERVED.sub("_", stem).strip(" .")
    stem = stem[:MAX_STEM].strip(" .")
    return stem or fallback


class UniqueNames:
    """Hands out stems whose files (``stem.ext`` for each ``ext``) no earlier stem took."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._taken = {n.lower() for n in reserved}

    def claim(self, stem: str, exts: Iterable[str]) -> str:
        exts = list(exts)
        candidate, n = stem, 1
        while any(f"{candidate}.{e}".lower() in self._taken for e in exts):
            n += 1
            candidate = f"{stem}-{n}"
        self._taken.update(f"{candidate}.{e}".lower() for e in exts)
        return candidate


def csv_text(value: object) -> str:
    """A text cell for CSV: formulas neutralised (see the module docstring)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA) else text
