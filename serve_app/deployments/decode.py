"""Decode stage: upload bytes → 16 kHz mono float32 (CPU replicas)."""

from __future__ import annotations

from ray import serve

from serve_app.config import PipelineArgs
from serve_app.contracts import DecodedAudio
from serve_app.deployments.common import Worker
from serve_app.engines.decode import FfmpegDecoder
from serve_app.errors import ServeError
from serve_app.metrics import decode_failures


@serve.deployment(name="Decode", ray_actor_options={"num_cpus": 0.25})
class DecodeDeployment:
    def __init__(self, args: PipelineArgs) -> None:
        self._decoder = FfmpegDecoder(max_audio_s=args.limits.max_audio_s)
        # One ffmpeg at a time per replica (each uses `threads` cores); more decoding
        # capacity comes from more replicas (autoscaling in the deploy YAML).
        self._worker = Worker("decode")
        self._decoder.decode(_SILENT_WAV)  # warm up: the binary is found and runs

    async def __call__(self, data: bytes) -> DecodedAudio:
        try:
            return await self._worker.run(self._decoder.decode, data)
        except ServeError as e:
            decode_failures().inc(tags={"type": e.type})
            raise

    def ready(self) -> bool:
        return True


def _wav(samples: int) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * samples)
    return buf.getvalue()


_SILENT_WAV = _wav(16000)
