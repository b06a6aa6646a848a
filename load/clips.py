"""The test clip mix: real (synthesised) speech clips of fixed lengths, built on demand.

No audio is committed. Each clip is spoken sentences from ``espeak-ng`` joined by 0.3–1.5 s of
near-silence (so a VAD has real pauses to cut at), padded to an exact length and written as
16 kHz mono 16-bit WAV under a cache directory. Building is deterministic (fixed seeds, fixed
sentence order), so every machine gets the same clips for the same ``CLIP_VERSION``.

Speech comes from ``tools.audio.speak`` (espeak-ng); the benchmark imports this module too.
"""

from __future__ import annotations

import argparse
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.audio import speak, write_wav

SAMPLE_RATE = 16_000
DEFAULT_CACHE_DIR = Path(".cache/clips")
CACHE_DIR_ENV = "FUNASR_LOAD_CLIPS_DIR"
"""Where the locustfile finds the clips (``load.capacity`` sets it to its ``--clips-dir``)."""
CLIP_VERSION = "v1"
"""Bump when the recipe changes so stale cached clips are not reused."""

DEFAULT_MIX: tuple[tuple[float, float], ...] = (
    # (length in seconds, weight). Favours short clips, as interactive traffic does; the long
    # tail still dominates the audio seconds (0.05 x 300 s is half of the ~30 s mean).
    (2.0, 0.35),
    (10.0, 0.35),
    (30.0, 0.15),
    (60.0, 0.10),
    (300.0, 0.05),
)

# Harvard sentences (IEEE 1969 Recommended Practice for Speech Quality Measurements, lists 1-2;
# public domain) plus a few short phrases so the 2 s clip holds a whole utterance.
SENTENCES: tuple[str, ...] = (
    "Good morning.",
    "Thank you very much.",
    "Please call me back.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
)
VOICES = ("en-us", "en-gb")  # both ship with every espeak-ng build
PAUSE_S = (0.3, 1.5)
LEAD_IN_S = 0.2
NOISE_FLOOR = 1e-3  # about -60 dBFS: a quiet room, not digital zeros (some VADs special-case those)


@dataclass(frozen=True)
class Clip:
    """One clip of the mix: a WAV file, its exact length and its share of requests."""

    path: Path
    duration_s: float
    weight: float

    @property
    def label(self) -> str:
        """Length bucket used in metric names, e.g. ``"10s"``."""
        return f"{self.duration_s:g}s"


def synthesize(duration_s: float, seed: int) -> np.ndarray:
    """Exactly ``duration_s`` of speech: sentences and random pauses, silence-padded at the end.

    Sentences are taken in a seeded order and skipped when they do not fit the time left, so
    every clip ends on a whole utterance; it stops once no sentence fits.
    """
    rng = np.random.default_rng(seed)
    total = round(duration_s * SAMPLE_RATE)
    parts: list[np.ndarray] = [np.zeros(round(LEAD_IN_S * SAMPLE_RATE), np.float32)]
    used = parts[0].size
    order = rng.permutation(len(SENTENCES))
    turn = 0
    while True:
        added = False
        for idx in order:
            pause = (
                np.zeros(round(rng.uniform(*PAUSE_S) * SAMPLE_RATE), np.float32)
                if used > parts[0].size
                else None
            )
            speech = speak(SENTENCES[idx], VOICES[turn % len(VOICES)], trim=True)
            need = speech.size + (pause.size if pause is not None else 0)
            if used + need > total:
                continue
            if pause is not None:
                parts.append(pause)
            parts.append(speech)
            used += need
            turn += 1
            added = True
        if not added:
            break
    audio = np.concatenate(parts)
    audio = np.pad(audio, (0, total - audio.size))
    audio += rng.normal(0.0, NOISE_FLOOR, size=audio.size).astype(np.float32)
    return audio


def wav_duration_s(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def build_clip(cache_dir: Path, duration_s: float, weight: float) -> Clip:
    """The clip of ``duration_s`` seconds, synthesised on first use and cached afterwards."""
    path = cache_dir / f"speech_{duration_s:g}s_{CLIP_VERSION}.wav"
    if not path.exists():
        write_wav(path, synthesize(duration_s, seed=round(duration_s * 1000)))
    return Clip(path=path, duration_s=wav_duration_s(path), weight=weight)


def build_clip_mix(
    cache_dir: str | Path = DEFAULT_CACHE_DIR, mix: Sequence[tuple[float, float]] = DEFAULT_MIX
) -> list[Clip]:
    """The weighted clip mix, built under ``cache_dir`` where missing. Weights need not sum to 1."""
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return [build_clip(directory, duration, weight) for duration, weight in mix]


def mean_clip_s(clips: Sequence[Clip]) -> float:
    """Expected audio seconds per request under the mix weights."""
    total = sum(c.weight for c in clips)
    return sum(c.duration_s * c.weight for c in clips) / total


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (or list) the cached load-test clip mix.")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR))
    args = parser.parse_args(argv)
    clips = build_clip_mix(args.cache_dir)
    for clip in clips:
        print(f"{clip.label:>5}  weight {clip.weight:.2f}  {clip.path}")
    print(f"mean audio per request under the mix: {mean_clip_s(clips):.1f} s")


if __name__ == "__main__":
    main()
