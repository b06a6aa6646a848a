"""Realtime streaming Paraformer: the 600 ms chunks of many sessions in one forward pass.

FunASR's ``ParaformerStreaming.inference`` takes one utterance's chunk and a ``cache`` dict at a
time (batch size 1 is asserted), so a server that runs it for N live sessions runs N forward
passes, one after another under a lock. Triton's FunASR deployment instead batches the chunks
of many streams (its sequence batcher carries each stream's state in and out). This engine does
the same in PyTorch: the per-session state is a :class:`StreamingSession` (what FunASR keeps in
``cache``), and :meth:`StreamingParaformer.step` runs the encoder, the CIF predictor and the
decoder once for the chunks of every session in the call.

Sessions are at different positions (a first chunk has no look-back yet, a final chunk is
shorter, a long-running one has its full look-back), so their chunks and caches differ in length.
They are padded and masked: the attention look-back caches are right-aligned and their padding
masked out of the softmax, the chunk frames are right-padded, padded frames are zeroed before
every FSMN convolution and before the predictor's convolution (which would otherwise look into
them, see ``funasr_asr``), and the CIF integrate-and-fire loop and the cache updates use each
session's own lengths. The result equals running each session alone up to float rounding
(~1e-6); see ``tests/unit/test_streaming_asr.py``, which also checks a session run alone
against FunASR's own ``inference`` with its ``cache``.

The math follows FunASR 1.4.16: ``ParaformerStreaming.inference``/``generate_chunk``,
``SANMEncoderChunkOpt.forward_chunk``, ``MultiHeadedAttentionSANM.forward_chunk``,
``CifPredictorV2.forward_chunk``, ``ParaformerSANMDecoder.forward_chunk``; its quirks are kept
on purpose (noted where they occur) so that a session's text is FunASR's text.

Not thread-safe: one caller thread (the deployment's batch method) drives the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serve_app.contracts import SAMPLE_RATE
from serve_app.engines.funasr_loader import load_automodel
from serve_app.engines.padded_batch import attend, cat_valid, lengths_mask, pad_frames, stack_right
from serve_app.engines.streaming_state import (
    ChunkTrace,
    ChunkWork,
    StreamingSession,
    StreamingStep,
    empty_samples,
    join_text,
)

__all__ = ["ChunkTrace", "StreamingParaformer", "StreamingSession", "StreamingStep"]

LFR_FRAME_SAMPLES = SAMPLE_RATE * 60 // 1000
"""One encoder frame is 60 ms (10 ms fbank shift, LFR n=6); FunASR's chunk sizes count these."""

TAIL_SAMPLES = 960
"""FunASR encodes a final piece shorter than this from the carried-over frames alone."""


