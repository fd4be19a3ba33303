"""Attention-head pruning: score every head, remove the least important ones, shrink the projections.

Importance of head ``i`` of a layer (higher = more important):

* ``output-norm`` (default; needs ``--data``): the mean over frames of ``|| o_i W_out[:, i] ||``, the norm of
  the head's contribution to the attention output (gradient-free, measured in one forward pass);
* ``weight-norm`` (no data): the L1 norm of the head's rows of ``q_proj``, ``k_proj`` and ``v_proj``
  (with biases), the criterion of fairseq's ``MultiheadAttention._get_reserve_head_index``.

Scores are divided by their layer's total before heads are ranked across layers, so a layer with large
activations does not keep all its heads at the expense of others; every layer keeps at least
``min_per_layer`` heads. Removing a head deletes its ``d`` rows of ``q_proj``/``k_proj``/``v_proj`` and its
``d`` columns of ``out_proj`` (``4 d D + 3 d`` parameters per head, and per frame ``4 d D`` MACs plus
``2 d T`` in the attention products). WavLM: the head's gate scale ``grep_a`` goes too, and the relative
position bias table keeps the columns of heads still used by some layer.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import UserInputError
from .structure import CompressedSelfAttention, LinearBridge, convert_attention, effective_weight

IMPORTANCE = ("output-norm", "weight-norm")


def attention_modules(model) -> Dict[int, CompressedSelfAttention]:
    """``{position: attention}`` of a converted model (bridges skipped)."""
    out = {}
    for pos, layer in enumerate(model.encoder.layers):
        if isinstance(layer, LinearBridge):
            continue
        if not isinstance(layer.self_attn, CompressedSelfAttention):
            raise ValueError("call structure.convert_attention(model, family) first")
        out[pos] = layer.self_attn
    return out


def weight_norm_importance(model) -> Dict[int, Dict[int, float]]:
    scores = {}
    for pos, attn in attention_modules(model).items():
        d = attn.head_dim
        per_head = {}
        for i, head in enumerate(attn.head_ids):
            rows = slice(i * d, (i + 1) * d)
            total = 0.0
            for name in ("q_proj", "k_proj", "v_proj"):
                proj = getattr(attn, name)
                total += float(effective_weight(proj).detach()[rows].abs().sum())
                bias = proj.up.bias if hasattr(proj, "up") else proj.bias
                if bias is not None:
                    total += float(bias.detach()[rows].abs().sum())
            per_head[head] = total
        scores[pos] = per_head
    return scores


def output_norm_importance(upstream, family: str, dataset, batch_size: int = 4, progress: bool = False) -> Dict[int, Dict[int, float]]:
    """Mean contribution norm of every head over the frames of ``dataset`` (one forward pass of ``upstream``,
    whose attention modules are converted in place, with the same outputs)."""
    from .statistics import batches

    convert_attention(upstream.model, family)
    attns = attention_modules(upstream.model)
    for attn in attns.values():
        attn.start_recording()
    try:
        it = batches(dataset, batch_size)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="head importance", unit="batch")
        with torch.inference_mode():
            for _, _, wavs in it:
                upstream(wavs)
    finally:
        records = {pos: attn.stop_recording() for pos, attn in attns.items()}
    out = {}
    for pos, rec in records.items():
        frames = float(rec["frames"])
        if frames <= 0:
            raise UserInputError("`data` gave no frames to measure head importance on")
        out[pos] = {h: float(rec["norm_sum"][i]) / frames for i, h in enumerate(attns[pos].head_ids)}
    return out


def select_heads(
    importance: Mapping[int, Mapping[int, float]],
    drop: Optional[int] = None,
    ratio: Optional[float] = None,
    min_per_layer: int = 1,
) -> Dict[str, Any]:
    """Which heads to remove: the ``drop`` (or ``round(ratio * total)``) with the lowest layer-normalised
    importance, keeping ``min_per_layer`` per layer. Returns ``keep`` ``{position: [head ids]}``, ``removed``
    ``[(position, head, normalised score)]`` in removal order and ``normalised`` scores."""
    if (drop is None) == (ratio is None):
        raise UserInputError("head pruning needs exactly one of `heads_drop` N or `heads_ratio` R")
    total = sum(len(v) for v in importance.values())
    if ratio is not None:
        if not 0.0 < ratio < 1.0:
            raise UserInputError(f"`heads_ratio` is the fraction of heads to remove, strictly between 0 and 1; got {ratio}")
        drop = int(round(ratio * total))
    if min_per_layer < 1:
        raise UserInputError(f"`min_heads_per_layer` must be at least 1, got {min_per_layer}")
    removable = total - min_per_layer * len(importance)
    if drop is None or drop <= 0:
        raise UserInputError(f"the head target removes no head (of {total}); ask for at least one")
    if drop > removable:
        raise UserInputError(
            f"cannot remove {drop} of {total} heads: every one of the {len(importance)} layers keeps at least "
            f"{min_per_layer} (at most {removable} can go)"
        )
    normalised = {}
    for pos, heads in importance.items():
        values = np.array(list(heads.values()), dtype=np.float64)
        if not np.isfinite(values).all():
            raise UserInputError(f"head importance of layer position {pos} is not finite; check `data`")
        s = values.sum()
        normalised[pos] = {h: (v / s if s > 0 else 1.0 / len(heads)) for h, v in heads.items()}
    candidates = sorted(((score, pos, h) for pos, heads in normalised.items() for h, score in heads.items()),
                        key=lambda t: (t[0], -t[1], t[2]))
    left = {pos: len(heads) for pos, heads in importance.items()}
    removed = []
    for score, pos, h in candidates:
        if len(removed) == drop:
            break
        if left[pos] <= min_per_layer:
            continue
        left[pos] -= 1
        removed.append((pos, h, score))
    gone = {(p, h) for p, h, _ in removed}
    keep = {pos: [h for h in heads if (pos, h) not in gone] for pos, heads in importance.items()}
    return {"keep": keep, "removed": removed, "normalised": normalised}


def prune_heads(model, keep: Mapping[int, Sequence[int]]) -> Dict[str, Any]:
    """Physically remove heads from a converted model; ``keep``: ``{position: kept head ids}``."""
    attns = attention_modules(model)
    before = {pos: list(a.head_ids) for pos, a in attns.items()}
    for pos, heads in keep.items():
        if pos not in attns:
            raise ValueError(f"position {pos} has no attention layer")
        if list(heads) != attns[pos].head_ids:
            attns[pos].keep_heads(heads)
    if attns and next(iter(attns.values())).relative_position:
        used = sorted({h for a in attns.values() for h in a.head_ids})
        for a in attns.values():
            a.keep_bias_columns(used)
    return {"heads_before": before, "heads_after": {pos: list(a.head_ids) for pos, a in attns.items()}}
