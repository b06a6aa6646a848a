"""VAD stage: FSMN-VAD cuts the file into speech segments of at most ``max_segment_s``."""

from __future__ import annotations

from pathlib import Path

from ray import serve

from serve_app.config import PipelineArgs
from serve_app.contracts import DecodedAudio, Segmentation
from serve_app.deployments.common import WARMUP_AUDIO, Worker
from serve_app.engines.vad import FsmnVad


@serve.deployment(name="VAD", ray_actor_options={"num_cpus": 0.25})
class VadDeployment:
    def __init__(self, args: PipelineArgs, model_dir: str) -> None:
        self._vad = FsmnVad(
            Path(model_dir),
            max_segment_s=args.vad.max_segment_s,
            merge_gap_s=args.vad.merge_gap_s,
            threads=args.vad.threads,
        )
        self._worker = Worker("vad")
        self._vad.segment(DecodedAudio(WARMUP_AUDIO))

    def _segment(self, audio: DecodedAudio) -> Segmentation:
        return Segmentation(duration_s=audio.duration_s, segments=self._vad.segment(audio))

    async def __call__(self, audio: DecodedAudio) -> Segmentation:
        return await self._worker.run(self._segment, audio)

    def ready(self) -> bool:
        return True