class StreamingParaformer:
    """FunASR's ``ParaformerStreaming`` over many sessions, one batched forward pass per step.

    ``chunk_size`` is FunASR's ``[left, chunk, right]`` in 60 ms frames (``[0, 10, 5]``: 600 ms
    chunks, 300 ms look-ahead); ``encoder_chunk_look_back`` / ``decoder_chunk_look_back`` are
    how many chunks the encoder self-attention / decoder cross-attention see back."""

    def __init__(
        self,
        model_dir: Path,
        device: str = "cpu",
        threads: int = 2,
        chunk_size: Sequence[int] = (0, 10, 5),
        encoder_chunk_look_back: int = 4,
        decoder_chunk_look_back: int = 1,
    ) -> None:
        left, chunk, right = (int(c) for c in chunk_size)
        if left < 0 or chunk <= 0 or right <= 0:
            # right == 0 makes FunASR carry the whole chunk history over (``x[-0:]``).
            raise ValueError(f"chunk_size must be [>=0, >0, >0], got {list(chunk_size)}")
        if encoder_chunk_look_back < 0 or decoder_chunk_look_back < 0:
            # FunASR's -1 (look back to the stream start) grows the caches without bound.
            raise ValueError("look-backs must be >= 0 (unbounded look-back is not supported)")
        self.chunk_size = (left, chunk, right)
        self.encoder_chunk_look_back = encoder_chunk_look_back
        self.decoder_chunk_look_back = decoder_chunk_look_back
        self.chunk_samples = chunk * LFR_FRAME_SAMPLES
        self.threads = threads
        self._am = load_automodel(model_dir, device=device, threads=threads)
        self.model = self._am.model
        if type(self.model).__name__ != "ParaformerStreaming":
            raise ValueError(f"{model_dir} holds a {type(self.model).__name__}, not a ParaformerStreaming")
        self.name = type(self.model).__name__
        self.device = torch.device(device)
        self.frontend = self._am.kwargs["frontend"]
        self.tokenizer = self._am.kwargs["tokenizer"]
        enc = self.model.encoder
        self._enc_layers = [*enc.encoders0, *enc.encoders]
        self._d_model = int(enc.output_size())
        self._feat_dim = int(self.frontend.output_size())
        dec = self.model.decoder
        self._dec_fsmn_layers = list(dec.decoders)
        if dec.decoders2 is not None and dec.num_blocks - dec.att_layer_num > 1:
            # FunASR's forward_chunk runs decoders2 only for more than one extra block.
            self._dec_fsmn_layers += list(dec.decoders2)
        self._dec_kernel = int(dec.decoders[0].self_attn.kernel_size)
        pad = dec.decoders[0].self_attn.pad_fn.padding
        self._dec_left_pad = int(pad[0])
        # The model is not thread-safe; step() is meant for one caller thread, this only guards.
        self._lock = threading.Lock()

    # -- sessions ---------------------------------------------------------------------------

    def new_session(self) -> StreamingSession:
        """A fresh stream. Free it by dropping it (or ``reset()`` it for a new utterance)."""
        return StreamingSession()

    # -- the step ---------------------------------------------------------------------------

    def feed(self, session: StreamingSession, samples: np.ndarray, is_final: bool = False) -> StreamingStep:
        """One session alone: ``step([(session, samples, is_final)])``."""
        return self.step([(session, samples, is_final)])[0]

    def step(
        self, items: Sequence[tuple[StreamingSession, np.ndarray, bool]], trace: bool = False
    ) -> list[StreamingStep]:
        """Feed each session its samples (16 kHz float32, any length) and decode every complete
        model chunk, the chunks of all sessions in one forward pass (more passes only for a
        session given more than one chunk's worth). Samples short of a chunk wait in the
        session; ``is_final`` flushes them and ends the utterance. One result per item."""
        sessions = [s for s, _, _ in items]
        if len({id(s) for s in sessions}) != len(sessions):
            raise ValueError("a session may appear only once per step")
        plans: list[list[np.ndarray]] = []
        for session, samples, is_final in items:
            audio = np.asarray(samples, dtype=np.float32).reshape(-1)
            session.samples_seen += audio.size
            buf = np.concatenate([session.pending, audio]) if session.pending.size else audio
            full = buf.size // self.chunk_samples
            chunks = [buf[i * self.chunk_samples : (i + 1) * self.chunk_samples] for i in range(full)]
            rest = buf[full * self.chunk_samples :]
            if is_final:
                chunks.append(rest)  # possibly empty: FunASR then runs its tail chunk
                session.pending = empty_samples()
            else:
                session.pending = rest.copy()
            plans.append(chunks)

        tokens: list[list[str]] = [[] for _ in items]
        traces: list[list[ChunkTrace]] = [[] for _ in items]
        with self._lock, torch.inference_mode():
            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
            for r in range(max((len(p) for p in plans), default=0)):
                idx = [i for i, p in enumerate(plans) if r < len(p)]
                work = [
                    ChunkWork(sessions[i], plans[i][r], items[i][2] and r == len(plans[i]) - 1) for i in idx
                ]
                for i, (toks, tr) in zip(idx, self._forward(work, trace), strict=True):
                    tokens[i] += toks
                    if tr is not None:
                        traces[i].append(tr)

        from funasr.utils.postprocess_utils import sentence_postprocess

        results = []
        for i, (session, _, is_final) in enumerate(items):
            text = str(sentence_postprocess(tokens[i])[0]).strip() if tokens[i] else ""
            utterance = join_text(session.text, text)
            if is_final:
                session.reset()
            else:
                session.text = utterance
            results.append(StreamingStep(text, tuple(tokens[i]), utterance, is_final, tuple(traces[i])))
        return results

    # -- one batched forward pass -------------------------------------------------------------

    def _forward(self, work: list[ChunkWork], trace: bool) -> list[tuple[list[str], ChunkTrace | None]]:
        live = [w for w in work if self._encoder_input(w)]
        out: dict[int, tuple[list[str], ChunkTrace | None]] = {id(w): ([], None) for w in work}
        if live:
            enc, lens = self._encode(live)
            alphas = self._alphas(enc, lens, [w.is_final for w in live])
            embeds = self._cif(live, enc, alphas, lens)
            ids = self._decode(live, enc, lens, embeds)
            for b, (w, ids_b) in enumerate(zip(live, ids, strict=True)):
                toks = self._tokens(ids_b) if ids_b is not None else []
                tr = None
                if trace:
                    tr = ChunkTrace(
                        encoder_out=enc[b, : lens[b]].float().cpu().numpy().copy(),
                        alphas=alphas[b, : lens[b]].float().cpu().numpy().copy(),
                        tokens=tuple(toks),
                    )
                out[id(w)] = (toks, tr)
        return [out[id(w)] for w in work]

    def _encoder_input(self, w: ChunkWork) -> bool:
        """Frontend for one chunk of one session (FunASR's frontend has batch size 1): sets
        ``w.x`` to the encoder input (overlap frames + the chunk's frames, scaled and position
        encoded) and updates the session's carry-over. False when there is nothing to encode."""
        from funasr.utils.load_utils import extract_fbank

        s = w.session
        left, _, right = self.chunk_size
        scale = self._d_model**0.5
        tail = w.is_final and w.samples.size < TAIL_SAMPLES
        if s.overlap is None:
            if tail:
                # Ending an utterance that never had a chunk: nothing to flush. (FunASR would
                # decode its all-zero initial frames here, and may "hear" tokens in them.)
                return False
            s.overlap = torch.zeros((left + right, self._feat_dim), device=self.device)
        feats = None
        if not tail:
            speech, _ = extract_fbank(
                [torch.from_numpy(np.ascontiguousarray(w.samples))],
                data_type="sound",
                frontend=self.frontend,
                cache=s.frontend,
                is_final=w.is_final,
            )
            if speech.dim() == 3 and speech.size(1) > 0:
                feats = speech[0].to(self.device)
            elif not w.is_final:
                return False  # the online frontend is still collecting LFR context
        if feats is None:
            # FunASR's tail chunk: the carried-over frames alone. Its forward_chunk scales them
            # in place before discarding the position-encoded copy, so they go in scaled once more.
            w.x = s.overlap * scale
            return True
        n = feats.size(0)
        # Only this chunk's positions (FunASR encodes all from the stream start, then slices).
        positions = torch.arange(s.position + 1, s.position + n + 1)[None, :]
        pe = self.model.encoder.embed.encode(positions, self._feat_dim, feats.dtype).to(self.device)
        s.position += n
        x = torch.cat([s.overlap, feats * scale + pe[0]], dim=0)
        s.overlap = x[-(left + right) :].clone()
        w.x = x
        return True

    def _encode(self, live: list[ChunkWork]) -> tuple[torch.Tensor, list[int]]:
        """SANMEncoderChunkOpt.forward_chunk for a batch: (B, T_max, d) and each T_i."""
        _, chunk, right = self.chunk_size
        look_back = self.encoder_chunk_look_back
        frames = [w.x for w in live if w.x is not None]
        lens = [f.size(0) for f in frames]
        x = pad_frames(frames)
        bsz, width = x.size(0), x.size(1)
        cur_valid = lengths_mask(lens, width, x.device)
        for s in (w.session for w in live):
            if not s.enc_k:
                s.enc_k = [None] * len(self._enc_layers)
                s.enc_v = [None] * len(self._enc_layers)
        for li, layer in enumerate(self._enc_layers):
            attn = layer.self_attn
            residual = x
            xn = layer.norm1(x)
            q_h, k_h, v_h, v = attn.forward_qkv(xn)
            key_valid = cur_valid
            if look_back > 0:
                ck, cache_valid = stack_right([w.session.enc_k[li] for w in live])
                cv, _ = stack_right([w.session.enc_v[li] for w in live])
                if ck is not None and cv is not None:
                    key_valid = cat_valid([(cache_valid, bsz, ck.size(2)), (cur_valid, bsz, width)], x.device)
                    k_all, v_all = torch.cat([ck, k_h], dim=2), torch.cat([cv, v_h], dim=2)
                else:
                    k_all, v_all = k_h, v_h
                # The look-back keeps the chunk's frames, not its right context (``[:-right]``),
                # and a first chunk is stored whole (FunASR trims only when appending).
                keep = look_back * chunk
                for b, w in enumerate(live):
                    s = w.session
                    n = lens[b] - right
                    new_k, new_v = k_h[b, :, :n], v_h[b, :, :n]
                    old_k, old_v = s.enc_k[li], s.enc_v[li]
                    if old_k is None or old_v is None:
                        s.enc_k[li], s.enc_v[li] = new_k.clone(), new_v.clone()
                    else:
                        s.enc_k[li] = torch.cat([old_k, new_k], dim=1)[:, -keep:].clone()
                        s.enc_v[li] = torch.cat([old_v, new_v], dim=1)[:, -keep:].clone()
            else:
                k_all, v_all = k_h, v_h
            # FSMN memory over the chunk's values: padded frames must read as the zero padding.
            if cur_valid is not None:
                v = v * cur_valid[:, :, None].to(v.dtype)
            out = attend(attn, q_h, k_all, v_all, key_valid) + attn.forward_fsmn(v, None)
            x = residual + out if layer.in_size == layer.size else out
            x = x + layer.feed_forward(layer.norm2(x))
        if self.model.encoder.normalize_before:
            x = self.model.encoder.after_norm(x)
        return x, lens

    def _alphas(self, enc: torch.Tensor, lens: list[int], finals: list[bool]) -> torch.Tensor:
        """CifPredictorV2.forward_chunk's weights for a batch, masked as FunASR masks a chunk:
        the left context never fires, the right context only in a final chunk."""
        pred = self.model.predictor
        left, chunk, _ = self.chunk_size
        valid = lengths_mask(lens, enc.size(1), enc.device)
        hidden = enc if valid is None else enc * valid[:, :, None].to(enc.dtype)
        out = torch.relu(pred.cif_conv1d(pred.pad(hidden.transpose(1, 2)))).transpose(1, 2)
        alphas = torch.sigmoid(pred.cif_output(out))
        alphas = torch.nn.functional.relu(alphas * pred.smooth_factor - pred.noise_threshold).squeeze(-1)
        alphas[:, :left] = 0.0
        for b, final in enumerate(finals):
            if not final:
                alphas[b, left + chunk :] = 0.0
        if valid is not None:
            alphas = alphas * valid.to(alphas.dtype)
        return alphas

    def _cif(
        self, live: list[ChunkWork], enc: torch.Tensor, alphas: torch.Tensor, lens: list[int]
    ) -> list[torch.Tensor]:
        """Continuous integrate-and-fire over each session's carried-over frame + its chunk (+ the
        tail weight when final), vectorised over the batch with FunASR's float32 arithmetic.
        Returns each session's fired embeddings (n_i, d) and updates its CIF carry-over."""
        pred = self.model.predictor
        threshold = float(pred.threshold)
        bsz, d = len(live), enc.size(2)
        seq_h, seq_a = [], []
        for b, w in enumerate(live):
            s = w.session
            h0 = s.cif_hidden if s.cif_hidden is not None else enc.new_zeros(d)
            a0 = s.cif_alpha if s.cif_alpha is not None else alphas.new_zeros(())
            hs, ws = [h0[None, :], enc[b, : lens[b]]], [a0.reshape(1), alphas[b, : lens[b]]]
            if w.is_final:
                hs.append(enc.new_zeros((1, d)))
                ws.append(alphas.new_full((1,), float(pred.tail_threshold)))
            seq_h.append(torch.cat(hs))
            seq_a.append(torch.cat(ws))
        steps = [a.numel() for a in seq_a]
        hidden, weight = pad_frames(seq_h), pad_frames(seq_a)
        integrate = alphas.new_zeros(bsz)
        frames = enc.new_zeros((bsz, d))
        fired: list[list[torch.Tensor]] = [[] for _ in live]
        for t in range(max(steps)):
            on = torch.tensor([t < n for n in steps], device=enc.device)
            a, h = weight[:, t], hidden[:, t]
            fire = (a + integrate >= threshold) & on
            for b in torch.nonzero(fire).flatten().tolist():
                fired[b].append(frames[b] + (threshold - integrate[b]) * h[b])
            total = integrate + a
            new_integrate = torch.where(fire, total - threshold, total)
            new_frames = torch.where(fire[:, None], new_integrate[:, None] * h, frames + a[:, None] * h)
            integrate = torch.where(on, new_integrate, integrate)
            frames = torch.where(on[:, None], new_frames, frames)
        embeds = []
        for b, w in enumerate(live):
            s = w.session
            s.cif_alpha = integrate[b].clone()
            s.cif_hidden = (frames[b] / integrate[b] if integrate[b] > 0.0 else frames[b]).clone()
            embeds.append(torch.stack(fired[b]) if fired[b] else enc.new_zeros((0, d)))
        return embeds

    def _decode(
        self, live: list[ChunkWork], enc: torch.Tensor, lens: list[int], embeds: list[torch.Tensor]
    ) -> list[torch.Tensor | None]:
        """ParaformerSANMDecoder.forward_chunk for the sessions whose chunk fired a token (FunASR
        skips the decoder, and leaves its caches alone, for a chunk without one). Returns each
        session's token ids (or None)."""
        rows = [b for b, e in enumerate(embeds) if e.size(0) > 0]
        result: list[torch.Tensor | None] = [None] * len(live)
        if not rows:
            return result
        dec = self.model.decoder
        _, chunk, _ = self.chunk_size
        look_back = self.decoder_chunk_look_back
        sessions = [live[b].session for b in rows]
        n_tok = [embeds[b].size(0) for b in rows]
        mem_lens = [lens[b] for b in rows]
        x = pad_frames([embeds[b] for b in rows])
        memory = enc[rows, : max(mem_lens)]
        bsz, width = x.size(0), x.size(1)
        mem_valid = lengths_mask(mem_lens, memory.size(1), memory.device)
        kernel = self._dec_kernel
        for s in sessions:
            if not s.dec_fsmn:
                s.dec_fsmn = [None] * len(self._dec_fsmn_layers)
                s.dec_k = [None] * len(dec.decoders)
                s.dec_v = [None] * len(dec.decoders)

        def fsmn(li: int, layer: Any, inputs: torch.Tensor) -> torch.Tensor:
            # MultiHeadedAttentionSANMDecoder with FunASR's streaming cache: a first chunk is
            # padded by pad_fn, a later one follows the last kernel-1 inputs of the one before.
            wins = []
            for b, s in enumerate(sessions):
                tok = inputs[b, : n_tok[b]].transpose(0, 1)
                prev = s.dec_fsmn[li]
                if prev is None:
                    prev = inputs.new_zeros((inputs.size(2), self._dec_left_pad))
                wins.append(torch.cat([prev, tok], dim=1).transpose(0, 1))
            win = pad_frames(wins)  # (B, frames, d)
            need = kernel - 1 + width
            if win.size(1) < need:
                win = torch.nn.functional.pad(win, (0, 0, 0, need - win.size(1)))
            win = win.transpose(1, 2)
            for b, s in enumerate(sessions):
                s.dec_fsmn[li] = win[b, :, n_tok[b] : n_tok[b] + kernel - 1].clone()
            return layer.self_attn.fsmn_block(win).transpose(1, 2) + inputs  # type: ignore[no-any-return]

        for li, layer in enumerate(dec.decoders):
            residual = x
            t = layer.feed_forward(layer.norm1(x))
            x = residual + fsmn(li, layer, layer.norm2(t))
            residual = x
            xn = layer.norm3(x)
            attn = layer.src_attn
            q_h, k_h, v_h = attn.forward_qkv(xn, memory)
            key_valid = mem_valid
            k_all, v_all = k_h, v_h
            if look_back > 0:
                ck, cache_valid = stack_right([s.dec_k[li] for s in sessions])
                cv, _ = stack_right([s.dec_v[li] for s in sessions])
                if ck is not None and cv is not None:
                    key_valid = cat_valid(
                        [(cache_valid, bsz, ck.size(2)), (mem_valid, bsz, memory.size(1))], x.device
                    )
                    k_all, v_all = torch.cat([ck, k_h], dim=2), torch.cat([cv, v_h], dim=2)
                keep = look_back * chunk
                for b, s in enumerate(sessions):
                    new_k, new_v = k_h[b, :, : mem_lens[b]], v_h[b, :, : mem_lens[b]]
                    old_k, old_v = s.dec_k[li], s.dec_v[li]
                    if old_k is not None and old_v is not None:
                        new_k, new_v = torch.cat([old_k, new_k], dim=1), torch.cat([old_v, new_v], dim=1)
                    s.dec_k[li], s.dec_v[li] = new_k[:, -keep:].clone(), new_v[:, -keep:].clone()
            x = residual + attend(attn, q_h, k_all, v_all, key_valid)
        for j, layer in enumerate(self._dec_fsmn_layers[len(dec.decoders) :], start=len(dec.decoders)):
            residual = x
            t = layer.feed_forward(layer.norm1(x))
            x = residual + fsmn(j, layer, layer.norm2(t))
        for layer in dec.decoders3:
            x = layer.feed_forward(layer.norm1(x))
        if dec.normalize_before:
            x = dec.after_norm(x)
        scores = torch.log_softmax(dec.output_layer(x), dim=-1)
        for b, row in enumerate(rows):
            result[row] = scores[b, : n_tok[b]].argmax(dim=-1)
        return result

    def _tokens(self, ids: torch.Tensor) -> list[str]:
        m = self.model
        keep = [i for i in ids.tolist() if i not in (m.eos, m.sos, m.blank_id)]
        return list(self.tokenizer.ids2tokens(keep)) if keep else []
