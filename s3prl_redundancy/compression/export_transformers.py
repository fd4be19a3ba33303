"""A layer-pruned s3prl HuBERT / wav2vec 2.0 / WavLM checkpoint in the ``transformers`` format.

The s3prl local checkpoint's config becomes the matching ``transformers`` config (``HubertConfig`` /
``Wav2Vec2Config`` / ``WavLMConfig``; ``num_hidden_layers`` = the kept layer count) and every weight is
mapped by name:

=============================================  ===========================================================
s3prl (fairseq layout)                          transformers
=============================================  ===========================================================
``feature_extractor.conv_layers.i.0``           ``feature_extractor.conv_layers.i.conv``
``...conv_layers.0.2`` (group norm, "default")  ``...conv_layers.0.layer_norm`` (``feat_extract_norm=group``)
``...conv_layers.i.2.1`` (layer norm mode)      ``...conv_layers.i.layer_norm`` (``feat_extract_norm=layer``)
``layer_norm`` / ``post_extract_proj``          ``feature_projection.layer_norm`` / ``.projection`` (identity
                                                when s3prl has no projection: conv width = model width)
``encoder.pos_conv.0.weight_g`` / ``weight_v``  ``encoder.pos_conv_embed.conv`` weight norm ``g`` / ``v``
                                                (``parametrizations.weight.original0/1``), same ``dim=2``
``encoder.layer_norm``                          ``encoder.layer_norm``
``encoder.layers.i.self_attn.{q,k,v,out}_proj`` ``encoder.layers.i.attention.{q,k,v,out}_proj``
``...self_attn_layer_norm`` / ``final_layer_norm``  ``...layer_norm`` / ``final_layer_norm``
``...fc1`` / ``fc2``                            ``...feed_forward.intermediate_dense`` / ``output_dense``
WavLM ``...relative_attention_bias``            ``...attention.rel_attn_embed`` (layer 0 only, in both)
WavLM ``...grep_linear`` / ``grep_a``           ``...attention.gru_rel_pos_linear`` / ``gru_rel_pos_const``
``mask_emb``                                    ``masked_spec_embed``
=============================================  ===========================================================

Every ``transformers`` parameter must be filled and every s3prl inference parameter used (pre-training
heads are dropped). The export is then *checked*: the saved folder is loaded back with
``from_pretrained`` and its ``hidden_states`` and ``last_hidden_state`` compared with s3prl's expert on test
audio (see :func:`compare_with_s3prl` for the one difference in conventions); a mismatch means nothing is
written. Not exportable (clear error): checkpoints with removed attention heads,
factorised layers or bridges (no ``transformers`` equivalent), WavLM without gated relative position
bias, and position convolutions of depth > 1.

The inverse, a ``transformers`` folder to an s3prl local checkpoint, is
:mod:`s3prl_redundancy.transformers_import` (the same name mapping from :mod:`s3prl_redundancy.families`).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional

import torch

from ..errors import UserInputError
from ..families import FAMILIES, HF_FEATURE_PROJECTION, HF_POS_CONV_WEIGHT_NORM
from .structure import META_KEY, family_of, model_config, structure_of

def hf_config(ckpt: Mapping[str, Any]):
    """The ``transformers`` config of an s3prl local checkpoint."""
    import transformers

    family = FAMILIES[family_of(ckpt)]
    cfg = model_config(ckpt)
    family.check_hf_exportable(cfg)
    return getattr(transformers, family.hf_config_class)(**family.hf_config_kwargs(cfg))


def map_weights(ckpt: Mapping[str, Any], hf_keys: Mapping[str, torch.Size]) -> Dict[str, torch.Tensor]:
    """The ``transformers`` state dict for an s3prl checkpoint (``hf_keys``: the target's names and shapes)."""
    family = FAMILIES[family_of(ckpt)]
    cfg = model_config(ckpt)
    w = family.weights(ckpt)
    out: Dict[str, torch.Tensor] = {}
    used = set()

    def take(src: str, dst: str) -> None:
        if src not in w:
            raise UserInputError(f"export: the checkpoint has no {src} (needed for {dst})")
        out[dst] = w[src]
        used.add(src)

    for name in family.hf_weight_names(cfg, list(w)):
        if name.required or name.s3prl in w:
            take(name.s3prl, name.hf)
    if "post_extract_proj.weight" not in w:  # s3prl applies no projection when the conv width equals the model width
        dim = int(cfg.encoder_embed_dim)
        out[HF_FEATURE_PROJECTION[0]], out[HF_FEATURE_PROJECTION[1]] = torch.eye(dim), torch.zeros(dim)
    for s3prl_name, hf_names in HF_POS_CONV_WEIGHT_NORM:  # the target's convention (depends on the torch version)
        take(s3prl_name, next((h for h in hf_names if h in hf_keys), hf_names[0]))
    missing = sorted(set(hf_keys) - set(out))
    extra = sorted(set(out) - set(hf_keys))
    unused = sorted(k for k in w if k.startswith(("feature_extractor.", "layer_norm.", "post_extract_proj.", "encoder.")) and k not in used)
    if missing or extra or unused:
        raise UserInputError(f"export: weight mapping incomplete (transformers missing {missing[:5]}, unexpected {extra[:5]}, "
                             f"s3prl unused {unused[:5]}); this checkpoint's layout is not supported")
    for k, v in out.items():
        if tuple(v.shape) != tuple(hf_keys[k]):
            raise UserInputError(f"export: {k} has shape {tuple(v.shape)} in the checkpoint, {tuple(hf_keys[k])} in transformers")
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def build_hf_model(ckpt: Mapping[str, Any]):
    import transformers

    family = family_of(ckpt)
    if structure_of(ckpt) is not None:
        raise UserInputError(
            "export: this checkpoint has removed attention heads, factorised (low-rank) layers or linear bridges; "
            "transformers' HuBERT / wav2vec 2.0 / WavLM have one head count for every layer and no such layers, so "
            "only layer-pruned (and magnitude-pruned) checkpoints can be exported; load this one with "
            f"-u compressed_{family} instead"
        )
    config = hf_config(ckpt)
    model = getattr(transformers, FAMILIES[family].hf_model_class)(config).eval()
    target = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(map_weights(ckpt, target), strict=True)
    return model


def compare_with_s3prl(ckpt: Mapping[str, Any], hf_model, wavs: Optional[List[torch.Tensor]] = None) -> Dict[str, Any]:
    """Max absolute difference, per utterance, of every ``transformers`` hidden state and its
    ``last_hidden_state`` against s3prl.

    ``transformers`` 5 records ``hidden_states`` as the input of every layer plus the raw output of the last
    one, and applies a pre-LN model's final layer norm only to ``last_hidden_state``; s3prl's last hidden state
    is the normalised encoder output. So ``hidden_states`` are compared with the boundary states (layer
    inputs + raw last output) and ``last_hidden_state`` with s3prl's last hidden state; for post-LN models the
    two coincide."""
    from .statistics import boundary_states
    from .structure import make_upstream

    family = family_of(ckpt)
    if wavs is None:
        g = torch.Generator().manual_seed(0)
        wavs = [torch.randn(n, generator=g) * 0.1 for n in (16000, 23456)]
    expert = make_upstream(ckpt)
    normalize = FAMILIES[family].normalizes_waveform(ckpt)
    worst, per_state = 0.0, None
    with torch.inference_mode():
        for wav in wavs:
            ref = expert([wav])["hidden_states"]
            raw = boundary_states(expert, [wav])
            x = torch.nn.functional.layer_norm(wav, wav.shape) if normalize else wav
            result = hf_model(x[None], output_hidden_states=True)
            ours = result.hidden_states
            if len(ours) != len(raw):
                raise UserInputError(f"export check: transformers gives {len(ours)} hidden states, s3prl {len(raw)}")
            diffs = [float((a - b).abs().max()) for a, b in zip(raw, ours)]
            diffs.append(float((result.last_hidden_state - ref[-1]).abs().max()))
            per_state = diffs if per_state is None else [max(p, d) for p, d in zip(per_state, diffs)]
            worst = max(worst, max(diffs))
    return {"max_abs_diff": worst, "per_hidden_state_then_last_hidden_state": per_state, "utterances": len(wavs),
            "input_normalized": normalize}


EXPORT_NAMES = ("config.json", "model.safetensors", "preprocessor_config.json", "s3prl_redundancy_export.json")


def export(ckpt: Mapping[str, Any], out_dir, force: bool = False, atol: float = 1e-4) -> Dict[str, Any]:
    """Write the ``transformers`` model (``save_pretrained``) and its feature-extractor config into ``out_dir``
    (a path or a checked :class:`~s3prl_redundancy.io.OutputDir` of the command ``export``), after checking
    the reloaded folder against s3prl. Atomic: a temporary folder inside ``out_dir`` is filled and checked,
    then its files are moved in (:func:`~s3prl_redundancy.io.atomic_files`)."""
    import transformers

    from ..io import atomic_files, atomic_write_text
    from .compress import output_dir

    if not atol >= 0:  # a negative (or NaN) tolerance would fail the check after the whole export
        raise UserInputError(f"must be a difference >= 0, got {atol}", argument="atol")
    transformers.utils.logging.disable_progress_bar()
    out = output_dir(out_dir, force, command="export", names=EXPORT_NAMES)
    family = FAMILIES[family_of(ckpt)]
    model = build_hf_model(ckpt)
    normalize = family.normalizes_waveform(ckpt)
    out.prepare()
    with atomic_files(out.path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=normalize,
                                              return_attention_mask=model.config.feat_extract_norm == "layer").save_pretrained(tmp)
        reloaded = getattr(transformers, family.hf_model_class).from_pretrained(tmp, local_files_only=True).eval()
        check = compare_with_s3prl(ckpt, reloaded)
        if not check["max_abs_diff"] <= atol:
            raise UserInputError(f"export check failed: the transformers model differs from s3prl by {check['max_abs_diff']:.3g} "
                                 f"(tolerance `atol={atol}`); nothing written")
        meta = dict(ckpt.get(META_KEY) or {})
        report = {"family": family.name, "transformers_class": family.hf_model_class,
                  "num_hidden_layers": model.config.num_hidden_layers, "keep_layers": meta.get("keep_layers"),
                  "source": meta.get("source"), "check": check, "transformers_version": transformers.__version__}
        atomic_write_text(tmp / "s3prl_redundancy_export.json", json.dumps(report, indent=2) + "\n")
        out.record(*(entry.name for entry in tmp.iterdir()))
    return report
