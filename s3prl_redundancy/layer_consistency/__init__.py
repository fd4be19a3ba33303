"""Layer consistency (arXiv 2105.00812): shared transformer layers, sampled depth, shallow layer inference.

Three pieces, all on s3prl's own fairseq-style encoders of HuBERT, wav2vec 2.0 and WavLM
(``model.encoder.layers``, pre-LN ``model.encoder.layer_norm``):

- **Sharing** (:func:`share_layers`): the ``L`` layers are served by ``G`` blocks of weights
  (ALBERT-style; ``G = 1`` shares everything). Layer ``i`` uses block ``i * G // L`` (consecutive groups),
  so the model's ``state_dict`` holds ``G`` layers' weights. :func:`expand_shared_state` writes the
  ordinary per-layer state dict that s3prl's ``hubert_local`` loader reads; :func:`compact_state` goes back.
- **Depth sampling** (:func:`sample_depth`): the depth of each training step is drawn uniformly from
  ``[lo, hi]``, a function of ``(seed, step)`` only, like every other draw of the training loops.
- **Exit at depth k** (:func:`encode_to_depth`): the first ``k`` layers, then the encoder's final layer norm
  (the pre-LN model's exit norm): what a shallow-layer-inference upstream computes.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from ..errors import UserInputError

META_KEY = "layer_consistency"  # extra key of an exported checkpoint: the sharing / depth configuration
COMPACT_KEY = "layer_consistency_shared_weight"  # extra key: the compact (shared) state dict, fp16
LAYERS_PREFIX = "encoder.layers."
DEPTH_STREAM = 3  # the SeedSequence stream of the depth draw: batches use [seed, step], masks [seed, step, 1]


def _torch_nn():
    import torch.nn as nn

    return nn


def block_of(layer: int, n_layers: int, groups: int) -> int:
    """The weight block that layer ``layer`` (0-based) of ``n_layers`` uses when ``groups`` blocks are shared."""
    return layer * groups // n_layers


def parse_share_layers(value, n_layers: int, argument: str = "share_layers") -> Optional[int]:
    """``None`` / ``"none"`` -> no sharing; ``"all"`` -> 1 block; an integer G (1 <= G <= n_layers) -> G blocks."""
    if value is None or str(value).lower() == "none":
        return None
    if str(value).lower() == "all":
        return 1
    try:
        groups = int(value)
    except ValueError:
        raise UserInputError(f"must be 'all', 'none' or a number of groups, got {value!r}", argument=argument) from None
    if not 1 <= groups <= n_layers:
        raise UserInputError(f"must be between 1 and the {n_layers} layers, got {groups}", argument=argument)
    return None if groups == n_layers else groups


def parse_depth_range(value, n_layers: int, argument: str = "depth_range") -> Optional[Tuple[int, int]]:
    """``"LO,HI"`` (or a pair) -> ``(lo, hi)`` with ``1 <= lo <= hi <= n_layers``; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        lo, hi = (int(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (ValueError, TypeError):
        raise UserInputError(f"must be two depths LO,HI, got {value!r}", argument=argument) from None
    if not 1 <= lo <= hi <= n_layers:
        raise UserInputError(f"must satisfy 1 <= LO <= HI <= {n_layers} (the layers), got {lo},{hi}", argument=argument)
    return lo, hi


def sample_depth(seed: int, step: int, depth_range: Tuple[int, int]) -> int:
    """The depth of training step ``step``: uniform on ``[lo, hi]``, a function of ``(seed, step)`` only."""
    lo, hi = depth_range
    return int(np.random.default_rng([seed, step, DEPTH_STREAM]).integers(lo, hi + 1))


class SharedLayers(_torch_nn().Module):
    """A stand-in for ``encoder.layers`` (a ``ModuleList``) whose ``n_layers`` layers use ``groups`` weight blocks.

    Indexing, ``len`` and iteration give the layers in order (the same module for layers of one group),
    so s3prl's ``TransformerEncoder.extract_features`` runs it unchanged; the state dict holds
    ``blocks.<g>.*`` only.
    """

    def __init__(self, blocks: Iterable, n_layers: int):
        super().__init__()
        self.blocks = _torch_nn().ModuleList(blocks)
        self.n_layers = int(n_layers)

    def __len__(self) -> int:
        return self.n_layers

    def __getitem__(self, i: int):
        if isinstance(i, slice):
            return [self[j] for j in range(self.n_layers)[i]]
        if not -self.n_layers <= i < self.n_layers:
            raise IndexError(i)
        return self.blocks[block_of(i % self.n_layers, self.n_layers, len(self.blocks))]

    def __iter__(self):
        return (self[i] for i in range(self.n_layers))


def share_layers(model, groups: int):
    """Make ``model.encoder.layers`` a :class:`SharedLayers` of ``groups`` blocks (in place; returns ``model``).

    Block ``g`` starts as a copy of the first layer of its group, so sharing a trained model keeps that layer.
    """
    layers = list(model.encoder.layers)
    n = len(layers)
    if not 1 <= groups <= n:
        raise ValueError(f"groups must be between 1 and {n}, got {groups}")
    firsts = [min(i for i in range(n) if block_of(i, n, groups) == g) for g in range(groups)]
    model.encoder.layers = SharedLayers([layers[i] for i in firsts], n)
    return model


def expand_shared_state(state: Mapping[str, "object"], n_layers: int, groups: int) -> Dict[str, "object"]:
    """A shared model's state dict as the per-layer state dict of the unshared architecture (tensors cloned)."""
    out = {}
    for key, value in state.items():
        if not key.startswith(LAYERS_PREFIX + "blocks."):
            out[key] = value
            continue
        g, rest = key[len(LAYERS_PREFIX + "blocks."):].split(".", 1)
        for i in range(n_layers):
            if block_of(i, n_layers, groups) == int(g):
                out[f"{LAYERS_PREFIX}{i}.{rest}"] = value.clone()
    return out


def compact_state(state: Mapping[str, "object"], n_layers: int, groups: int) -> Dict[str, "object"]:
    """The inverse of :func:`expand_shared_state`: keeps the first layer of each group as ``blocks.<g>``."""
    out = {}
    for key, value in state.items():
        if not key.startswith(LAYERS_PREFIX) or key.startswith(LAYERS_PREFIX + "blocks."):
            out[key] = value
            continue
        i, rest = key[len(LAYERS_PREFIX):].split(".", 1)
        i = int(i)
        g = block_of(i, n_layers, groups)
        if i == min(j for j in range(n_layers) if block_of(j, n_layers, groups) == g):
            out[f"{LAYERS_PREFIX}blocks.{g}.{rest}"] = value
    return out


def encode_to_depth(model, x, depth: Optional[int] = None, padding_mask=None):
    """The encoder on ``x`` (B, T, C) through its first ``depth`` layers (all if ``None``), then the exit norm.

    ``model`` is s3prl's ``HubertModel``, ``Wav2Vec2Model`` or ``WavLM``: their encoders run the positional
    convolution, the layers (WavLM's pass its relative position bias from layer to layer inside
    ``extract_features``) and stop after layer ``tgt_layer``, which is passed by keyword because WavLM's
    ``extract_features`` takes a ``streaming_mask`` before it. For a pre-LN encoder (``layer_norm_first``) the
    exit norm is ``encoder.layer_norm``, as after the last layer of the full model; a post-LN encoder
    normalises inside each layer and has no exit norm.
    """
    encoder = model.encoder
    n = len(encoder.layers)
    if depth is None or depth == n:
        x, _ = encoder(x, padding_mask=padding_mask)
        return x
    if not 1 <= depth <= n:
        raise ValueError(f"depth must be between 1 and {n}, got {depth}")
    x, _ = encoder.extract_features(x, padding_mask=padding_mask, tgt_layer=depth - 1)
    return encoder.layer_norm(x) if encoder.layer_norm_first else x


def conv_features(model, wav):
    """The CNN front end on ``wav`` (B, S) -> (B, C, T), with the gradient rule of s3prl's models: none when
    ``feature_grad_mult`` is 0, scaled by it otherwise (HuBERT's ``forward_features``; inline in the others)."""
    import torch
    from s3prl.upstream.wav2vec2.wav2vec2_model import GradMultiply

    mult = float(getattr(model, "feature_grad_mult", 1.0))
    if mult <= 0:
        with torch.no_grad():
            return model.feature_extractor(wav)
    features = model.feature_extractor(wav)
    return GradMultiply.apply(features, mult) if mult != 1.0 else features


def transformer_input(model, wav, padding_mask=None):
    """The encoder input for ``wav`` (B, S) of s3prl's ``HubertModel``, ``Wav2Vec2Model`` or ``WavLM``: CNN
    features, layer norm, the frame padding mask, wav2vec 2.0's crop to ``crop_seq_to_multiple``,
    ``post_extract_proj`` (no masking, no input dropout): what each model's forward feeds ``encoder``.

    ``padding_mask`` (B, S), True at padded samples (at the end, as s3prl's experts pad), becomes the frame
    mask by the family's rule (:class:`~s3prl_redundancy.distill.front_end.FrameGrid`; wav2vec 2.0 has none
    when nothing is padded). The waveform is used as given: normalising it is the caller's part, as in
    s3prl's experts. Returns ``(x (B, T, C), features (B, C, T) before the crop, padding_mask or None)``.
    """
    from ..distill.front_end import FrameGrid
    from ..families import MASK_CONV_LENGTHS, family_of_model

    family = family_of_model(model)
    if getattr(model, "input_quantizer", None) is not None:
        raise ValueError("a wav2vec 2.0 model with a quantised input (quantize_input) has another front end")
    features = conv_features(model, wav)
    x = model.layer_norm(features.transpose(1, 2))
    grid = FrameGrid.from_model(model, family.name)
    if padding_mask is not None and family.frame_mask == MASK_CONV_LENGTHS and not padding_mask.any():
        padding_mask = None  # wav2vec 2.0 makes no frame mask when no sample is padded
    if padding_mask is not None:
        lengths = (~padding_mask.bool()).sum(-1)
        padding_mask = grid.crop(grid.frame_padding_mask(lengths, wav.size(-1), x.size(1)))
    x = grid.crop(x)
    if model.post_extract_proj is not None:
        x = model.post_extract_proj(x)
    return x, features, padding_mask


def n_parameters(model) -> int:
    """Distinct parameters (a shared block counts once)."""
    return sum(p.numel() for p in model.parameters())
