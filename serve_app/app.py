"""The graph, and nothing else: ``build_app(args) -> Application``.

``deploy/*.yaml`` names ``serve_app.app:build_app`` as ``import_path`` and passes ``args:``.
Model names are resolved to local directories here, before anything is deployed, so a
missing model fails ``serve run`` at once with a message instead of a crash-looping replica.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ray.serve import Application

from serve_app.config import PipelineArgs
from serve_app.contracts import ServedModel
from serve_app.deployments.asr import AsrDeployment
from serve_app.deployments.decode import DecodeDeployment
from serve_app.deployments.ingress import Ingress
from serve_app.deployments.job_runner import JobRunnerDeployment
from serve_app.deployments.postprocess import PostprocessDeployment
from serve_app.deployments.streaming import StreamingDeployment
from serve_app.deployments.vad import VadDeployment
from serve_app.engines import supported_languages
from serve_app.keys import KeyRing
from serve_app.model_paths import resolve
from serve_app.settings import AccessArgs, Settings, StorageArgs
from serve_app.stages import Stages


def build_app(args: PipelineArgs | dict[str, Any]) -> Application:
    if not isinstance(args, PipelineArgs):  # Serve passes a dict when called from a config
        args = PipelineArgs.model_validate(args or {})
    settings = Settings()
    asr_dir = resolve(args.asr.model, settings)
    vad_dir = str(resolve(args.vad.model, settings))
    punc = args.postprocess.punc_model
    punc_dir = str(resolve(punc, settings)) if punc else None
    streaming_model = args.realtime.streaming_model
    streaming_dir = str(resolve(streaming_model, settings)) if streaming_model else None
    served = ServedModel(
        names=list(args.asr.served_names),
        language=args.asr.language,
        languages=supported_languages(args.asr, asr_dir),
    )
    if served.language not in served.languages:
        raise ValueError(
            f"asr.language {served.language!r} is not one this model transcribes ({', '.join(served.languages)})"
        )

    # @serve.deployment turns each class into a Deployment; mypy still sees the class.
    decode = DecodeDeployment.bind(args.limits)  # type: ignore[attr-defined]
    vad = VadDeployment.bind(args.vad, vad_dir)  # type: ignore[attr-defined]
    asr = AsrDeployment.bind(args.asr, str(asr_dir))  # type: ignore[attr-defined]
    post = PostprocessDeployment.bind(args.postprocess, punc_dir)  # type: ignore[attr-defined]
    streaming = StreamingDeployment.bind(args.realtime, vad_dir, streaming_dir)  # type: ignore[attr-defined]
    offline = Stages(decode=decode, vad=vad, asr=asr, post=post)
    storage = StorageArgs.from_settings(settings)
    keys = KeyRing.from_settings(settings)  # a bad entry fails the deploy, never opens the server
    runner = JobRunnerDeployment.bind(offline, args.retry, args.jobs, storage)  # type: ignore[attr-defined]
    return Ingress.bind(  # type: ignore[attr-defined]
        replace(offline, streaming=streaming, job_runner=runner),
        served,
        args.limits,
        args.retry,
        args.realtime,
        args.jobs,
        storage,
        keys,
        args.quotas,
        AccessArgs.from_settings(settings),
    )
