"""The job store on a SQLite file and on a real PostgreSQL server: every test runs on both.

PostgreSQL comes from ``tests/pg.py`` (the local Debian cluster, started if needed). If it
cannot be started the PostgreSQL half FAILS rather than skips: CI installs the server
(``make system-test-deps``). One database per session, emptied before each test; the
migration tests make their own empty databases."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import URL

from serve_app.contracts import Transcript, TranscriptSegment, Word
from serve_app.jobs import (
    FileState,
    HistoryNotFound,
    InvalidCursor,
    JobNotFound,
    JobOptions,
    JobState,
    JobStore,
    NewFile,
    UploadMissing,
    Window,
    WindowOutOfOrder,
    WriteResult,
    upgrade,
)
from serve_app.jobs.db import create_db_engine, database_url, utc_now
from serve_app.jobs.migrate import VERSION_TABLE, current_revision, head_revision
from serve_app.jobs.models import SegmentJson
from serve_app.jobs.schema import metadata
from tests.pg import PgServer, PgUnavailable, start_test_server

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
OPTS = JobOptions(model="whisper-1", language="en", response_format="verbose_json")
TABLES = ("history", "windows", "files", "idempotency_keys", "upload_owners", "uploads", "jobs")


class FakeClock:
    """A settable UTC clock: leases and retention expire without sleeping."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


class StoreFactory(Protocol):
    def __call__(self, *, clock: Callable[[], datetime] | None = None, max_attempts: int = 3) -> JobStore: ...


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    try:
        return start_test_server()
    except PgUnavailable as e:
        pytest.fail(f"PostgreSQL is required for these tests: {e}")


@pytest.fixture(scope="session")
def pg_session_url(pg_server: PgServer) -> Iterator[URL]:
    """One migrated database for the session."""
    name = pg_server.create_database()
    url = pg_server.url(name)
    upgrade(url)
    yield url
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> URL | Path:
    """A migrated, empty database of the test's backend."""
    if backend == "sqlite":
        path = tmp_path / "jobs.sqlite"
        upgrade(path)
        return path
    url: URL = request.getfixturevalue("pg_session_url")
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[URL | Path]:
    """A database with nothing in it, not even the schema."""
    if backend == "sqlite":
        yield tmp_path / "empty.sqlite"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = server.create_database("funasr_empty")
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture
def make_store(db_url: URL | Path) -> Iterator[StoreFactory]:
    """Factory: a store on the test's database (several may share it, like processes do)."""
    stores: list[JobStore] = []

    def make(*, clock: Callable[[], datetime] | None = None, max_attempts: int = 3) -> JobStore:
        store = JobStore(db_url, clock=clock or FakeClock(), max_attempts=max_attempts)
        stores.append(store)
        return store

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(make_store: StoreFactory, clock: FakeClock) -> JobStore:
    return make_store(clock=clock)


# ---------------------------------------------------------------------- helpers


def sha(n: int) -> str:
    return f"{n:064x}"


def make_job(
    store: JobStore, n_files: int = 2, *, first_sha: int = 1, durations: list[float] | None = None, **kw: Any
) -> str:
    new_files = []
    for i in range(n_files):
        store.uploads.add(sha(first_sha + i), 1000 + i, f"blobs/{sha(first_sha + i)}.{i}")
        duration = durations[i] if durations else None
        new_files.append(NewFile(name=f"f{i}.wav", sha256=sha(first_sha + i), duration_s=duration))
    return store.jobs.create(new_files, OPTS, **kw).job.id


def window(start: float, end: float, label: str = "w") -> Window:
    seg: SegmentJson = {
        "start_s": start,
        "end_s": end,
        "text": f"{label}{start:g}",
        "words": [{"start_s": start, "end_s": end, "word": f"{label}{start:g}"}],
    }
    return Window(start_s=start, end_s=end, segments=[seg], language="en")


# ---------------------------------------------------------------------- migrations and engines


def test_migrations_run_on_an_empty_db_are_idempotent_and_match_schema(empty_db_url: URL | Path) -> None:
    JobStore.open(empty_db_url).close()  # start-up: migrates
    upgrade(empty_db_url)  # later start-ups find the schema current
    upgrade(empty_db_url)
    engine = create_db_engine(empty_db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert set(TABLES) | {VERSION_TABLE} <= tables, tables
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            diff = compare_metadata(ctx, metadata)
        assert diff == [], f"schema.py and the migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_concurrent_upgrades_at_start_up(empty_db_url: URL | Path) -> None:
    # Several replicas starting at once: one migrates, the others wait and find it done.
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: upgrade(empty_db_url), range(3)))
    engine = create_db_engine(empty_db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_database_urls() -> None:
    assert database_url("/x/jobs.sqlite").render_as_string() == "sqlite+pysqlite:////x/jobs.sqlite"
    assert database_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="SQLite file"):
        create_db_engine("sqlite:///:memory:")
    with pytest.raises(ValueError, match="SQLite or PostgreSQL"):
        create_db_engine("mysql://u@h/db")


def test_engine_settings(store: JobStore, backend: str) -> None:
    with store.engine.connect() as conn:
        if backend == "sqlite":
            got = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "foreign_keys")}
            assert got == {"journal_mode": "wal", "foreign_keys": 1}, got
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        else:
            assert store.engine.dialect.driver == "psycopg"
            assert int(conn.exec_driver_sql("SHOW server_version_num").scalar() or 0) >= 150000


# ---------------------------------------------------------------------- jobs


