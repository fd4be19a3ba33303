"""The ``tiny_hubert`` architecture (s3prl's own ``HubertModel``) and its masked-prediction loss.

The prediction head is the model's own ``final_proj`` with ``final_dim = K``: a linear softmax head over
the K clusters (not HuBERT's cosine head over label embeddings, which did not learn at this size; see
``docs/tiny_upstream.md``). It is saved with the weights, so the cluster predictions can be reproduced
from the shipped checkpoint; s3prl's expert ignores it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

N_CLUSTERS = 100

# every dropout of s3prl's fairseq-style encoders off: training and evaluation see the same network
NO_DROPOUT: Dict[str, float] = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
                                    dropout_input=0.0, dropout_features=0.0)

MODEL_CFG: Dict[str, Any] = dict(
    encoder_layers=6,
    encoder_embed_dim=256,
    encoder_ffn_embed_dim=1024,
    encoder_attention_heads=4,
    conv_feature_layers="[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2",
    conv_pos=64,
    conv_pos_groups=16,
    layer_norm_first=True,
    label_rate=50.0,
    final_dim=N_CLUSTERS,
    **NO_DROPOUT,
    feature_grad_mult=1.0,
    mask_prob=0.8,
    mask_length=10,
)
TASK_CFG: Dict[str, Any] = dict(label_rate=50.0, sample_rate=16000, normalize=False)

UNMASKED_WEIGHT = 0.5
FEATURE_PENALTY = 10.0


def build_model(seed: int, model_cfg: Optional[dict] = None, n_clusters: int = N_CLUSTERS,
                share_layers: Optional[int] = None):
    """A freshly initialised ``HubertModel`` (``torch.manual_seed(seed)`` first: same seed, same weights).

    share_layers: G blocks of transformer weights shared by the layers (1 = all layers share one), see
    :func:`~s3prl_redundancy.layer_consistency.share_layers`; ``None``: no sharing.
    """
    import torch
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    cfg = dict(MODEL_CFG if model_cfg is None else model_cfg)
    cfg["final_dim"] = n_clusters
    torch.manual_seed(seed)
    model = HubertModel(
        merge_with_parent(HubertConfig, cfg), merge_with_parent(HubertPretrainingConfig, dict(TASK_CFG)),
        [symbols(n_clusters)],
    )
    if share_layers is not None:
        from ..layer_consistency import share_layers as share

        share(model, share_layers)
    return model, cfg


def symbols(n_clusters: int):
    return [str(i) for i in range(n_clusters)]


def mask_indices(model, batch: int, frames: int, seed_seq) -> np.ndarray:
    """HuBERT's span mask (``compute_mask_indices``, as ``HubertModel.apply_mask``), drawn from a
    numpy RNG seeded by ``seed_seq`` (the global numpy state is saved and restored)."""
    from s3prl.upstream.hubert.hubert_model import compute_mask_indices

    state = np.random.get_state()
    try:
        np.random.seed(np.random.SeedSequence(seed_seq).generate_state(1)[0])
        return compute_mask_indices((batch, frames), None, model.mask_prob, model.mask_length,
                                    model.mask_selection, model.mask_other, min_masks=2,
                                    no_overlap=model.no_mask_overlap, min_space=model.mask_min_space)
    finally:
        np.random.set_state(state)


def masked_prediction(model, wav, targets, mask, autocast_dtype=None, depth: Optional[int] = None):
    """Loss and statistics of one batch.

    wav: (B, samples) float; targets: (B, T) long cluster indices aligned with the conv frames
    (extra frames on either side are trimmed to the shorter); mask: (B, T) bool numpy or tensor.
    loss = CE(masked) + 0.5 CE(unmasked) + 10 * mean(conv features^2).
    depth: predict from the output of the first ``depth`` layers through the encoder's exit layer norm
    (layer-consistent training, :func:`~s3prl_redundancy.layer_consistency.encode_to_depth`); all if ``None``.
    """
    from ..layer_consistency import encode_to_depth

    import contextlib

    import torch
    import torch.nn.functional as F

    device = wav.device
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    with ctx:
        features = model.forward_features(wav)  # (B, C, T)
        T = min(features.size(2), targets.size(1))
        features, targets = features[..., :T], targets[:, :T]
        mask = torch.as_tensor(mask, device=device)[:, :T]
        features_pen = features.float().pow(2).mean()
        x = model.layer_norm(features.transpose(1, 2))
        if model.post_extract_proj is not None:
            x = model.post_extract_proj(x)
        x = encode_to_depth(model, apply_mask(model, x, mask), depth)
        logits = prediction_logits(model, x, LINEAR_HEAD)  # (B, T, K)
    flat_logits, flat_t, flat_m = logits.reshape(-1, logits.size(-1)), targets.reshape(-1), mask.reshape(-1)
    ce = F.cross_entropy(flat_logits, flat_t, reduction="none")
    loss_m = ce[flat_m].mean()
    loss_u = ce[~flat_m].mean() if (~flat_m).any() else ce.new_zeros(())
    loss = loss_m + UNMASKED_WEIGHT * loss_u + FEATURE_PENALTY * features_pen
    with torch.no_grad():
        correct = flat_logits.argmax(-1) == flat_t
        acc_m = correct[flat_m].float().mean()
        acc_u = correct[~flat_m].float().mean() if (~flat_m).any() else correct.new_zeros((), dtype=torch.float)
    return loss, {"loss": float(loss.detach()), "ce_masked": float(loss_m.detach()), "ce_unmasked": float(loss_u.detach()),
                  "acc_masked": float(acc_m), "acc_unmasked": float(acc_u), "features_pen": float(features_pen.detach()),
                  "mask_frac": float(flat_m.float().mean())}


def apply_mask(model, x, mask):
    """HuBERT's masking of the encoder input ``x`` (B, T, C): masked frames (``mask`` (B, T) True) become the
    learned ``mask_emb``."""
    import torch

    return torch.where(mask.unsqueeze(-1), model.mask_emb.to(x.dtype), x)


LINEAR_HEAD = "linear"  # pretrain-tiny's head: ``final_proj`` has one output per cluster
COSINE_HEAD = "cosine"  # HuBERT's: cosine of ``final_proj(x)`` with each label embedding, over ``logit_temp``


def head_kind(ckpt) -> str:
    """The prediction head a ``hubert_local`` checkpoint was trained with: ``pretrain-tiny``'s checkpoints
    (key ``tiny_hubert``) use :data:`LINEAR_HEAD`, every other HuBERT :data:`COSINE_HEAD`."""
    return LINEAR_HEAD if "tiny_hubert" in ckpt else COSINE_HEAD


def prediction_logits(model, x, head: str):
    """(..., K) float32 class scores of the frames ``x`` (..., C) from the model's prediction head ``head``."""
    import torch.nn.functional as F

    proj = model.final_proj(x).float()
    if head == LINEAR_HEAD:
        return proj
    embs = model.label_embs_concat.float()  # (K, final_dim): one target set (s3prl's HubertModel)
    # normalised vectors and one matmul: the cosine of every frame with every class without a (N, K, D) tensor
    return F.normalize(proj, dim=-1) @ F.normalize(embs, dim=-1).T / model.logit_temp


