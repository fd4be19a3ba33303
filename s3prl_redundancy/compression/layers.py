"""Remove transformer layers from an s3prl local checkpoint, with no post-training.

A pruned checkpoint is the source family's own local format with ``encoder_layers = K`` and the kept
``encoder.layers.{i}.*`` renumbered ``0..K-1``, so s3prl's unchanged ``<family>_local`` entry loads it and
returns ``K + 1`` hidden states. It also carries a ``"s3prl_redundancy"`` entry (plain dict) saying which
layers of the source model were kept. Layer indices are always 0-based indices of the *source* model.

WavLM: only layer 0 owns ``relative_attention_bias``; the position bias it computes is passed to the later
layers. When layer 0 is dropped, its bias table moves to the new first layer, so the bias survives.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ..errors import UserInputError
from ..families import FAMILIES, Family, detect_family

META_KEY = "s3prl_redundancy"
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.*)$")


def parse_keep_layers(spec: Union[str, Iterable[int]], where: str = "`keep_layers`") -> List[int]:
    """Parse ``"0,1,3"`` or a list into a strictly increasing list of non-negative ints."""
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
        try:
            layers = [int(s) for s in items]
        except ValueError:
            raise UserInputError(f"{where}: {spec!r} is not a comma-separated list of layer indices like 0,1,3") from None
    else:
        try:
            layers = [int(x) for x in spec]
        except (TypeError, ValueError):
            raise UserInputError(f"{where}: keep_layers must be a list of integers like [0, 1, 3], got {spec!r}") from None
    if not layers:
        raise UserInputError(f"{where}: keep_layers is empty; keep at least one transformer layer, e.g. [0, 1]")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise UserInputError(
            f"{where}: keep_layers {layers} must be strictly increasing with no duplicates, e.g. {sorted(set(layers))}"
        )
    if layers[0] < 0:
        raise UserInputError(f"{where}: layer indices are 0-based and non-negative, got {layers}")
    return layers


def read_keep_layers(model_config: Union[None, str, Path, Mapping[str, Any], Sequence[int]]) -> Optional[List[int]]:
    """``keep_layers`` from s3prl's ``-g`` argument: a YAML path, a dict, a list, or None."""
    if model_config is None or model_config == "":
        return None
    if isinstance(model_config, (str, Path)):
        import yaml

        path = Path(model_config)
        if not path.is_file():
            raise UserInputError(f"model config {path} (-g) does not exist; give a YAML file with `keep_layers: [0, 1, 3]`")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise UserInputError(f"model config {path} (-g) is not valid YAML: {e}") from None
        if not isinstance(data, dict) or "keep_layers" not in data:
            raise UserInputError(
                f"model config {path} (-g) has no `keep_layers` key; write e.g. `keep_layers: [0, 1, 3]` "
                "(0-based transformer layer indices of the source model)"
            )
        return parse_keep_layers(data["keep_layers"], where=str(path))
    if isinstance(model_config, Mapping):
        if "keep_layers" not in model_config:
            raise UserInputError("model config has no `keep_layers` key; give e.g. {'keep_layers': [0, 1, 3]}")
        return parse_keep_layers(model_config["keep_layers"], where="model config")
    return parse_keep_layers(model_config, where="keep_layers")


def reject_structured(ckpt: Mapping[str, Any], family: str, source: str = "") -> None:
    """Checkpoints whose layers were reshaped (heads, low rank, bridges) load only in ``compressed_<family>``."""
    meta = ckpt.get(META_KEY) or {}
    if meta.get("structure"):
        raise UserInputError(
            f"{source or 'the checkpoint'} has reshaped layers (head pruning, low rank or bridges), which s3prl's "
            f"{family} classes cannot hold; load it with -u compressed_{family} instead of pruned_{family}"
        )


def source_layers(ckpt: Mapping[str, Any], family: Family) -> List[int]:
    """The source-model index of each layer in ``ckpt`` (``0..L-1`` for an unpruned checkpoint)."""
    meta = ckpt.get(META_KEY)
    if meta:
        return list(meta["keep_layers"])
    return list(range(family.num_layers(ckpt)))


def count_parameters(state_dict: Mapping[str, Any]) -> Dict[str, int]:
    """Total parameters and those of the transformer layers (``encoder.layers.*``) in a state dict."""
    total = sum(v.numel() for v in state_dict.values() if hasattr(v, "numel"))
    stack = sum(v.numel() for k, v in state_dict.items() if _LAYER_KEY.match(k) and hasattr(v, "numel"))
    return {"total": int(total), "transformer_layers": int(stack)}


def prune_checkpoint(
    ckpt: Mapping[str, Any], keep_layers: Sequence[int], source: str = "", family: Optional[str] = None
) -> Dict[str, Any]:
    """A new checkpoint dict holding only ``keep_layers`` (source-model indices). ``ckpt`` is not modified.

    ``ckpt`` may itself be a pruned checkpoint: ``keep_layers`` must then be a subset of its kept layers.
    """
    detected = detect_family(ckpt)
    if detected is None:
        raise UserInputError(f"{source or 'checkpoint'} is not an s3prl HuBERT / wav2vec 2.0 / WavLM local checkpoint")
    from ..checkpoints import check_family

    check_family(detected, family, source or "checkpoint")
    fam = FAMILIES[detected]
    reject_structured(ckpt, fam.name, source)
    keep = parse_keep_layers(keep_layers)
    present = source_layers(ckpt, fam)
    meta_in = ckpt.get(META_KEY) or {}
    num_source = int(meta_in.get("source_num_layers", len(present)))
    unknown = [i for i in keep if i not in present]
    if unknown:
        if meta_in:
            raise UserInputError(
                f"layers {unknown} are not in {source or 'the checkpoint'}: it keeps source layers {present} "
                f"of {num_source}; choose keep_layers among those"
            )
        raise UserInputError(
            f"layers {unknown} do not exist: {source or 'the model'} has {num_source} transformer layers "
            f"(valid indices 0..{num_source - 1})"
        )

    position = {src: pos for pos, src in enumerate(present)}  # source index -> index in this checkpoint
    new_position = {position[src]: new for new, src in enumerate(keep)}
    weights = fam.weights(ckpt)
    new_weights: Dict[str, Any] = {}
    for key, value in weights.items():
        m = _LAYER_KEY.match(key)
        if m is None:
            new_weights[key] = value
        elif int(m.group(1)) in new_position:
            new_weights[f"encoder.layers.{new_position[int(m.group(1))]}.{m.group(2)}"] = value
    for name in fam.first_layer_weights if 0 not in new_position else ():
        shared = weights.get(f"encoder.layers.0.{name}")
        if shared is not None:  # the first layer owns it (WavLM's position bias table); the new first layer takes it
            new_weights[f"encoder.layers.0.{name}"] = shared

    out = dict(ckpt)
    out[fam.config_key] = dict(ckpt[fam.config_key], encoder_layers=len(keep))
    out[fam.weights_key] = new_weights
    out[META_KEY] = {
        "format_version": 1,
        "family": fam.name,
        "source": str(meta_in.get("source", source)),
        "source_num_layers": num_source,
        "keep_layers": list(keep),
        "removed_layers": [i for i in range(num_source) if i not in keep],
        "parameters_before": meta_in.get("parameters_before", count_parameters(weights)),
        "parameters_after": count_parameters(new_weights),
    }
    return out
