"""Decode stage: upload bytes or a file window → 16 kHz mono float32 (CPU replicas)."""

from __future__ import annotations

import asyncio
import os
import signal

from ray import serve

from serve_app.config import LimitsArgs
from serve_app.contracts import AudioSource, DecodedAudio
from serve_app.deployments.common import WARMUP_AUDIO, MeteredStage, Worker, logger
from serve_app.deployments.timing import StageTimes
from serve_app.engines.decode import FfmpegDecoder
from serve_app.engines.wav import encode_wav
from serve_app.errors import ServeError
from serve_app.load import LoadMeter
from serve_app.metrics import decode_failures
from serve_app.settings import Settings

KILL_MARKER = b"FUNASR-SERVE-TEST-HOOK:KILL-REPLICA\n"
"""With ``Settings.test_hooks`` on (tests only), an upload that starts with these bytes makes
the replica that decodes it SIGKILL its own process mid-call: a poison request, without
exhausting the test machine's memory to make one."""
KILL_AFTER_S = 1.0
"""How long into the call the hook kills the replica."""


@serve.deployment(name="Decode", ray_actor_options={"num_cpus": 0.25})
class DecodeDeployment(MeteredStage):
    def __init__(self, limits: LimitsArgs) -> None:
        self._decoder = FfmpegDecoder(max_audio_s=limits.max_request_audio_s)
        # One ffmpeg at a time per replica (each uses `threads` cores); more decoding
        # capacity comes from more replicas (autoscaling in the deploy YAML).
        self._worker = Worker("decode")
        self._times = StageTimes()
        self._load = LoadMeter(1, lambda: self._worker.clock.busy_s)
        self._kill_marker = KILL_MARKER if Settings().test_hooks else None
        if self._kill_marker is not None:
            logger.warning("Decode: test hooks are ON (FUNASR_SERVE_TEST_HOOKS); never in production")
        self._decoder.decode(encode_wav(WARMUP_AUDIO))  # warm up: the binary is found and runs

    async def __call__(self, source: AudioSource) -> DecodedAudio:
        if (
            self._kill_marker is not None
            and source.data is not None
            and source.data.startswith(self._kill_marker)
        ):
            # Partway through the call, as a decode that runs out of memory dies: a replica that
            # dies within microseconds can beat the reply by which Serve's router learns that
            # the replica took the request, and then the router itself sends it to another
            # replica, unseen by the pipeline (and not counted against the request).
            await asyncio.sleep(KILL_AFTER_S)
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            with self._times.span("decode"):
                audio = await self._worker.run(self._decoder.decode, source)
        except ServeError as e:
            decode_failures().inc(tags={"type": e.type})
            raise
        self._load.audio(audio.duration_s)
        return audio
