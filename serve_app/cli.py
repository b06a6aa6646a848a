"""``funasr-serve``: the command-line client of a running server.

    funasr-serve jobs submit DIR [--wait]       # a folder of recordings becomes one job
    funasr-serve jobs status JOB [--wait]
    funasr-serve jobs export JOB --format srt|vtt|txt|json|csv|zip [--out DIR]
    funasr-serve jobs cancel JOB
    funasr-serve jobs list
    funasr-serve keys create --label NAME [--admin] [--file PATH]

``submit`` hashes every file, asks the server whether it already holds it
(``HEAD /v1/uploads/{sha256}``), uploads only the ones it lacks, and creates the job with an
``Idempotency-Key`` made from the file list and the options: run it again after a crash and it
uploads nothing the server has and returns the same job. The server is ``--url`` or
``FUNASR_SERVE_URL`` (default ``http://127.0.0.1:8000``); ``--api-key`` or
``FUNASR_SERVE_API_KEY`` when it requires keys.

``keys create`` makes a new API key (it needs no server): it prints the key once and the
entry (its SHA-256, label and admin flag) to add to the server's ``FUNASR_SERVE_API_KEYS`` or
``FUNASR_SERVE_API_KEYS_FILE``; ``--file`` appends the entry to that file itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from serve_app.exports import UniqueNames, safe_stem
from serve_app.hashing import CHUNK, sha256_file

AUDIO_SUFFIXES = {
    ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".oga", ".webm", ".mp4", ".aac", ".wma", ".amr", ".mkv", ".mov",
}  # fmt: skip


class CliError(Exception):
    """Shown as ``error: ...`` with exit code 2."""


def client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=httpx.Timeout(60, read=600))


def check(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:300]
        raise CliError(f"{r.request.method} {r.request.url.path}: {r.status_code} {message}")
    return r


def audio_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CliError(f"{root} is neither a file nor a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _chunks(path: Path, bar: Any) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            bar.update(len(chunk))
            yield chunk


def _bar(**kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


def submit(args: argparse.Namespace) -> int:
    root = Path(args.path)
    files = audio_files(root)
    if not files:
        raise CliError(f"no audio files under {root} ({', '.join(sorted(AUDIO_SUFFIXES))})")
    base = root if root.is_dir() else root.parent
    with client(args) as c:
        hashed = []
        with _bar(total=len(files), desc="hashing", unit="file") as bar:
            for p in files:
                hashed.append((p, sha256_file(p)[0]))
                bar.update()
        options = {
            k: v
            for k, v in {
                "model": args.model,
                "language": args.language,
                "prompt": args.prompt,
                "punctuation": args.punctuation,
                "itn": args.itn,
                "response_format": args.format,
            }.items()
            if v is not None
        }
        refs = [{"sha256": sha, "name": p.relative_to(base).as_posix()} for p, sha in hashed]
        body: dict[str, Any] = {"files": refs, "options": options}
        if args.metadata:
            body["metadata"] = json.loads(args.metadata)
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        # The job first: a job made before (same key) needs nothing uploaded, even when the
        # server has since released its audio. Only what the server lacks is uploaded.
        r = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        missing: list[tuple[Path, str]] = []
        if r.status_code == 400 and r.json().get("error", {}).get("type") == "upload_missing":
            missing = [(p, sha) for p, sha in hashed if check_head(c, sha)]
            with _bar(
                total=sum(p.stat().st_size for p, _ in missing), desc="uploading", unit="B", unit_scale=True
            ) as bar:
                for p, sha in missing:
                    check(c.put(f"/v1/uploads/{sha}", content=_chunks(p, bar)))
            r = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        check(r)
        print(
            f"{len(files)} files, {len(missing)} uploaded, {len(files) - len(missing)} already on the server",
            file=sys.stderr,
        )
        job = r.json()
        again = r.headers.get("idempotent-replayed") == "true"
        print(job["id"])
        print(
            f"job {job['id']} {'(the same job as before) ' if again else ''}{job['state']}", file=sys.stderr
        )
        return follow(c, job["id"]) if args.wait else 0


def check_head(c: httpx.Client, sha: str) -> bool:
    """True when the server lacks the content (it must be uploaded)."""
    r = c.head(f"/v1/uploads/{sha}")
    if r.status_code not in (200, 404):
        check(r)
    return r.status_code == 404


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h"


def follow(c: httpx.Client, job_id: str) -> int:
    """A progress bar (files, audio hours, ETA) until the job ends; the exit code."""
    # Here, not at the top: the server's job package (its store) is no cost to other commands.
    from serve_app.jobs.states import JobState

    job = check(c.get(f"/v1/jobs/{job_id}")).json()
    with _bar(total=job["files"]["total"], desc="transcribing", unit="file") as bar:
        while True:
            files, audio = job["files"], job["audio_seconds"]
            ended = files["done"] + files["failed"] + files["cancelled"]
            bar.update(ended - bar.n)
            eta = (
                ""
                if job["eta_s"] is None
                else f", ETA {time.strftime('%H:%M:%S', time.gmtime(job['eta_s']))}"
            )
            total = _hours(audio["total"]) if audio["total_known"] else "?"
            bar.set_postfix_str(f"{_hours(audio['done'])} of {total} audio, {files['failed']} failed{eta}")
            if JobState(job["state"]).terminal:
                break
            time.sleep(1.0)
            job = check(c.get(f"/v1/jobs/{job_id}")).json()
    print(summary(job), file=sys.stderr)
    return 0 if job["state"] == "completed" else 1


def summary(job: dict[str, Any]) -> str:
    f, a = job["files"], job["audio_seconds"]
    return (
        f"job {job['id']}: {job['state']}; {f['done']} done, {f['failed']} failed, {f['cancelled']} cancelled "
        f"of {f['total']} files; {_hours(a['done'])} of audio"
    )


def status(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.wait:
            return follow(c, args.job)
        job = check(c.get(f"/v1/jobs/{args.job}")).json()
        print(json.dumps(job, indent=2) if args.json else summary(job))
        return 0


def export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with client(args) as c:
        if args.format in ("csv", "zip"):
            params = {"format": args.format, **({"rows": args.rows} if args.format == "csv" else {})}
            r = check(c.get(f"/v1/jobs/{args.job}/export", params=params))
            suffix = f"-{args.rows}.csv" if args.format == "csv" else ".zip"
            target = out / f"job-{args.job}{suffix}"
            target.write_bytes(r.content)
            print(target)
            return 0
        fmt = {"txt": "text", "json": "verbose_json"}.get(args.format, args.format)
        ext = {"verbose_json": "json", "text": "txt"}.get(fmt, fmt)
        # File names come from the server (whoever uploaded the files chose them): each becomes
        # a safe base name of its own under --out, never a path.
        names = UniqueNames(reserved=[p.name for p in out.iterdir()] if args.no_overwrite else [])
        cursor, written = None, 0
        while True:
            page = check(
                c.get(
                    f"/v1/jobs/{args.job}/files",
                    params={"state": "done", **({"cursor": cursor} if cursor else {})},
                )
            ).json()
            for f in page["data"]:
                r = check(c.get(f"/v1/jobs/{args.job}/files/{f['id']}", params={"format": fmt}))
                target = out / f"{names.claim(safe_stem(str(f['name']), fallback=str(f['id'])), [ext])}.{ext}"
                target.write_text(
                    json.dumps(r.json(), ensure_ascii=False, indent=2) if fmt == "verbose_json" else r.text
                )
                written += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        print(f"{written} files written to {out}", file=sys.stderr)
        return 0


def cancel(args: argparse.Namespace) -> int:
    with client(args) as c:
        print(summary(check(c.post(f"/v1/jobs/{args.job}/cancel")).json()))
    return 0


def list_jobs(args: argparse.Namespace) -> int:
    with client(args) as c:
        for job in check(c.get("/v1/jobs", params={"limit": args.limit})).json()["data"]:
            print(f"{job['id']}  {job['created_at']}  {summary(job).split(': ', 1)[1]}")
    return 0


def create_key(args: argparse.Namespace) -> int:
    from serve_app.keys import new_key

    try:
        key, entry = new_key(args.label, admin=args.admin)
    except ValueError as e:
        raise CliError(str(e)) from None
    print(f"API key for {entry.label!r}{' (admin)' if entry.admin else ''}, shown only this once:")
    print(key)
    if args.file:
        path = Path(args.file)
        # Created private: the file holds hashes only, but nobody else needs to read or edit it.
        sep = "\n" if path.is_file() and not path.read_bytes().endswith(b"\n") and path.stat().st_size else ""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(sep + entry.entry() + "\n")
        print(f"Its entry was added to {path} (FUNASR_SERVE_API_KEYS_FILE); redeploy to use it.")
    else:
        print("Add this entry to FUNASR_SERVE_API_KEYS (entries separated by commas) or as a line")
        print("of FUNASR_SERVE_API_KEYS_FILE, then redeploy:")
        print(entry.entry())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="funasr-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default=os.environ.get("FUNASR_SERVE_URL", "http://127.0.0.1:8000"))
    p.add_argument("--api-key", default=os.environ.get("FUNASR_SERVE_API_KEY"))
    top = p.add_subparsers(dest="group", required=True)
    jobs = top.add_parser("jobs", help="batch transcription jobs").add_subparsers(dest="cmd", required=True)

    s = jobs.add_parser("submit", help="a folder (or one file) of recordings becomes a job")
    s.add_argument("path")
    s.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    s.add_argument("--model")
    s.add_argument("--language")
    s.add_argument("--prompt", help="hotwords / initial prompt")
    s.add_argument("--punctuation", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--itn", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--format", help="the job's default response format (json, text, srt, vtt, verbose_json)")
    s.add_argument("--metadata", help="a JSON object kept with the job")
    s.set_defaults(run=submit)

    st = jobs.add_parser("status", help="a job's state")
    st.add_argument("job")
    st.add_argument("--wait", action="store_true")
    st.add_argument("--json", action="store_true")
    st.set_defaults(run=status)

    e = jobs.add_parser("export", help="a job's results")
    e.add_argument("job")
    e.add_argument("--format", default="srt", choices=["srt", "vtt", "txt", "json", "csv", "zip"])
    e.add_argument(
        "--rows", default="files", choices=["files", "segments"], help="csv: a row per file or per segment"
    )
    e.add_argument("--out", default=".")
    e.add_argument(
        "--no-overwrite",
        action="store_true",
        help="leave files already in --out alone (new names get -2, -3, ...)",
    )
    e.set_defaults(run=export)

    c = jobs.add_parser("cancel", help="stop a job (results so far are kept)")
    c.add_argument("job")
    c.set_defaults(run=cancel)

    ls = jobs.add_parser("list", help="recent jobs")
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(run=list_jobs)

    keys = top.add_parser("keys", help="API keys").add_subparsers(dest="cmd", required=True)
    k = keys.add_parser("create", help="a new API key, printed once, and the entry the server needs")
    k.add_argument("--label", required=True, help="whose key: it owns the jobs and history made with it")
    k.add_argument("--admin", action="store_true", help="the key sees every label's jobs and history")
    k.add_argument("--file", help="append the entry to this keys file (FUNASR_SERVE_API_KEYS_FILE)")
    k.set_defaults(run=create_key)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except httpx.TransportError as e:
        print(f"error: cannot reach {args.url}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
