"""Padded, masked batches of per-session tensors for the batched streaming Paraformer.

Sessions at different positions carry look-back caches and chunks of different lengths; these
helpers stack them into one batch (caches right-aligned, frames right-padded) with the masks
that keep the padding out of attention, as ``serve_app.engines.streaming_asr`` explains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def stack_right(caches: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Stack per-session (heads, L_i, d_k) caches into (B, heads, L_max, d_k), right-aligned
    (the newest frame last, as in each session's own cache), and the (B, L_max) mask of real
    frames; the mask is None when every session has L_max frames."""
    lens = [0 if c is None else c.size(1) for c in caches]
    longest = max(lens)
    if longest == 0:
        return None, None
    if min(lens) == longest:
        return torch.stack([c for c in caches if c is not None]), None
    like = next(c for c in caches if c is not None)
    out = like.new_zeros((len(caches), like.size(0), longest, like.size(2)))
    for i, c in enumerate(caches):
        if c is not None and lens[i]:
            out[i, :, longest - lens[i] :] = c
    starts = torch.tensor([longest - n for n in lens], device=like.device)
    valid = torch.arange(longest, device=like.device)[None, :] >= starts[:, None]
    return out, valid


def lengths_mask(lens: Sequence[int], width: int, device: torch.device) -> torch.Tensor | None:
    """(B, width) mask of real frames, None when nothing is padded."""
    if min(lens) == width:
        return None
    return torch.arange(width, device=device)[None, :] < torch.tensor(lens, device=device)[:, None]


def pad_frames(frames: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, T_max, d) from per-session (T_i, d), zero-padded on the right."""
    return torch.nn.utils.rnn.pad_sequence(list(frames), batch_first=True)


def attend(
    attn: Any, q_h: torch.Tensor, k_h: torch.Tensor, v_h: torch.Tensor, key_valid: torch.Tensor | None
) -> torch.Tensor:
    """FunASR's scaled dot-product attention + output projection, masking padded keys."""
    q_h = q_h * attn.d_k ** (-0.5)
    scores = torch.matmul(q_h, k_h.transpose(-2, -1))
    if key_valid is None:
        weights = torch.softmax(scores, dim=-1)
    else:
        masked = ~key_valid[:, None, None, :]
        weights = torch.softmax(scores.masked_fill(masked, -float("inf")), dim=-1).masked_fill(masked, 0.0)
    x = torch.matmul(weights, v_h)
    x = x.transpose(1, 2).contiguous().view(x.size(0), -1, attn.h * attn.d_k)
    return attn.linear_out(x)  # type: ignore[no-any-return]


def cat_valid(
    parts: Sequence[tuple[torch.Tensor | None, int, int]], device: torch.device
) -> torch.Tensor | None:
    """Concatenate (mask or None, batch, width) key masks; None when nothing is masked."""
    if all(m is None for m, _, _ in parts):
        return None
    return torch.cat(
        [m if m is not None else torch.ones((b, w), dtype=torch.bool, device=device) for m, b, w in parts],
        dim=1,
    )
