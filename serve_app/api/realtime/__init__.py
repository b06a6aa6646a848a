"""The realtime WebSocket protocols, one adapter each over ``serve_app.realtime.session``:
``funasr`` (FunASR's own protocol, at ``/`` and ``/v1/realtime/funasr``) and ``openai``
(OpenAI's Realtime transcription sessions, ``/v1/realtime``), on the skeleton in ``common``;
``events`` types OpenAI's client events."""
