"""A ``transformers`` HuBERT / wav2vec 2.0 / WavLM folder as an s3prl local checkpoint (the inverse of
``s3prl-redundancy export``).

A folder holds ``config.json``, the weights (``model.safetensors``, sharded safetensors, or
``pytorch_model.bin``) and usually ``preprocessor_config.json``. The family comes from ``config.json``
(``model_type``, checked against ``architectures``); the config and weight names are mapped back through
the family's ``transformers`` mapping in :mod:`s3prl_redundancy.families` (the one the exporter uses).

Nothing is dropped silently: every tensor of the base model must be mapped, or the import refuses naming
the unmapped ones. The heads of the ``...ForCTC`` / ``...ForSequenceClassification`` (and other head)
variants are skipped and listed in the report. s3prl's model classes also hold pre-training heads that
``transformers``' base models lack (HuBERT's ``label_embs_concat`` / ``final_proj``, wav2vec 2.0's
``project_q`` / ``final_proj``); they are written as zeros (inference never uses them) and listed too.

Waveform normalisation: ``preprocessor_config.json``'s ``do_normalize`` (what the ``transformers`` feature
extractor does), or without that file the fairseq convention: large models (``feat_extract_norm="layer"``)
normalise, base models do not.

Loading is safe: safetensors, or ``torch.load(weights_only=True)`` for ``pytorch_model.bin``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

from .errors import UserInputError
from .families import (FAMILIES, HF_FEATURE_PROJECTION, HF_POS_CONV_WEIGHT_NORM, HF_TRAINING_ONLY, Family,
                       family_for_hf_config)

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


def read_config(folder: Path) -> Tuple[Family, Dict[str, Any]]:
    """The family and the full ``transformers`` config dict (defaults filled in) of ``folder``."""
    import transformers

    from .io import read_json

    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UserInputError(f"transformers model folder {folder} {state}", argument="ckpt")
    if not (folder / "config.json").is_file():
        raise UserInputError(f"folder {folder} has no config.json, so it is not a transformers model folder (one "
                             "written by save_pretrained: config.json + model.safetensors)", argument="ckpt")
    raw = read_json(folder / "config.json", what="transformers config", argument="ckpt")
    family = family_for_hf_config(raw, f"{folder}/config.json")
    known = {k: v for k, v in raw.items() if k not in ("model_type", "transformers_version")}
    try:
        config = getattr(transformers, family.hf_config_class).from_dict(known).to_dict()
    except (TypeError, ValueError) as e:
        raise UserInputError(f"{folder}/config.json is not a valid {family.hf_config_class} ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})", argument="ckpt") from None
    family.check_hf_importable(config)
    return family, config


def _weight_files(folder: Path) -> Tuple[List[Path], bool]:
    """``(files, are_safetensors)``: the model's weight files, safetensors first."""
    from .io import read_json

    for index, single, safe in ((SAFETENSORS_INDEX, SAFETENSORS, True), (PICKLE_INDEX, PICKLE, False)):
        if (folder / index).is_file():
            shards = sorted(set(read_json(folder / index, what="weight index", argument="ckpt")["weight_map"].values()))
            return [folder / s for s in shards], safe
        if (folder / single).is_file():
            return [folder / single], safe
    present = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
    raise UserInputError(f"folder {folder} has no {SAFETENSORS} or {PICKLE} (it holds {present}); save the model with "
                         "save_pretrained in PyTorch format", argument="ckpt")


def read_weights(folder: Path) -> Dict[str, Any]:
    """Every tensor of the folder's weight files (safetensors, or ``weights_only=True``)."""
    from .checkpoints import load_checkpoint

    files, safe = _weight_files(folder)
    weights: Dict[str, Any] = {}
    for path in files:
        if safe:
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                weights.update(load_file(str(path)))
            except (SafetensorError, OSError) as e:
                raise UserInputError(f"weights file {path} cannot be read ({e})", argument="ckpt") from None
        else:
            state = load_checkpoint(path, what="weights file", hint="save the model with save_pretrained "
                                    "(safe_serialization=True) to get model.safetensors")
            if not isinstance(state, Mapping):
                raise UserInputError(f"weights file {path} holds a {type(state).__name__}, not a state dict", argument="ckpt")
            weights.update(state)
    return weights


def normalization(folder: Path, config: Mapping[str, Any]) -> Tuple[bool, str]:
    """Whether waveforms are normalised, and where that was read."""
    from .io import read_json

    path = folder / "preprocessor_config.json"
    if path.is_file():
        value = read_json(path, what="feature extractor config", argument="ckpt").get("do_normalize", True)
        return bool(value), "preprocessor_config.json do_normalize"
    return config["feat_extract_norm"] == "layer", "feat_extract_norm (no preprocessor_config.json)"