def target_classes(ckpt) -> int:
    """How many target classes the prediction head of the ``hubert_local`` checkpoint ``ckpt`` scores."""
    if head_kind(ckpt) == LINEAR_HEAD:
        return int(ckpt["model_cfg"]["final_dim"])
    return len(ckpt["dictionaries_symbols"][0])


def _portable(state, half: bool):
    import torch

    return {k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu()).clone()
            for k, v in state.items()}


def hubert_local_checkpoint(model, model_cfg: dict, n_clusters: int, half: bool = True, extra: Optional[dict] = None,
                            layer_consistency: Optional[dict] = None):
    """The model as s3prl's ``hubert_local`` checkpoint (plain dicts; fp16 tensors when ``half``:
    ``load_state_dict`` copies them into the fp32 model).

    A model with shared layers (``layer_consistency["share_layers"]`` = G blocks) is written *expanded*
    (one copy per layer, what s3prl's loader reads) plus its compact state dict and configuration under
    the extra keys of :mod:`~s3prl_redundancy.layer_consistency`.
    """
    from .. import layer_consistency as lc

    state = model.state_dict()
    groups = (layer_consistency or {}).get("share_layers")
    weights = _portable(state, half)
    if groups is not None:
        weights = lc.expand_shared_state(weights, int(model_cfg["encoder_layers"]), groups)
    ckpt = {"task_cfg": dict(TASK_CFG), "model_cfg": dict(model_cfg), "model_weight": weights,
            "dictionaries_symbols": [symbols(n_clusters)]}
    if extra:
        ckpt["tiny_hubert"] = extra
    if layer_consistency is not None:
        ckpt[lc.META_KEY] = dict(layer_consistency)
        if groups is not None:
            ckpt[lc.COMPACT_KEY] = {k: v for k, v in _portable(state, half).items() if k.startswith(lc.LAYERS_PREFIX)}
    return ckpt
