"""The graph, and nothing else: ``build_app(args) -> Application``.

``deploy/*.yaml`` names ``serve_app.app:build_app`` as ``import_path`` and passes ``args:``.
Model names are resolved to local directories here, before anything is deployed, so a
missing model fails ``serve run`` at once with a message instead of a crash-looping replica.
"""

from __future__ import annotations

from ray.serve import Application

from serve_app.config import PipelineArgs, Settings
from serve_app.deployments.asr import AsrDeployment
from serve_app.deployments.decode import DecodeDeployment
from serve_app.deployments.ingress import Ingress
from serve_app.deployments.postprocess import PostprocessDeployment
from serve_app.deployments.vad import VadDeployment
from serve_app.models import resolve


def build_app(args: PipelineArgs) -> Application:
    if not isinstance(args, PipelineArgs):  # Serve passes a dict when called from Python
        args = PipelineArgs.model_validate(args or {})
    settings = Settings()
    asr_dir = str(resolve(args.asr.model, settings))
    vad_dir = str(resolve(args.vad.model, settings))
    punc_dir = str(resolve(args.postprocess.punc_model, settings)) if args.postprocess.punc_model else None

    # @serve.deployment turns each class into a Deployment; mypy still sees the class.
    decode = DecodeDeployment.bind(args)  # type: ignore[attr-defined]
    vad = VadDeployment.bind(args, vad_dir)  # type: ignore[attr-defined]
    asr = AsrDeployment.bind(args, asr_dir)  # type: ignore[attr-defined]
    post = PostprocessDeployment.bind(args, punc_dir)  # type: ignore[attr-defined]
    return Ingress.bind(decode, vad, asr, post, args)  # type: ignore[attr-defined]