def split_head(family: Family, weights: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """``(base model weights without the prefix, head weight names)``. Weights are prefixed
    (``hubert.`` ...) when a head variant was saved; every unprefixed weight is then the head."""
    prefix = family.hf_model_type + "."
    if not any(k.startswith(prefix) for k in weights):
        return dict(weights), []
    base = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    return base, sorted(k for k in weights if not k.startswith(prefix))


def map_to_s3prl(family: Family, cfg, target: Mapping[str, Any], hf: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """s3prl's state dict from the base model's ``transformers`` weights ``hf``; ``target``: s3prl's model's
    state dict (names, shapes; what is not mapped is zeroed). Returns ``(weights, zero-filled names)``."""
    import torch

    pairs = [(n.s3prl, n.hf) for n in family.hf_weight_names(cfg, list(target))]
    for s3prl_name, hf_names in HF_POS_CONV_WEIGHT_NORM:  # whichever convention the folder was saved with
        pairs.append((s3prl_name, next((h for h in hf_names if h in hf), hf_names[0])))
    out, used = {}, set()
    for s3prl_name, hf_name in pairs:
        if hf_name in hf:
            out[s3prl_name] = hf[hf_name]
            used.add(hf_name)
        elif s3prl_name in target and s3prl_name not in HF_TRAINING_ONLY:
            raise UserInputError(f"the transformers weights have no {hf_name} (s3prl's {s3prl_name})", argument="ckpt")
    if "post_extract_proj.weight" not in target and HF_FEATURE_PROJECTION[0] in hf:
        _check_identity(hf[HF_FEATURE_PROJECTION[0]], hf[HF_FEATURE_PROJECTION[1]])
        used.update(HF_FEATURE_PROJECTION)
    unmapped = sorted(set(hf) - used)
    if unmapped:
        raise UserInputError(f"{len(unmapped)} transformers weights have no place in s3prl's {family.name} model: "
                             f"{', '.join(unmapped[:6])}{' ...' if len(unmapped) > 6 else ''}", argument="ckpt")
    for name, value in out.items():
        if name not in target or tuple(value.shape) != tuple(target[name].shape):
            expected = tuple(target[name].shape) if name in target else "no such weight"
            raise UserInputError(f"{name}: shape {tuple(value.shape)} in the folder, {expected} in s3prl's model "
                                 "built from config.json", argument="ckpt")
    filled = sorted(set(target) - set(out))
    out.update({k: torch.zeros_like(target[k]) for k in filled})
    return {k: out[k].detach().clone().contiguous() for k in target}, filled


def _check_identity(weight, bias) -> None:
    """s3prl has no feature projection when the CNN width equals the model width: only an identity maps."""
    import torch

    if weight.shape[0] != weight.shape[1] or not torch.equal(weight, torch.eye(weight.shape[0], dtype=weight.dtype)) \
            or bool(bias.any()):
        raise UserInputError("feature_projection.projection is not the identity, but the CNN width equals hidden_size, "
                             "where s3prl's model has no projection; this model cannot be imported exactly", argument="ckpt")


def import_transformers(folder) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(s3prl local checkpoint, report)`` for the ``transformers`` model folder ``folder``."""
    folder = Path(folder)
    family, config = read_config(folder)
    weights = read_weights(folder)
    base, head = split_head(family, weights)
    if head and config.get("architectures") and config["architectures"][0] == family.hf_model_class:
        raise UserInputError(f"{folder} is a {family.hf_model_class} but holds weights outside it: "
                             f"{', '.join(head[:6])}", argument="ckpt")
    model_config = family.s3prl_config_from_hf(config)
    normalize, normalize_source = normalization(folder, config)
    shell = family.local_checkpoint(model_config, {}, normalize)
    target = family.build_model(shell).state_dict()  # s3prl's names and shapes for this config
    mapped, filled = map_to_s3prl(family, family.model_config(model_config), target, base)
    report = {"family": family.name, "architecture": (config.get("architectures") or [family.hf_model_class])[0],
              "num_layers": int(config["num_hidden_layers"]), "normalize": normalize,
              "normalize_from": normalize_source, "skipped_head": head, "zero_filled": filled}
    return family.local_checkpoint(model_config, mapped, normalize), report


def import_to_file(folder, out, force: bool = False, atol: float = 1e-4) -> Dict[str, Any]:
    """Write the s3prl local checkpoint of the ``transformers`` folder ``folder`` to the file ``out``, after
    checking that ``transformers``' own model gives the same hidden states (within ``atol``) on test audio.
    An existing ``out`` is replaced only with ``force``; nothing is written when the check fails."""
    import transformers

    from .compression.export_transformers import compare_with_s3prl
    from .io import atomic_torch_save, check_writable

    out = Path(out)
    if out.is_dir():
        raise UserInputError(f"{out} is a folder; give the path of the checkpoint file to write", argument="out")
    if out.exists() and not force:
        raise UserInputError(f"{out} exists; pass `force=True` to replace it", argument="out")
    check_writable(out.parent, argument="out")
    ckpt, report = import_transformers(folder)
    transformers.utils.logging.disable_progress_bar()
    family = FAMILIES[report["family"]]
    reference = getattr(transformers, family.hf_model_class).from_pretrained(str(folder), local_files_only=True).eval()
    check = compare_with_s3prl(ckpt, reference)
    if not check["max_abs_diff"] <= atol:
        raise UserInputError(f"import check failed: s3prl's model differs from transformers' by {check['max_abs_diff']:.3g} "
                             f"(tolerance `atol={atol}`); nothing written")
    atomic_torch_save(ckpt, out)
    return {**report, "out": str(out), "check": check}
