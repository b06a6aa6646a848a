"""A real PostgreSQL server for tests: the Debian cluster (``apt-get install postgresql``; see
``make system-test-deps``), started if it is down, and throwaway databases on it.

Tests connect over the cluster's Unix socket with peer authentication as a role named after
the OS user running them, created on first use through the ``postgres`` account (``runuser``
as root, ``sudo -n`` otherwise). No password, no TCP, nothing read from the environment.
Anything missing raises ``PgUnavailable``: the caller fails the tests (CI installs the server;
a silently skipped database is a database never tested)."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

SOCKET_DIR = "/var/run/postgresql"


class PgUnavailable(RuntimeError):
    """No PostgreSQL server could be found, started or reached."""


@dataclass(frozen=True)
class Cluster:
    version: str
    name: str
    port: int
    online: bool


def find_cluster() -> Cluster:
    """The first cluster ``pg_lsclusters`` lists (Debian 12: 15/main)."""
    if shutil.which("pg_lsclusters") is None:
        raise PgUnavailable(
            "PostgreSQL is not installed: run `make system-test-deps` (apt-get install postgresql)"
        )
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4:
            return Cluster(
                version=cols[0], name=cols[1], port=int(cols[2]), online=cols[3].startswith("online")
            )
    raise PgUnavailable("PostgreSQL is installed but has no cluster (pg_createcluster 15 main)")


def _as_postgres(argv: list[str]) -> list[str]:
    """``argv`` run as the ``postgres`` OS user (who may administer the cluster)."""
    user = getpass.getuser()
    if user == "postgres":
        return argv
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return ["sudo", "-n", "-u", "postgres", *argv]


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PgUnavailable(f"{what}: {e}") from e
    if done.returncode != 0:
        raise PgUnavailable(f"{what} failed ({' '.join(argv)}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def ensure_running(cluster: Cluster, timeout_s: float = 30.0) -> None:
    """Start the cluster if it is down (``pg_ctlcluster``: ``pg_ctl`` refuses root) and wait
    until it accepts connections."""
    if not cluster.online:
        argv = ["pg_ctlcluster", cluster.version, cluster.name, "start"]
        _run(argv if os.geteuid() == 0 else _as_postgres(argv), "starting PostgreSQL")
    deadline = time.monotonic() + timeout_s
    while True:
        ready = subprocess.run(
            ["pg_isready", "-q", "-h", SOCKET_DIR, "-p", str(cluster.port)], capture_output=True
        ).returncode
        if ready == 0:
            return
        if time.monotonic() > deadline:
            raise PgUnavailable(
                f"PostgreSQL {cluster.version}/{cluster.name} did not get ready in {timeout_s}s"
            )
        time.sleep(0.2)


@dataclass(frozen=True)
class PgServer:
    """A running cluster and the role the tests connect as."""

    port: int
    role: str

    def url(self, database: str) -> URL:
        return URL.create(
            "postgresql+psycopg",
            username=self.role,
            database=database,
            query={"host": SOCKET_DIR, "port": str(self.port)},
        )

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=SOCKET_DIR, port=self.port, user=self.role, dbname="postgres", autocommit=True
        )

    def create_database(self, prefix: str = "funasr_test") -> str:
        """A new empty database owned by the test role; its name."""
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def start_test_server() -> PgServer:
    """Find and start the local cluster, and make sure the test role exists."""
    cluster = find_cluster()
    ensure_running(cluster)
    role = getpass.getuser()
    psql = [
        "psql",
        "-h",
        SOCKET_DIR,
        "-p",
        str(cluster.port),
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-tAc",
    ]
    exists = _run(
        _as_postgres([*psql, f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"]), "looking up the test role"
    )
    if exists.strip() != "1":
        # Peer authentication maps the OS user to this role; CREATEDB for throwaway databases.
        _run(_as_postgres([*psql, f'CREATE ROLE "{role}" LOGIN CREATEDB']), "creating the test role")
    server = PgServer(port=cluster.port, role=role)
    try:
        server._admin().close()
    except psycopg.Error as e:
        raise PgUnavailable(f"cannot connect to PostgreSQL as {role!r}: {e}") from e
    return server
