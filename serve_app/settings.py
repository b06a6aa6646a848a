"""Host settings, split from the pipeline's ``args:`` by who changes them: the operator of the
host sets paths, the database, keys and allowed names in the environment (prefix
``FUNASR_SERVE_``, nested fields with ``__``); ``StorageArgs`` and ``AccessArgs`` are the
parts of them handed to the replicas, resolved when the app is built.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Host settings, read from the environment."""

    model_config = SettingsConfigDict(env_prefix="FUNASR_SERVE_", env_nested_delimiter="__")

    model_dir: Path = Path("models")
    """Where model directories live: ``<model_dir>/<hub id>`` for downloaded models. Relative
    paths resolve against the working directory of the process that builds the app."""

    allow_download: bool = False
    """If true, a hub id that is not under ``model_dir`` is downloaded from ModelScope when the
    app is built. Off by default: production hosts are usually offline."""

    hub_timeout_s: float = 5.0
    """Seconds to wait for the model hub to answer before declaring it unreachable."""

    hub_host: str = "www.modelscope.cn"
    """Host probed (TCP ``hub_port``) before any download, to fail fast offline."""

    hub_port: int = 443

    data_dir: Path = Path("data")
    """Uploaded job audio (``uploads/``) and the default SQLite database. On a multi-node
    cluster it must be a volume every node mounts at the same path: the decode stage reads job
    audio from it on whichever node it runs."""

    database_url: str | None = None
    """Jobs and history: ``None`` is SQLite at ``<data_dir>/funasr-serve.db``; production uses
    PostgreSQL, e.g. ``postgresql://asr@db.internal/funasr``."""

    input_dir: Path | None = None
    """A folder of recordings that jobs may name by path (``POST /v1/jobs`` with ``paths``);
    anything outside it, symlinks out of it included, is refused. ``None``: path jobs are off."""

    history: bool = True
    """Keep single transcriptions (text and metadata, never audio) for ``/v1/history``."""

    history_retention_days: float = 30.0
    """History entries older than this are deleted (0: kept for ever)."""

    job_retention_days: float = 30.0
    """Ended jobs older than this are deleted with their results (0: kept for ever)."""

    keep_job_audio: bool = False
    """Keep a job file's audio after it is transcribed (until its job is deleted); by default
    it is deleted as soon as no unfinished file needs it."""

    api_keys: str = ""
    """API keys as ``<sha256 hex>:<label>[:admin]`` entries separated by commas (hashes only;
    ``funasr-serve keys create`` prints a new key and its entry). Empty, with no
    ``api_keys_file`` either: no key is needed (``serve_app.keys``)."""

    api_keys_file: Path | None = None
    """A file of the same entries, one per line (``#`` comments); read when the app is built."""

    funasr_socket_open: bool = False
    """With API keys: leave FunASR's WebSocket protocol (``/`` and ``/v1/realtime/funasr``)
    open to anyone, for FunASR's own clients, which cannot send a key."""

    test_hooks: bool = False
    """FOR TESTS ONLY, never in production: the Decode stage SIGKILLs its own replica process
    when an upload starts with ``serve_app.deployments.decode.KILL_MARKER`` (how the poison-
    request test kills replicas without exhausting memory). Read by each Decode replica, so it
    must reach them: the app's ``runtime_env.env_vars`` (``FUNASR_SERVE_TEST_HOOKS=1``)."""

    allowed_hosts: str = ""
    """Host names (``Host`` header, port aside) the server answers to besides its own address,
    comma-separated, e.g. ``asr.example.com,funasr.ns.svc.cluster.local``; ``*``: any (behind
    a proxy that checks them). A server listening only on loopback answers to the loopback
    names; one listening beyond it to IP addresses (of the listening address) and loopback
    names. Other names are refused (403): a page on another site cannot reach the server by
    DNS rebinding. ``/healthz`` and ``/readyz`` answer every host (probes send the pod's IP)."""

    allowed_origins: str = ""
    """Web origins (``https://app.example.com``) whose pages may open WebSockets and send
    state-changing requests (POST, PUT, PATCH, DELETE), comma-separated; ``*``: any. The
    console's own origin is always allowed, and clients that send no ``Origin`` (FunASR's,
    the SDKs, curl) are not affected."""


class StorageArgs(BaseModel):
    """Where jobs and history live: ``Settings`` resolved to absolute paths when the app is
    built, and handed to the replicas (which may run on other nodes)."""

    data_dir: Path
    database: str
    input_dir: Path | None
    history: bool
    history_retention_days: float
    job_retention_days: float
    keep_job_audio: bool

    @classmethod
    def from_settings(cls, s: Settings) -> StorageArgs:
        data_dir = s.data_dir.resolve()
        return cls(
            data_dir=data_dir,
            database=s.database_url or str(data_dir / "funasr-serve.db"),
            input_dir=s.input_dir.resolve() if s.input_dir else None,
            history=s.history,
            history_retention_days=s.history_retention_days,
            job_retention_days=s.job_retention_days,
            keep_job_audio=s.keep_job_audio,
        )


class AccessArgs(BaseModel):
    """Which host names and web origins the server answers (``Settings.allowed_hosts`` and
    ``allowed_origins``), handed to the Ingress replicas."""

    allowed_hosts: str = ""
    allowed_origins: str = ""

    @classmethod
    def from_settings(cls, s: Settings) -> AccessArgs:
        return cls(allowed_hosts=s.allowed_hosts, allowed_origins=s.allowed_origins)
