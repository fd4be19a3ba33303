"""Shallow layer inference (SLI): a checkpoint cut to its first ``k`` layers, for the ``lc_*`` hub entries
(``lc_hubert``, ``lc_wav2vec2``, ``lc_wavlm``: one per family, :func:`sli_entry`).

A pre-LN encoder (``layer_norm_first``) applies ``encoder.layer_norm`` after its last layer, so the model
cut to ``k`` layers ends with the exit norm the layer-consistent training used at depth ``k``
(:func:`~s3prl_redundancy.layer_consistency.encode_to_depth`); a post-LN encoder has no exit norm. The cut
is :func:`~s3prl_redundancy.compression.layers.prune_checkpoint` with ``keep_layers = 0 .. k-1``, so s3prl's
own expert runs it and ``hidden_states`` keeps the family's meaning (``k + 1`` entries).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ..errors import UserInputError
from . import COMPACT_KEY, META_KEY

DEPTH_KEY = "depth"
ENTRY_PREFIX = "lc_"  # the SLI hub entry of a family: lc_hubert, lc_wav2vec2, lc_wavlm


def sli_entry(family: str) -> str:
    """The hub entry that serves a layer-consistent checkpoint of ``family`` (``upstreams/lc/hubconf.py``)."""
    return ENTRY_PREFIX + family


def read_depth(model_config: Union[None, str, Path, Mapping[str, Any], int]) -> Optional[int]:
    """``depth`` from s3prl's ``-g`` argument (a YAML path or a dict with ``depth: k``, or an int); None if absent."""
    if model_config is None or model_config == "":
        return None
    if isinstance(model_config, int):
        data = {DEPTH_KEY: model_config}
    elif isinstance(model_config, Mapping):
        data = model_config
    else:
        import yaml

        path = Path(model_config)
        if not path.is_file():
            raise UserInputError(f"model config {path} (-g) does not exist; give a YAML file with `depth: 3`",
                                 argument="model_config")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise UserInputError(f"model config {path} (-g) is not valid YAML: {e}", argument="model_config") from None
    if not isinstance(data, Mapping) or DEPTH_KEY not in data:
        raise UserInputError("the model config (-g) has no `depth` key; write e.g. `depth: 3` (the number of "
                             "transformer layers to run)", argument="model_config")
    depth = data[DEPTH_KEY]
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise UserInputError(f"`depth` must be a positive integer, got {depth!r}", argument="model_config")
    return depth


def sli_checkpoint(ckpt: Mapping[str, Any], depth: Optional[int], source: str = "", family: str = "hubert") -> Dict[str, Any]:
    """``ckpt`` cut to its first ``depth`` layers (all if None); the run's metadata records the depth."""
    from ..families import FAMILIES
    from ..compression.layers import prune_checkpoint

    n_layers = FAMILIES[family].num_layers(ckpt)
    if depth is None:
        depth = n_layers
    if not 1 <= depth <= n_layers:
        raise UserInputError(f"`depth` must be between 1 and the {n_layers} layers of {source or 'the model'}, "
                             f"got {depth}", argument="model_config")
    base = {k: v for k, v in ckpt.items() if k != COMPACT_KEY}
    out = prune_checkpoint(base, list(range(depth)), source=source, family=family)
    out[META_KEY] = dict(ckpt.get(META_KEY) or {}, sli_depth=depth, source_num_layers=n_layers)
    return out