def test_create_and_get_job_with_counts(store: JobStore, clock: FakeClock) -> None:
    job_id = make_job(store, 3, durations=[60.0, 30.0, 10.0], metadata={"batch": "a"}, owner="team-a")
    job = store.jobs.get(job_id)
    assert job.state is JobState.QUEUED and job.owner == "team-a" and job.metadata == {"batch": "a"}
    assert job.options == OPTS
    assert job.counts[FileState.PENDING] == 3 and job.files_total == 3, job.counts
    assert (job.audio_total_s, job.audio_done_s, job.durations_known) == (100.0, 0.0, True)
    assert job.created_at == T0 and job.started_at is None and job.eta_s(T0) is None

    claim = store.queue.claim("w1", 60)
    assert claim is not None and claim.file.position == 0
    clock.advance(20)
    assert store.queue.commit_window(claim.file.id, claim.attempt, window(0, 40))
    job = store.jobs.get(job_id)
    assert job.state is JobState.RUNNING and job.counts[FileState.RUNNING] == 1, job
    assert job.audio_done_s == 40.0 and job.started_at == T0
    assert job.eta_s(clock()) == pytest.approx(60.0 * 20 / 40)  # 60 s of audio left at 2 s audio/s
    with pytest.raises(JobNotFound):
        store.jobs.get(job_id, owner="team-b")
    with pytest.raises(JobNotFound):
        store.jobs.get("nope")


def test_create_job_needs_stored_uploads_and_files(store: JobStore) -> None:
    with pytest.raises(UploadMissing):
        store.jobs.create([NewFile("a.wav", sha(99))], OPTS)
    with pytest.raises(ValueError):
        store.jobs.create([], OPTS)


def test_job_state_derives_from_files(store: JobStore) -> None:
    job_id = make_job(store, 2)
    a, b = store.queue.claim("w", 60), store.queue.claim("w", 60)
    assert a and b
    assert store.queue.fail(a.file.id, a.attempt, "unsupported audio")
    assert store.jobs.get(job_id).state is JobState.RUNNING
    assert store.queue.complete(b.file.id, b.attempt)
    job = store.jobs.get(job_id)
    # Completed when every file ended and one is done; the failure is in the counts.
    assert job.state is JobState.COMPLETED and job.finished_at is not None
    assert (job.counts[FileState.DONE], job.counts[FileState.FAILED]) == (1, 1)
    assert store.jobs.list_files(job_id, state=FileState.FAILED).items[0].error == "unsupported audio"

    only_failures = make_job(store, 1, first_sha=10)
    c = store.queue.claim("w", 60)
    assert c and c.file.job_id == only_failures
    assert store.queue.fail(c.file.id, c.attempt, "broken")
    assert store.jobs.get(only_failures).state is JobState.FAILED


# ---------------------------------------------------------------------- queue


def test_claim_prefers_the_job_with_fewest_files_in_flight_then_the_oldest(
    store: JobStore, clock: FakeClock
) -> None:
    old = make_job(store, 3, first_sha=1)
    clock.advance(1)
    new = make_job(store, 2, first_sha=10)
    got = []
    for _ in range(5):
        c = store.queue.claim("w", 60)
        assert c is not None
        got.append((c.file.job_id, c.file.position))
    # Alternating between the jobs, the older one first; files in their order within a job.
    assert got == [(old, 0), (new, 0), (old, 1), (new, 1), (old, 2)], got
    assert store.queue.claim("w", 60) is None


def test_claim_returns_options_path_and_fencing_token(store: JobStore) -> None:
    make_job(store, 1)
    claim = store.queue.claim("worker-1", 30)
    assert claim is not None
    assert claim.options == OPTS and claim.upload_path == f"blobs/{sha(1)}.0"
    assert (claim.attempt, claim.progress_s, claim.file.lease_owner) == (1, 0.0, "worker-1")
    assert claim.lease_expires_at == T0 + timedelta(seconds=30) == claim.file.lease_expires_at
    assert claim.file.state is FileState.RUNNING


def test_lease_renew_expiry_and_reclaim_by_another_worker(store: JobStore, clock: FakeClock) -> None:
    make_job(store, 1)
    a = store.queue.claim("A", 30)
    assert a is not None
    clock.advance(20)
    assert store.queue.renew(a.file.id, "A", a.attempt, 30) is WriteResult.OK  # now until T0+50
    assert store.queue.renew(a.file.id, "B", a.attempt, 30) is WriteResult.STALE  # not B's claim
    clock.advance(25)
    assert store.queue.claim("B", 30) is None, "a renewed lease must hold"
    assert store.queue.commit_window(a.file.id, a.attempt, window(0, 600))
    clock.advance(10)  # T0+55: A stopped renewing (died)
    b = store.queue.claim("B", 30)
    assert b is not None and b.file.id == a.file.id
    assert (b.attempt, b.file.lease_owner, b.progress_s, b.file.windows) == (2, "B", 600.0, 1)
    # A comes back: every write of its claim is refused.
    assert store.queue.renew(a.file.id, "A", a.attempt, 30) is WriteResult.STALE
    assert store.queue.commit_window(a.file.id, a.attempt, window(600, 1200)) is WriteResult.STALE
    assert store.queue.complete(a.file.id, a.attempt) is WriteResult.STALE
    assert store.queue.fail(a.file.id, a.attempt, "late") is WriteResult.STALE
    assert store.queue.set_duration(a.file.id, a.attempt, 1.0) is WriteResult.STALE
    assert store.queue.commit_window(b.file.id, b.attempt, window(600, 900))
    assert store.queue.complete(b.file.id, b.attempt) is WriteResult.OK
    f = store.jobs.get_file(b.file.id)
    assert (f.state, f.attempts, f.progress_s, f.duration_s, f.lease_owner) == (
        FileState.DONE,
        2,
        900.0,
        900.0,
        None,
    )


def test_an_expired_lease_nobody_took_over_is_still_honoured(store: JobStore, clock: FakeClock) -> None:
    make_job(store, 1)
    a = store.queue.claim("A", 10)
    assert a is not None
    clock.advance(60)
    # The attempt number fences, not the clock: no one else holds the file.
    assert store.queue.renew(a.file.id, "A", a.attempt, 10)
    assert store.queue.commit_window(a.file.id, a.attempt, window(0, 5))
    assert store.queue.complete(a.file.id, a.attempt)


