"""Engines for the job store: a SQLite file (the default) or PostgreSQL through psycopg 3.

SQLite is set up for several processes sharing one file: WAL (readers never block the writer),
a busy timeout (writers queue instead of failing), foreign keys on (off by default in SQLite),
and every write transaction opened with ``BEGIN IMMEDIATE``. The last matters: a deferred
transaction that reads, then writes, fails at once with "database is locked" when another
writer committed in between, whatever the busy timeout; an immediate one takes the write lock
first and waits its turn.

``Database`` is what every store of ``serve_app.jobs`` is built on: one engine, one clock and
the two kinds of transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

Clock = Callable[[], datetime]

READ_ONLY = "jobs_read_only"
"""Execution option: on SQLite, begin with a plain (deferred) ``BEGIN``, which never waits for
the write lock. Set by the store on connections that only read."""


def database_url(target: str | Path | URL) -> URL:
    """A filesystem path means SQLite; ``postgresql://`` / ``postgres://`` URLs get the psycopg 3
    driver; any other SQLAlchemy URL is taken as it is."""
    if isinstance(target, URL):
        url = target
    elif isinstance(target, Path) or "://" not in target:
        path = Path(target).expanduser().resolve()
        return URL.create("sqlite+pysqlite", database=str(path))
    else:
        url = make_url(target)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def create_db_engine(target: str | Path | URL, *, busy_timeout_s: float = 30.0, echo: bool = False) -> Engine:
    """An engine configured for the job store (see the module docstring)."""
    url = database_url(target)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, busy_timeout_s, echo)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"the job store runs on SQLite or PostgreSQL, not {url.get_backend_name()!r}")
    # pre_ping: a connection the server dropped (restart, idle timeout) is replaced, not failed.
    return create_engine(url, pool_pre_ping=True, echo=echo)


def _sqlite_engine(url: URL, busy_timeout_s: float, echo: bool) -> Engine:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        raise ValueError("the job store needs a SQLite file (several connections share it), not memory")
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, echo=echo, connect_args={"timeout": busy_timeout_s, "check_same_thread": False}
    )
    busy_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Driver autocommit: pysqlite's own implicit BEGIN is replaced by _on_begin below.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        _wal(cur, busy_timeout_s)
        cur.execute("PRAGMA foreign_keys=ON")
        # FULL: a commit survives power loss too, not just a crash. Commits are few (one per
        # window or state change), so the fsync each costs does not matter.
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _wal(cur: Any, timeout_s: float) -> None:
    """Switch the file to WAL once. The switch needs the file to itself, and SQLite answers
    "database is locked" at once, without waiting out the busy timeout, while another process
    migrates it (several replicas start together): so retry, and skip it once it is WAL."""
    import sqlite3
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A transaction that may write (``BEGIN IMMEDIATE`` on SQLite)."""
    with engine.begin() as conn:
        yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A transaction that only reads (a plain ``BEGIN`` on SQLite: never waits for writers)."""
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        yield conn


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """Row ids: random, so they reveal nothing about how many jobs others submitted."""
    return uuid.uuid4().hex


class Database:
    """The engine, clock and transactions the stores share (``JobStore`` builds one).

    ``target``: a SQLite file path, a ``postgresql://`` URL (psycopg 3) or an engine (which
    ``close`` leaves open: its maker disposes of it). Thread-safe."""

    def __init__(self, target: str | Path | URL | Engine, *, clock: Clock = utc_now) -> None:
        self._owns_engine = not isinstance(target, Engine)
        self.engine = target if isinstance(target, Engine) else create_db_engine(target)
        self._clock = clock

    def now(self) -> datetime:
        """The clock's time, in UTC. Leases compare against the clock of the process that
        writes them: keep hosts' clocks in sync well within a lease."""
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return aware UTC datetimes")
        return now.astimezone(UTC)

    def write(self) -> AbstractContextManager[Connection]:
        """A transaction that may write (see ``write_tx``)."""
        return write_tx(self.engine)

    def read(self) -> AbstractContextManager[Connection]:
        """A transaction that only reads (see ``read_tx``)."""
        return read_tx(self.engine)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()
