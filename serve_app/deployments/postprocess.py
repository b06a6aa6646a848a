"""Punctuation (CT-Transformer, when configured) then ITN (wetext), per segment."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ray import serve

from serve_app.config import PostprocessArgs
from serve_app.contracts import PostOptions, TextStage, Transcript
from serve_app.deployments.common import MeteredStage, Worker
from serve_app.deployments.timing import StageTimes
from serve_app.engines.itn import WetextItn
from serve_app.engines.punctuation import CtPunctuation
from serve_app.load import LoadMeter


@serve.deployment(name="Postprocess", ray_actor_options={"num_cpus": 0.25})
class PostprocessDeployment(MeteredStage):
    def __init__(self, args: PostprocessArgs, punc_model_dir: str | None) -> None:
        self._punc: TextStage | None = (
            CtPunctuation(Path(punc_model_dir), threads=args.threads) if punc_model_dir else None
        )
        self._itn: TextStage = WetextItn(args.itn_language)
        self._itn_default = args.itn
        self._worker = Worker("post")
        self._times = StageTimes()
        self._load = LoadMeter(1, lambda: self._worker.clock.busy_s)
        warm = ["你好世界" if args.itn_language == "zh" else "hello world"]
        if self._punc:
            self._punc.process(warm)
        self._itn.process(warm)

    def _apply(self, t: Transcript, o: PostOptions) -> Transcript:
        texts = [s.text for s in t.segments]
        if self._punc is not None and o.punctuation is not False:
            texts = self._punc.process(texts)
        if o.itn if o.itn is not None else self._itn_default:
            texts = self._itn.process(texts)
        return replace(t, segments=[replace(s, text=x) for s, x in zip(t.segments, texts, strict=True)])

    async def __call__(self, t: Transcript, o: PostOptions) -> Transcript:
        with self._times.span("post"):
            out = await self._worker.run(self._apply, t, o) if t.segments else t
        self._load.audio(t.duration_s)
        return out