def test_fencing_completion_is_exactly_once(store: JobStore, clock: FakeClock) -> None:
    make_job(store, 1)
    a = store.queue.claim("A", 10)
    assert a is not None
    assert store.queue.set_duration(a.file.id, a.attempt, 42.0)
    clock.advance(11)
    b = store.queue.claim("B", 10)
    assert b is not None and b.attempt == a.attempt + 1
    assert store.queue.complete(b.file.id, b.attempt) is WriteResult.OK
    assert store.queue.complete(b.file.id, b.attempt) is WriteResult.OK  # a retried call: no new transition
    assert store.queue.complete(a.file.id, a.attempt) is WriteResult.STALE
    assert store.queue.fail(b.file.id, b.attempt, "too late") is WriteResult.STALE
    f = store.jobs.get_file(a.file.id)
    assert f.state is FileState.DONE and f.error is None and f.duration_s == 42.0
    assert store.queue.claim("C", 10) is None


def test_a_file_that_keeps_losing_its_worker_fails_after_max_attempts(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    store = make_store(clock=clock, max_attempts=2)
    job_id = make_job(store, 1)
    for worker in ("A", "B"):
        assert store.queue.claim(worker, 10) is not None
        clock.advance(11)
    assert store.queue.claim("C", 10) is None
    f = store.jobs.list_files(job_id).items[0]
    assert f.state is FileState.FAILED and f.attempts == 2 and "lease" in (f.error or ""), f
    assert store.jobs.get(job_id).state is JobState.FAILED


def test_fail_with_retry_hands_the_file_back_until_attempts_run_out(
    make_store: StoreFactory, clock: FakeClock
) -> None:
    store = make_store(clock=clock, max_attempts=2)
    job_id = make_job(store, 1)
    a = store.queue.claim("A", 10)
    assert a is not None
    assert store.queue.commit_window(a.file.id, a.attempt, window(0, 10))
    assert store.queue.fail(a.file.id, a.attempt, "replica restarting", retry=True)
    f = store.jobs.get_file(a.file.id)
    assert (f.state, f.error, f.lease_owner, f.progress_s) == (
        FileState.PENDING,
        "replica restarting",
        None,
        10.0,
    )
    assert store.jobs.get(job_id).state is JobState.RUNNING  # started, not queued again
    b = store.queue.claim("B", 10)
    assert b is not None and b.attempt == 2 and b.progress_s == 10.0
    assert store.queue.fail(b.file.id, b.attempt, "still failing", retry=True)  # no attempts left: final
    f = store.jobs.get_file(a.file.id)
    assert f.state is FileState.FAILED and f.error == "still failing"
    assert store.queue.fail(b.file.id, b.attempt, "still failing") is WriteResult.OK  # replay


def test_cancel_mid_job_keeps_results_and_stops_claims(store: JobStore) -> None:
    job_id = make_job(store, 3)
    done, running = store.queue.claim("A", 60), store.queue.claim("B", 60)
    assert done and running
    assert store.queue.commit_window(done.file.id, done.attempt, window(0, 30, "done"))
    assert store.queue.complete(done.file.id, done.attempt)
    assert store.queue.commit_window(running.file.id, running.attempt, window(0, 600, "part"))

    job = store.jobs.cancel(job_id)
    assert job.state is JobState.CANCELLED and job.finished_at is not None
    assert job.counts[FileState.DONE] == 1 and job.counts[FileState.CANCELLED] == 2, job.counts
    assert store.queue.claim("C", 60) is None, "a cancelled job's files are never claimed"
    # The worker holding a file learns it on its next write.
    assert store.queue.renew(running.file.id, "B", running.attempt, 60) is WriteResult.CANCELLED
    assert (
        store.queue.commit_window(running.file.id, running.attempt, window(600, 900)) is WriteResult.CANCELLED
    )
    assert store.queue.complete(running.file.id, running.attempt) is WriteResult.CANCELLED
    # Results so far are kept.
    assert store.jobs.get_transcript(done.file.id).text == "done0"
    partial = store.jobs.get_transcript(running.file.id)
    assert (partial.text, partial.covered_s, partial.complete) == ("part0", 600.0, False)
    assert store.jobs.cancel(job_id).state is JobState.CANCELLED  # idempotent
    assert store.jobs.get(job_id).counts[FileState.DONE] == 1


def test_cancel_of_an_ended_job_changes_nothing(store: JobStore) -> None:
    job_id = make_job(store, 1)
    c = store.queue.claim("A", 60)
    assert c and store.queue.complete(c.file.id, c.attempt)
    assert store.jobs.cancel(job_id).state is JobState.COMPLETED


def test_window_from_a_pipeline_transcript() -> None:
    t = Transcript(
        language="zh",
        duration_s=600.0,
        segments=[TranscriptSegment(1.0, 2.0, "你好", [Word(1.0, 1.5, "你"), Word(1.5, 2.0, "好")])],
    )
    w = Window.from_transcript(t, start_s=0.0, end_s=598.5)
    assert (w.start_s, w.end_s, w.language) == (0.0, 598.5, "zh")
    assert w.segments == [
        {
            "start_s": 1.0,
            "end_s": 2.0,
            "text": "你好",
            "words": [
                {"start_s": 1.0, "end_s": 1.5, "word": "你"},
                {"start_s": 1.5, "end_s": 2.0, "word": "好"},
            ],
        }
    ]


def test_windows_resume_after_a_crash(make_store: StoreFactory, clock: FakeClock) -> None:
    first = make_store(clock=clock)
    make_job(first, 1, durations=[1500.0])
    a = first.queue.claim("A", 60)
    assert a is not None
    assert first.queue.commit_window(a.file.id, a.attempt, window(0, 600))
    assert first.queue.commit_window(a.file.id, a.attempt, window(600, 1195.5))
    # A retried commit of the last window (its reply was lost) is not stored twice...
    assert first.queue.commit_window(a.file.id, a.attempt, window(600, 1195.5)) is WriteResult.OK
    # ...but a gap or an overlap is a worker bug.
    with pytest.raises(WindowOutOfOrder):
        first.queue.commit_window(a.file.id, a.attempt, window(1300, 1500))
    with pytest.raises(WindowOutOfOrder):
        first.queue.commit_window(a.file.id, a.attempt, window(0, 600))
    first.close()  # the process dies without completing

    clock.advance(61)
    second = make_store(clock=clock)  # a new process on the same database
    b = second.queue.claim("B", 60)
    assert b is not None and b.file.id == a.file.id
    assert (b.progress_s, b.file.windows, b.attempt) == (1195.5, 2, 2)
    assert second.queue.commit_window(b.file.id, b.attempt, window(b.progress_s, 1500.0))
    assert second.queue.complete(b.file.id, b.attempt)
    t = second.jobs.get_transcript(b.file.id)
    assert [s["start_s"] for s in t.segments] == [0, 600, 1195.5], t.segments
    assert t.text == "w0 w600 w1195.5" and t.complete and t.language == "en"
    assert t.segments[2]["words"] == [{"start_s": 1195.5, "end_s": 1500.0, "word": "w1195.5"}]
    assert second.jobs.get(b.file.job_id).audio_done_s == 1500.0


# ---------------------------------------------------------------------- idempotency


def test_idempotency_key_returns_the_same_job_within_24h(store: JobStore, clock: FakeClock) -> None:
    store.uploads.add(sha(1), 10, "p1")
    files = [NewFile("a.wav", sha(1))]
    first = store.jobs.create(files, OPTS, idempotency_key="K", owner="o1")
    again = store.jobs.create(files, JobOptions(model="other"), idempotency_key="K", owner="o1")
    assert first.created and not again.created and again.job.id == first.job.id
    assert again.job.options == OPTS, "the repeat's arguments are ignored"
    assert store.jobs.create(files, OPTS, idempotency_key="K", owner="o2").created, "keys are per owner"
    assert store.jobs.create(files, OPTS, idempotency_key="K").created, "unowned is its own scope"
    clock.advance(24 * 3600 - 1)
    assert store.jobs.create(files, OPTS, idempotency_key="K", owner="o1").job.id == first.job.id
    clock.advance(2)
    later = store.jobs.create(files, OPTS, idempotency_key="K", owner="o1")
    assert later.created and later.job.id != first.job.id
    store.jobs.delete(later.job.id)
    assert store.jobs.create(files, OPTS, idempotency_key="K", owner="o1").created, "deleting frees the key"


def test_concurrent_creates_with_one_key_make_one_job(make_store: StoreFactory) -> None:
    stores = [make_store(clock=utc_now) for _ in range(4)]  # like four API replicas
    stores[0].uploads.add(sha(1), 10, "p1")
    barrier = threading.Barrier(len(stores))

    def create(s: JobStore) -> tuple[str, bool]:
        barrier.wait()
        got = s.jobs.create([NewFile("a.wav", sha(1))], OPTS, idempotency_key="same", owner="o")
        return got.job.id, got.created

    for _ in range(3):
        with ThreadPoolExecutor(len(stores)) as pool:
            results = list(pool.map(create, stores))
        assert len({job_id for job_id, _ in results}) == 1, results
        assert sum(created for _, created in results) <= 1, results
    assert len(stores[0].jobs.find().items) == 1


# ---------------------------------------------------------------------- concurrency


def test_concurrent_claims_never_hand_out_a_file_twice(make_store: StoreFactory) -> None:
    seed = make_store(clock=utc_now)
    for j in range(4):
        make_job(seed, 6, first_sha=100 * j + 1)
    stores = [make_store(clock=utc_now) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def drain(s: JobStore) -> list[str]:
        barrier.wait()
        got = []
        while (c := s.queue.claim(f"w{id(s)}", 300)) is not None:
            got.append(c.file.id)
        return got

    with ThreadPoolExecutor(len(stores)) as pool:
        claimed = [f for got in pool.map(drain, stores) for f in got]
    assert len(claimed) == 24 and len(set(claimed)) == 24, Counter(claimed).most_common(3)


def test_two_workers_racing_to_complete_one_file(make_store: StoreFactory) -> None:
    clock = FakeClock()
    a_store, b_store = make_store(clock=clock), make_store(clock=clock)
    make_job(a_store, 8)
    for _ in range(8):
        a = a_store.queue.claim("A", 5)
        assert a is not None
        clock.advance(6)
        b = b_store.queue.claim("B", 5)
        assert b is not None and b.file.id == a.file.id
        barrier = threading.Barrier(2)

        def finish(
            s: JobStore, attempt: int, file_id: str = a.file.id, barrier: threading.Barrier = barrier
        ) -> WriteResult:
            barrier.wait()
            return s.queue.complete(file_id, attempt)

        with ThreadPoolExecutor(2) as pool:
            ra, rb = pool.map(finish, [a_store, b_store], [a.attempt, b.attempt])
        assert (ra, rb) == (WriteResult.STALE, WriteResult.OK)
    job = a_store.jobs.find().items[0]
    assert job.state is JobState.COMPLETED and job.counts[FileState.DONE] == 8


def test_workers_with_short_leases_complete_every_file_exactly_once(make_store: StoreFactory) -> None:
    """Workers that stall past their lease: files get reclaimed mid-way, yet every file ends
    done once, with contiguous windows from exactly one claim per window."""
    n_files, n_windows, lease_s = 12, 3, 0.15
    seed = make_store(clock=utc_now)
    job_id = make_job(seed, n_files, durations=[float(n_windows * 10)] * n_files)
    ok_completes: Counter[str] = Counter()
    stale: Counter[str] = Counter()
    lock = threading.Lock()

    def work(worker: int) -> None:
        s = make_store(clock=utc_now, max_attempts=50)
        rng = random.Random(worker)
        while (c := s.queue.claim(f"w{worker}", lease_s)) is not None:
            start = c.progress_s
            alive = True
            while alive and start < n_windows * 10:
                time.sleep(rng.choice([0.0, 0.01, 0.02, 0.2]))  # 0.2: stalls past the lease
                alive = bool(s.queue.commit_window(c.file.id, c.attempt, window(start, start + 10)))
                start += 10
            if alive:
                time.sleep(rng.choice([0.0, 0.01, 0.2]))
                result = s.queue.complete(c.file.id, c.attempt)
                with lock:
                    (ok_completes if result else stale)[c.file.id] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    job = seed.jobs.get(job_id)
    assert job.state is JobState.COMPLETED and job.counts[FileState.DONE] == n_files, job.counts
    assert len(ok_completes) == n_files and set(ok_completes.values()) == {1}, ok_completes
    for f in seed.jobs.list_files(job_id).items:
        t = seed.jobs.get_transcript(f.id)
        starts = [s["start_s"] for s in t.segments]
        assert starts == [0, 10, 20], (f.id, starts)
    assert job.audio_done_s == job.audio_total_s == n_files * n_windows * 10
    reclaimed = [f.attempts for f in seed.jobs.list_files(job_id).items if f.attempts > 1]
    assert reclaimed, "no lease ever expired: the test did not exercise take-overs"


def test_cancel_racing_with_completions_stays_consistent(make_store: StoreFactory) -> None:
    seed = make_store(clock=utc_now)
    stores = [make_store(clock=utc_now) for _ in range(5)]

    def one_round(first_sha: int) -> None:
        job_id = make_job(seed, 4, first_sha=first_sha)
        claims = [seed.queue.claim("w", 60) for _ in range(4)]
        barrier = threading.Barrier(5)

        def finish(i: int) -> WriteResult | None:
            barrier.wait()
            if i == 4:
                stores[i].jobs.cancel(job_id)
                return None
            c = claims[i]
            assert c is not None
            return stores[i].queue.complete(c.file.id, c.attempt)

        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(finish, range(5)))
        job = seed.jobs.get(job_id)
        states = {f.id: f.state for f in seed.jobs.list_files(job_id).items}
        for c, r in zip(claims, results[:4], strict=True):
            assert c is not None
            expected = FileState.DONE if r is WriteResult.OK else FileState.CANCELLED
            assert r in (WriteResult.OK, WriteResult.CANCELLED) and states[c.file.id] is expected, (r, states)
        if job.counts[FileState.DONE] == 4:
            assert job.state is JobState.COMPLETED, job  # the cancel came too late: a no-op
        else:
            assert job.state is JobState.CANCELLED and job.counts[FileState.CANCELLED] > 0, job

    for n in range(3):
        one_round(first_sha=100 * n + 1)


# ---------------------------------------------------------------------- listings


def test_list_jobs_cursor_paging_is_stable(store: JobStore, clock: FakeClock) -> None:
    ids = []
    for i in range(7):
        ids.append(make_job(store, 1, first_sha=1 + i, owner="o"))
        if i % 3 == 0:
            clock.advance(1)  # some share a timestamp: the id breaks the tie
    expected = [j.id for j in sorted((store.jobs.get(i) for i in ids), key=lambda j: (j.created_at, j.id))][
        ::-1
    ]

    first = store.jobs.find(owner="o", limit=3)
    assert [j.id for j in first.items] == expected[:3] and first.next_cursor
    make_job(store, 1, first_sha=50, owner="o")  # a newer job does not shift later pages
    store.jobs.delete(expected[1])  # nor does deleting one already seen
    second = store.jobs.find(owner="o", limit=3, cursor=first.next_cursor)
    assert [j.id for j in second.items] == expected[3:6] and second.next_cursor
    third = store.jobs.find(owner="o", limit=3, cursor=second.next_cursor)
    assert [j.id for j in third.items] == expected[6:] and third.next_cursor is None
    assert store.jobs.find(owner="nobody").items == []
    assert [j.id for j in store.jobs.find(state=JobState.QUEUED, limit=100).items][1:] == [
        i for i in expected if i != expected[1]
    ]
    with pytest.raises(InvalidCursor):
        store.jobs.find(cursor="not a cursor")
    with pytest.raises(InvalidCursor):
        store.history.search(cursor=first.next_cursor)  # another listing's cursor


def test_list_files_by_state_paged(store: JobStore) -> None:
    job_id = make_job(store, 5)
    for _ in range(2):
        c = store.queue.claim("w", 60)
        assert c and store.queue.complete(c.file.id, c.attempt)
    page = store.jobs.list_files(job_id, limit=2)
    names = [f.name for f in page.items]
    while page.next_cursor:
        page = store.jobs.list_files(job_id, limit=2, cursor=page.next_cursor)
        names += [f.name for f in page.items]
    assert names == [f"f{i}.wav" for i in range(5)]
    done = store.jobs.list_files(job_id, state=FileState.DONE)
    assert [f.name for f in done.items] == ["f0.wav", "f1.wav"] and done.next_cursor is None
    pending = store.jobs.list_files(job_id, state=FileState.PENDING, limit=2)
    assert [f.name for f in pending.items] == ["f2.wav", "f3.wav"]
    assert [
        f.name
        for f in store.jobs.list_files(job_id, state=FileState.PENDING, cursor=pending.next_cursor).items
    ] == ["f4.wav"]
    with pytest.raises(InvalidCursor):
        store.jobs.list_files(make_job(store, 1, first_sha=9), cursor=pending.next_cursor)
    with pytest.raises(JobNotFound):
        store.jobs.list_files(job_id, owner="someone")


# ---------------------------------------------------------------------- uploads and deletion


def test_uploads_by_sha256_and_deleting_jobs_frees_them(store: JobStore, clock: FakeClock) -> None:
    u, created = store.uploads.add(sha(1), 10, "blobs/1.a")
    again, created_again = store.uploads.add(sha(1), 10, "blobs/1.b")
    assert created and not created_again and again.path == "blobs/1.a" == u.path
    assert store.uploads.has(sha(1)) and not store.uploads.has(sha(2))
    store.uploads.add(sha(2), 20, "blobs/2")
    shared = [NewFile("a.wav", sha(1)), NewFile("b.wav", sha(2))]
    j1 = store.jobs.create(shared, OPTS).job.id
    clock.advance(1)
    j2 = store.jobs.create([NewFile("again.wav", sha(1))], OPTS).job.id
    c = store.queue.claim("w", 60)
    assert c and c.file.job_id == j1 and store.queue.commit_window(c.file.id, c.attempt, window(0, 5))

    deleted = store.jobs.delete(j1)
    assert deleted.unreferenced_paths == ["blobs/2"], "sha(1) is still needed by the other job"
    assert not store.uploads.has(sha(2)) and store.uploads.has(sha(1))
    with pytest.raises(JobNotFound):
        store.jobs.get(j1)
    assert store.queue.renew(c.file.id, "w", c.attempt, 60) is WriteResult.STALE  # its worker stops
    with pytest.raises(JobNotFound):
        store.jobs.delete(j2, owner="not-the-owner")
    assert store.jobs.delete(j2).unreferenced_paths == ["blobs/1.a"]
    with pytest.raises(UploadMissing):
        store.jobs.create([NewFile("a.wav", sha(1))], OPTS)

    store.uploads.add(sha(3), 5, "blobs/3")  # uploaded, never attached to a job
    assert store.uploads.delete_unreferenced(older_than_s=3600) == []  # within the grace period
    clock.advance(3601)
    assert store.uploads.delete_unreferenced(older_than_s=3600) == ["blobs/3"]


def test_purge_jobs_deletes_only_ended_old_jobs(store: JobStore, clock: FakeClock) -> None:
    ended = make_job(store, 1, first_sha=1)
    c = store.queue.claim("w", 60)
    assert c and store.queue.complete(c.file.id, c.attempt)
    live = make_job(store, 1, first_sha=2)
    clock.advance(8 * 86400)
    purged = store.jobs.purge(older_than_s=7 * 86400)
    assert [d.job_id for d in purged] == [ended] and purged[0].unreferenced_paths == [f"blobs/{sha(1)}.0"]
    assert store.jobs.get(live).state is JobState.QUEUED


# ---------------------------------------------------------------------- history


def test_history_search_paging_and_retention(store: JobStore, clock: FakeClock) -> None:
    texts = [
        "Hello World",
        "hello again",
        "Straße in BERLIN",
        "100% sure_thing",
        "你好世界",
        "nothing",
        "HELLO there",
    ]
    for i, t in enumerate(texts):
        owner = "o2" if i == 5 else "o1"
        store.history.add(
            text=t, owner=owner, source_name=f"{i}.wav", duration_s=1.5, language="en", model="m"
        )
        clock.advance(3600)

    def search(q: str | None, **kw: Any) -> list[str]:
        return [e.text for e in store.history.search(q, limit=100, **kw).items]

    assert search("hello") == ["HELLO there", "hello again", "Hello World"], "newest first, any case"
    assert search("STRASSE") == ["Straße in BERLIN"]  # case-folded, not just ASCII lowercase
    assert search("berlin") == ["Straße in BERLIN"]
    assert search("0%") == ["100% sure_thing"] and search("e_t") == ["100% sure_thing"]
    assert search("%") == ["100% sure_thing"] and search("_") == ["100% sure_thing"]
    assert search("世界") == ["你好世界"]
    assert search(None, owner="o2") == ["nothing"] and len(search(None)) == 7

    seen: list[str] = []
    page = store.history.search("l", limit=2)
    while True:
        seen += [e.text for e in page.items]
        if page.next_cursor is None:
            break
        page = store.history.search("l", limit=2, cursor=page.next_cursor)
    assert seen == search("l") and len(seen) == 4, seen
    with pytest.raises(InvalidCursor):
        store.history.search("hello", cursor=store.history.search("l", limit=1).next_cursor)

    entry = store.history.search("again").items[0]
    assert store.history.get(entry.id).source_name == "1.wav" and entry.created_at == T0 + timedelta(hours=1)
    store.history.delete(entry.id)
    assert search("again") == []
    with pytest.raises(HistoryNotFound):
        store.history.delete(entry.id)

    # Now T0+7h; entries are at T0+0h..6h. Keep the last 3 hours.
    assert store.history.purge(older_than_s=3.5 * 3600) == 3  # 0h, 2h, 3h (1h was deleted)
    assert search(None) == ["HELLO there", "nothing", "你好世界"]


def test_usage_counts_audio_since_a_moment_and_the_queue_now(store: JobStore, clock: FakeClock) -> None:
    store.history.add(text="yesterday", owner="o1", duration_s=100.0)
    make_job(store, 1, first_sha=10)
    old = store.queue.claim("A", 600)
    assert old is not None and store.queue.commit_window(old.file.id, old.attempt, window(0, 50))
    clock.advance(3600)
    since = clock()
    store.history.add(text="today", owner="o1", duration_s=30.0)
    store.history.add(text="today too", owner="o2", duration_s=12.5)
    store.history.add(text="no duration", owner="o2")
    assert store.queue.commit_window(old.file.id, old.attempt, window(50, 650))  # a running file counts
    make_job(store, 3, first_sha=20)

    u = store.usage.since(since)
    assert (u.history_audio_s, u.history_entries, u.job_audio_s, u.job_windows) == (42.5, 3, 600.0, 1), u
    assert (u.pending_files, u.running_files, u.audio_s) == (3, 1, 642.5), u
    assert store.queue.complete(old.file.id, old.attempt)
    u = store.usage.since(since - timedelta(days=1))
    assert (u.history_audio_s, u.job_audio_s, u.job_windows, u.running_files) == (142.5, 650.0, 2, 0), u


def test_history_keeps_segments(store: JobStore) -> None:
    segs: list[SegmentJson] = [{"start_s": 0.0, "end_s": 1.0, "text": "hi", "words": []}]
    e = store.history.add(text="hi", segments=segs)
    got = store.history.get(e.id)
    assert got.segments == segs and got.owner is None and got.model is None


def test_released_audio_is_stored_anew_and_refused_to_new_jobs(store: JobStore) -> None:
    """Migration 0002: a finished file's audio can be released; the row stays for the done
    file, a new job cannot use it until the content is uploaded again."""
    sha = "c" * 64
    store.uploads.add(sha, 10, "uploads/cc/c1")
    job = store.jobs.create([NewFile("a.wav", sha)], JobOptions(model="m")).job
    assert store.uploads.release(sha) is None  # its file is still pending
    claim = store.queue.claim("w", 30)
    assert claim is not None
    store.queue.commit_window(claim.file.id, claim.attempt, Window(0.0, 1.0, []))
    assert store.queue.complete(claim.file.id, claim.attempt)
    assert store.uploads.release(sha) == "uploads/cc/c1" and store.uploads.release(sha) is None
    assert not store.uploads.has(sha)
    with pytest.raises(UploadMissing):
        store.jobs.create([NewFile("b.wav", sha)], JobOptions(model="m"))
    upload, created = store.uploads.add(sha, 10, "uploads/cc/c2")
    assert created and upload.path == "uploads/cc/c2" and store.uploads.has(sha)
    assert store.jobs.create([NewFile("b.wav", sha)], JobOptions(model="m")).created
    assert (
        store.jobs.get_transcript(claim.file.id).complete
        and store.jobs.get(job.id).state.value == "completed"
    )


# ---------------------------------------------------------------------- tenants (migration 0003)


def test_an_upload_is_seen_and_referenced_only_by_the_key_that_made_it(store: JobStore) -> None:
    x = sha(70)
    store.uploads.add(x, 10, "blobs/x.a", owner="alice")
    assert store.uploads.has(x, owner="alice") and store.uploads.has(x)  # alice, and an admin
    assert not store.uploads.has(x, owner="bob"), "bob learnt that alice holds this content"
    with pytest.raises(UploadMissing):
        store.jobs.create([NewFile("x.wav", x)], OPTS, owner="bob", uploads_of="bob")
    # An admin (uploads_of=None) may name anyone's upload.
    assert store.jobs.create([NewFile("x.wav", x)], OPTS, owner="ops", uploads_of=None).created
    # Bob uploading the same content himself: stored once, now his as well.
    again, created = store.uploads.add(x, 10, "blobs/x.b", owner="bob")
    assert not created and again.path == "blobs/x.a" and store.uploads.has(x, owner="bob")
    assert store.jobs.create([NewFile("x.wav", x)], OPTS, owner="bob", uploads_of="bob").created


def test_deleting_a_job_removes_audio_another_keys_finished_file_names(store: JobStore) -> None:
    x = sha(71)
    store.uploads.add(x, 10, "blobs/x", owner="bob")
    bob = store.jobs.create([NewFile("b.wav", x)], OPTS, owner="bob", uploads_of="bob").job.id
    c = store.queue.claim("w", 60)
    assert c is not None and c.file.job_id == bob
    assert store.queue.commit_window(c.file.id, c.attempt, window(0, 1)) and store.queue.complete(
        c.file.id, c.attempt
    )
    assert store.uploads.release(x) == "blobs/x"  # what the worker does once bob's file is done
    assert not store.uploads.has(x, owner="bob"), "released audio is nobody's upload"
    store.uploads.add(x, 10, "blobs/x.2", owner="alice")  # stored anew, for alice
    alice = store.jobs.create([NewFile("a.wav", x)], OPTS, owner="alice", uploads_of="alice").job.id
    # Alice deletes her job before it ran: bob's finished file names the content, and must not
    # keep her audio.
    assert store.jobs.delete(alice, owner="alice").unreferenced_paths == ["blobs/x.2"]
    assert not store.uploads.has(x) and store.jobs.get_transcript(c.file.id).complete  # bob keeps his text

    y = sha(72)
    store.uploads.add(y, 10, "blobs/y", owner="bob")
    store.uploads.add(y, 10, "blobs/y.2", owner="alice")
    store.jobs.create([NewFile("b.wav", y)], OPTS, owner="bob", uploads_of="bob")
    alice = store.jobs.create([NewFile("a.wav", y)], OPTS, owner="alice", uploads_of="alice").job.id
    # Bob's file has not run yet: it needs the audio, so alice's delete leaves it; alice no
    # longer holds it, bob does.
    assert store.jobs.delete(alice, owner="alice").unreferenced_paths == []
    assert store.uploads.has(y, owner="bob") and not store.uploads.has(y, owner="alice")

    z = sha(73)
    store.uploads.add(z, 10, "blobs/z", owner="bob")  # bob's own upload, not in a job yet
    store.uploads.add(z, 10, "blobs/z.2", owner="alice")
    alice = store.jobs.create([NewFile("a.wav", z)], OPTS, owner="alice", uploads_of="alice").job.id
    assert store.jobs.delete(alice).unreferenced_paths == [], "bob's upload went with alice's job"
    assert store.uploads.has(z, owner="bob")


def test_input_folder_files_never_become_a_stored_upload(store: JobStore) -> None:
    x = sha(75)
    in_place = NewFile("in/a.wav", x, source_path="/srv/input/in/a.wav", size_bytes=99, duration_s=4.0)
    job = store.jobs.create([in_place], OPTS, owner="alice", uploads_of="alice").job
    assert job.audio_total_s == 4.0
    # The content is recorded, but nobody holds it as an upload: no key can name it.
    assert not store.uploads.has(x) and not store.uploads.has(x, owner="alice")
    with pytest.raises(UploadMissing):
        store.jobs.create([NewFile("x.wav", x)], OPTS, owner="bob", uploads_of=None)
    c = store.queue.claim("w", 60)
    assert c is not None and c.in_place and c.upload_path == "/srv/input/in/a.wav" and c.file.size_bytes == 99
    # Someone uploading the same content later gets a stored copy of their own; the
    # input-folder file is still read in place.
    up, created = store.uploads.add(x, 99, "blobs/x", owner="bob")
    assert created and up.path == "blobs/x" and store.uploads.has(x, owner="bob")
    assert store.uploads.release(x) is None  # the in-place file is still running on that content
    store.queue.fail(c.file.id, c.attempt, "boom", retry=True)
    again = store.queue.claim("w", 60)
    assert again is not None and again.upload_path == "/srv/input/in/a.wav"
    assert store.jobs.delete(job.id).unreferenced_paths == []  # bob's upload is not alice's to delete
    assert store.uploads.has(x, owner="bob")


def test_a_release_racing_a_new_job_never_leaves_it_on_released_audio(make_store: StoreFactory) -> None:
    """The interleaving forced: ``JobRecords.create`` has checked the upload and is about to
    insert its file when ``UploadStore.release`` runs. Without row locks (the code before
    migration 0003) the release went through and the job's file pointed at deleted audio, every
    time."""
    from sqlalchemy import event

    creator, releaser = make_store(clock=utc_now), make_store(clock=utc_now)
    x = sha(74)
    creator.uploads.add(x, 10, "blobs/x", owner="alice")
    checked, released = threading.Event(), threading.Event()

    def pause_before_files(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO FILES"):
            checked.set()
            released.wait(1.5)  # the release gets its chance; with the fix it is blocked meanwhile

    event.listen(creator.engine, "before_cursor_execute", pause_before_files)
    outcome: dict[str, Any] = {}

    def release() -> None:
        assert checked.wait(30)
        outcome["released"] = releaser.uploads.release(x)
        released.set()

    t = threading.Thread(target=release)
    t.start()
    try:
        created = creator.jobs.create([NewFile("a.wav", x)], OPTS, owner="alice", uploads_of="alice")
    finally:
        t.join(60)
        event.remove(creator.engine, "before_cursor_execute", pause_before_files)
    assert created.created
    assert outcome["released"] is None, "the upload was released under a new job's pending file"
    assert releaser.uploads.has(x), "the new job's file points at released audio"


def test_quotas_are_checked_in_the_transaction_and_exact_under_concurrency(
    make_store: StoreFactory,
) -> None:
    from serve_app.errors import QuotaExceeded
    from serve_app.jobs import JobQuota

    store = make_store(clock=utc_now)
    for i in range(6):
        store.uploads.add(sha(80 + i), 1000, f"blobs/{i}", owner="alice", duration_s=600.0)
    quota = JobQuota(max_live_jobs=2)
    stores = [make_store(clock=utc_now) for _ in range(4)]
    from sqlalchemy import event

    def slow_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Every create has counted before any inserts, unless creates of one owner serialise.
        if statement.lstrip().upper().startswith("INSERT INTO JOBS"):
            time.sleep(0.3)

    for s in stores:
        event.listen(s.engine, "before_cursor_execute", slow_insert)

    def create(i: int) -> str:
        try:
            stores[i].jobs.create(
                [NewFile("a.wav", sha(80 + i))], OPTS, owner="alice", uploads_of="alice", quota=quota
            )
            return "ok"
        except QuotaExceeded as e:
            assert "concurrent_jobs" in e.message and e.status_code == 429, e.message
            return "quota"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(create, range(4)))
    assert sorted(results) == ["ok", "ok", "quota", "quota"], results
    assert store.usage.of_owner("alice").live_jobs == 2 and store.usage.of_owner("bob").live_jobs == 0
    # Another owner is not affected; queued audio counts what is left of pending/running files.
    assert store.usage.of_owner("alice").queued_audio_s == 1200.0
    with pytest.raises(QuotaExceeded, match="queued_audio_h"):
        store.jobs.create(
            [NewFile("a.wav", sha(84))], OPTS, owner="alice", uploads_of="alice",
            quota=JobQuota(max_queued_audio_s=1500.0),
        )  # fmt: skip
    # Stored bytes: 6 uploads of 1000 B are alice's; a 7th would pass 6500 B.
    assert store.usage.of_owner("alice").stored_bytes == 6000
    with pytest.raises(QuotaExceeded, match="stored_upload_gb"):
        store.uploads.add(sha(90), 1000, "blobs/90", owner="alice", max_stored_bytes=6500)
    assert store.uploads.get(sha(90)) is None
    store.uploads.add(sha(90), 400, "blobs/90", owner="alice", max_stored_bytes=6500)
    store.uploads.add(sha(81), 1000, "blobs/81.b", owner="alice", max_stored_bytes=6500)  # already hers


def test_migration_0003_keeps_existing_uploads_reachable(empty_db_url: URL | Path) -> None:
    """A database at 0002 with a path job (its upload row named the input file) and an uploaded
    job: after 0003 the path job reads in place and the upload belongs to its job's owner."""
    upgrade(empty_db_url, "0002")
    engine = create_db_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            now = "2026-11-30 10:00:00"
            conn.execute(text(
                "INSERT INTO jobs (id, state, options, owner, created_at, updated_at) VALUES "
                "('j1', 'queued', '{\"model\": \"m\"}', 'alice', :t, :t), "
                "('j2', 'queued', '{\"model\": \"m\"}', NULL, :t, :t)"
            ), {"t": now})  # fmt: skip
            conn.execute(text(
                "INSERT INTO uploads (sha256, size_bytes, path, created_at) VALUES "
                f"('{sha(1)}', 5, '/srv/input/a.wav', :t), ('{sha(2)}', 6, 'uploads/02/x', :t)"
            ), {"t": now})  # fmt: skip
            conn.execute(text(
                "INSERT INTO files (id, job_id, position, name, sha256, size_bytes, state, attempts, "
                "progress_s, windows, created_at, updated_at) VALUES "
                f"('f1', 'j1', 0, 'a.wav', '{sha(1)}', 5, 'pending', 0, 0, 0, :t, :t), "
                f"('f2', 'j1', 1, 'b.wav', '{sha(2)}', 6, 'pending', 0, 0, 0, :t, :t), "
                f"('f3', 'j2', 0, 'b.wav', '{sha(2)}', 6, 'pending', 0, 0, 0, :t, :t)"
            ), {"t": now})  # fmt: skip
        upgrade(empty_db_url)
        store = JobStore(engine)
        assert store.jobs.get_file("f1").source_path == "/srv/input/a.wav"
        assert not store.uploads.has(sha(1)), "an input-folder file stayed a stored upload"
        assert store.uploads.has(sha(2), owner="alice") and store.uploads.has(sha(2), owner="")
        claims = [store.queue.claim("w", 60) for _ in range(3)]
        assert {c.upload_path for c in claims if c} == {"/srv/input/a.wav", "uploads/02/x"}
    finally:
        engine.dispose()
