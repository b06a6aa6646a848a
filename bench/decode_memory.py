"""Peak memory of decoding a high-rate, many-channel FLAC: the bounded decoder against an older
one (by default the commit before it, which kept every block of frames and concatenated them).

    python -m bench.decode_memory [--minutes 10] [--old-ref ac924c9]

A FLAC of silence at 96 kHz, 8 channels (a few hundred KB for 10 minutes; ~2 MB for 3 hours)
is decoded as a whole upload (bytes) and as a job window (a path), each in a fresh process:
the peak of Python-traced allocations (numpy's buffers are traced) and the growth of the peak
RSS (``VmHWM``, reset through ``/proc/self/clear_refs``). Both are projected to 3 hours: the
old decoder's peak grows with the input's frames; the new one's is its output (16 kHz mono
float32: 691 MB for 3 hours) plus a constant (a few blocks).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from serve_app.contracts import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]
THREE_HOURS_S = 3 * 3600.0
OLD_REF = "ac924c9"
"""The last commit whose decoder kept every block of the file's own frames."""


def make_flac(path: Path, seconds: float) -> None:
    from serve_app.engines.decode import ffmpeg_exe

    subprocess.run(
        [
            ffmpeg_exe(),
            *("-y", "-loglevel", "error", "-f", "lavfi"),
            *("-i", "anullsrc=r=96000:cl=7.1:nb_samples=16384", "-t", str(seconds)),
            *("-c:a", "flac", "-compression_level", "0", str(path)),
        ],
        check=True,
    )


def child(module_path: str, mode: str, flac: str, seconds: float) -> None:
    """In a fresh process: decode ``flac`` with the decoder in ``module_path``; print JSON."""
    import os
    import time
    import tracemalloc

    spec = importlib.util.spec_from_file_location("decode_under_test", module_path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    from serve_app.contracts import AudioSource

    data = Path(flac).read_bytes()
    decoder = module.FfmpegDecoder(max_audio_s=THREE_HOURS_S)
    source = data if mode == "upload" else AudioSource(path=Path(flac), start_s=0.0, duration_s=seconds)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak RSS, to the current RSS
    base = _status_kb("VmRSS")
    tracemalloc.start()
    t = time.monotonic()
    audio = decoder.decode(source)
    wall = time.monotonic() - t
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = _status_kb("VmHWM")
    print(
        json.dumps(
            {
                "seconds": audio.duration_s,
                "wall_s": wall,
                "traced": traced,
                "rss": (peak - base) * 1024,
                "pid": os.getpid(),
            }
        )
    )


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))


def measure(module_path: Path, mode: str, flac: Path, seconds: float) -> dict[str, float]:
    argv = ["--child", str(module_path), mode, str(flac), str(seconds)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.decode_memory", *argv], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"decoding with {module_path} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="length of the test FLAC")
    p.add_argument("--old-ref", default=OLD_REF, help="git ref of the decoder to compare with ('' for none)")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child[0], a.child[1], a.child[2], float(a.child[3]))
        return
    seconds = a.minutes * 60
    output = seconds * SAMPLE_RATE * 4
    scale = THREE_HOURS_S / seconds
    with tempfile.TemporaryDirectory() as tmp:
        flac = Path(tmp) / "silence-96k-8ch.flac"
        make_flac(flac, seconds)
        decoders = {"new": ROOT / "serve_app" / "engines" / "decode.py"}
        if a.old_ref:
            old = Path(tmp) / "old_decode.py"
            show = subprocess.run(
                ["git", "show", f"{a.old_ref}:serve_app/engines/decode.py"], cwd=ROOT, capture_output=True
            )
            if show.returncode == 0:
                old.write_bytes(show.stdout)
                decoders = {"old": old, **decoders}
            else:
                print(f"(no old decoder at {a.old_ref!r}: {show.stderr.decode().strip()})")
        print(
            f"{a.minutes:g} min of 96 kHz 8-channel FLAC ({flac.stat().st_size / 1e6:.2f} MB; "
            f"{seconds * 96000 * 8 * 4 / 1e9:.2f} GB of float32 frames), "
            f"output {output / 1e6:.1f} MB of 16 kHz mono float32"
        )
        print(f"{'decoder':8} {'input':7} {'wall':>7} {'traced':>10} {'RSS +':>10}  projected to 3 h (RSS)")
        for name, path in decoders.items():
            for mode in ("upload", "window"):
                m = measure(path, mode, flac, seconds)
                if name == "old":  # every term grows with the input's frames
                    projected = m["rss"] * scale
                else:  # the output grows with the audio; the blocks do not
                    projected = output * scale + (m["rss"] - output)
                print(
                    f"{name:8} {mode:7} {m['wall_s']:6.1f}s {m['traced'] / 1e6:8.1f}MB {m['rss'] / 1e6:8.1f}MB"
                    f"  {projected / 1e9:6.2f} GB"
                )


if __name__ == "__main__":
    main()
