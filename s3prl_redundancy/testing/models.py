"""Small randomly initialised HuBERT, wav2vec 2.0 and WavLM models for tests and examples, and models with
known structure (:func:`make_identity_layers`).

Each builder uses s3prl's own model classes and saves the model in that family's real *local*
checkpoint format (the format that s3prl's ``hubert_local`` / ``wav2vec2_local`` / ``wavlm_local``
entries load), so tests exercise the same loading code as the released weights. Nothing downloads.
Seeds are fixed: the same call gives the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

import torch

from ..io import atomic_torch_save
from ..pretrain.model import NO_DROPOUT

TINY_CONV = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"  # 320x down-sampling, as the real models

_ENCODER = dict(
    encoder_layers=4,
    encoder_embed_dim=32,
    encoder_ffn_embed_dim=64,
    encoder_attention_heads=2,
    conv_feature_layers=TINY_CONV,
    conv_pos=16,
    conv_pos_groups=4,
    **NO_DROPOUT,
)

FAMILIES = ("hubert", "wav2vec2", "wavlm")

# The Base architecture of all three families (12 layers, 768 dims, 12 heads, FFN 3072, 512-channel CNN),
# for speed and size benchmarks with random weights: build_checkpoint(family, num_layers=12, **BASE_OVERRIDES)
BASE_OVERRIDES = dict(
    encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072,
    encoder_attention_heads=12,
    conv_feature_layers="[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2",
    conv_pos=128,
    conv_pos_groups=16,
)


def hubert_checkpoint(num_layers: int = 4, seed: int = 0, **overrides) -> Dict[str, Any]:
    """A HuBERT checkpoint dict in s3prl's converted format (``hubert_local``)."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    model_cfg = dict(_ENCODER, encoder_layers=num_layers, label_rate=50.0, final_dim=16)
    model_cfg.update(overrides)
    task_cfg = dict(label_rate=50.0, sample_rate=16000, normalize=False)
    symbols = [[str(i) for i in range(8)]]
    torch.manual_seed(seed)
    model = HubertModel(
        merge_with_parent(HubertConfig, model_cfg), merge_with_parent(HubertPretrainingConfig, task_cfg), symbols
    )
    return {
        "task_cfg": task_cfg,
        "model_cfg": model_cfg,
        "model_weight": model.state_dict(),
        "dictionaries_symbols": symbols,
    }


def wav2vec2_checkpoint(num_layers: int = 4, seed: int = 0, **overrides) -> Dict[str, Any]:
    """A wav2vec 2.0 checkpoint dict in s3prl's converted format (``wav2vec2_local``)."""
    from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig, Wav2Vec2Config, Wav2Vec2Model
    from s3prl.upstream.utils import merge_with_parent

    model_cfg = dict(_ENCODER, encoder_layers=num_layers, final_dim=16, latent_vars=8, latent_groups=2, latent_dim=0)
    model_cfg.update(overrides)
    task_cfg = dict(sample_rate=16000, normalize=False)
    torch.manual_seed(seed)
    model = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, model_cfg))
    merge_with_parent(AudioPretrainingConfig, task_cfg)  # validates the task config like the loader does
    return {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict()}


def wavlm_checkpoint(num_layers: int = 4, seed: int = 0, **overrides) -> Dict[str, Any]:
    """A WavLM checkpoint dict in the released format ``{"cfg": dict, "model": state_dict}`` (``wavlm_local``)."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = dict(
        _ENCODER,
        encoder_layers=num_layers,
        relative_position_embedding=True,
        num_buckets=32,
        max_distance=64,
        gru_rel_pos=True,
        normalize=False,
    )
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = WavLM(WavLMConfig(cfg))
    return {"cfg": cfg, "model": model.state_dict()}


_BUILDERS = {"hubert": hubert_checkpoint, "wav2vec2": wav2vec2_checkpoint, "wavlm": wavlm_checkpoint}


def build_checkpoint(family: str, num_layers: int = 4, seed: int = 0, **overrides) -> Dict[str, Any]:
    """A checkpoint dict of ``family`` (one of :data:`FAMILIES`) with random weights."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return _BUILDERS[family](num_layers=num_layers, seed=seed, **overrides)


def save_tiny_checkpoint(family: str, path, num_layers: int = 4, seed: int = 0, **overrides) -> Path:
    """Build a small random model of ``family`` and save it where s3prl's ``<family>_local`` entry loads it."""
    return atomic_torch_save(build_checkpoint(family, num_layers=num_layers, seed=seed, **overrides), Path(path))


def make_identity_layers(ckpt: Mapping[str, Any], layers: Sequence[int], keep_biases: bool = False) -> Dict[str, Any]:
    """A copy of ``ckpt`` (pre-layer-norm) whose ``layers`` compute ``x`` (or ``x + c`` with ``keep_biases``)."""
    from ..families import FAMILIES, detect_family

    fam = FAMILIES[detect_family(ckpt)]
    cfg = ckpt[fam.config_key]
    if not cfg.get("layer_norm_first", False):
        raise ValueError("identity layers need a pre-layer-norm model (layer_norm_first=True): a post-LN layer normalises its output")
    import torch

    g = torch.Generator().manual_seed(1234)
    out = dict(ckpt)
    weights = dict(fam.weights(ckpt))
    for l in layers:
        for name in ("self_attn.out_proj", "fc2"):
            w = f"encoder.layers.{l}.{name}.weight"
            weights[w] = weights[w].clone().zero_()
            if not keep_biases:
                weights[f"encoder.layers.{l}.{name}.bias"] = weights[f"encoder.layers.{l}.{name}.bias"].clone().zero_()
            else:
                b = f"encoder.layers.{l}.{name}.bias"
                weights[b] = torch.randn(weights[b].shape, generator=g) * 0.5
    out[fam.weights_key] = weights
    return out
