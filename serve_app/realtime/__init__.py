"""Realtime streaming sessions, protocol-agnostic: audio in, events out. The wire protocols
(FunASR's, OpenAI's Realtime) live in ``serve_app.api``; the stateful, batched model work in
``serve_app.deployments.streaming``."""
