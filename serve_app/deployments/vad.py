"""VAD stage: FSMN-VAD cuts the audio into speech segments of at most ``max_segment_s``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from ray import serve

from serve_app.config import VadArgs
from serve_app.contracts import DecodedAudio, Segmentation
from serve_app.deployments.common import WARMUP_AUDIO, EnginePool, MeteredStage
from serve_app.deployments.timing import StageTimes
from serve_app.engines.vad import FsmnVad
from serve_app.load import LoadMeter


@serve.deployment(name="VAD", ray_actor_options={"num_cpus": 0.25})
class VadDeployment(MeteredStage):
    def __init__(self, args: VadArgs, model_dir: str) -> None:
        engines = [
            FsmnVad(
                Path(model_dir),
                max_segment_s=args.max_segment_s,
                merge_gap_s=args.merge_gap_s,
                threads=args.threads,
            )
            for _ in range(args.workers)
        ]
        for e in engines:
            e.segment(DecodedAudio(WARMUP_AUDIO))
        self._pool = EnginePool("vad", engines)
        self._window_s = args.segmentation_window_s
        self._times = StageTimes()
        self._load = LoadMeter(self._pool.size, lambda: self._pool.clock.busy_s)

    async def __call__(self, audio: DecodedAudio) -> Segmentation:
        with self._times.span("vad"):
            seg = await self._pool.run(lambda vad: vad.segmentation(audio))
        self._load.audio(audio.duration_s)
        return seg

    async def stream(self, audio: DecodedAudio) -> AsyncIterator[Segmentation]:
        """The segmentation window by window (``VadArgs.segmentation_window_s``), each as soon as it is cut:
        called with ``handle.options(stream=True)``, its segments reach ASR while the VAD reads
        on. One engine serves the whole stream (the windows share its model, one at a time)."""
        with self._times.span("vad"):
            async with self._pool.lease() as vad:
                windows = vad.windows(audio, self._window_s)
                while (seg := await self._pool.call(vad, lambda _: next(windows, None))) is not None:
                    yield seg
        self._load.audio(audio.duration_s)
