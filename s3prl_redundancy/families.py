"""What this project knows about each s3prl upstream family it compresses.

One :class:`Family` per model family: how its s3prl *local* checkpoint is laid out, where the layer
count lives, which s3prl expert class runs it and which released weights s3prl's default entry uses.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Family:
    name: str
    weights_key: str  # where the state_dict lives in the checkpoint
    config_key: str  # where the model config (with ``encoder_layers``) lives
    required_keys: Tuple[str, ...]
    expert: str  # "module:Class" of s3prl's expert for the local format
    local_entry: str  # s3prl hub entry that loads this local format
    default_entry: str  # s3prl hub entry whose weights a pruned entry uses when given no checkpoint
    default_url: str  # the URL that s3prl's default entry downloads (same code path: s3prl's downloader)

    def expert_class(self):
        module, cls = self.expert.split(":")
        return getattr(importlib.import_module(module), cls)

    def num_layers(self, ckpt: Mapping[str, Any]) -> int:
        cfg = ckpt[self.config_key]
        if "encoder_layers" in cfg:
            return int(cfg["encoder_layers"])
        return 12  # s3prl's config default for all three families

    def weights(self, ckpt: Mapping[str, Any]) -> Dict[str, Any]:
        return ckpt[self.weights_key]


FAMILIES: Dict[str, Family] = {
    "hubert": Family(
        name="hubert",
        weights_key="model_weight",
        config_key="model_cfg",
        required_keys=("task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"),
        expert="s3prl.upstream.hubert.expert:UpstreamExpert",
        local_entry="hubert_local",
        default_entry="hubert",
        # s3prl/upstream/hubert/hubconf.py: hubert() -> hubert_base()
        default_url="https://huggingface.co/s3prl/converted_ckpts/resolve/main/hubert_base_ls960.pt",
    ),
    "wav2vec2": Family(
        name="wav2vec2",
        weights_key="model_weight",
        config_key="model_cfg",
        required_keys=("task_cfg", "model_cfg", "model_weight"),
        expert="s3prl.upstream.wav2vec2.expert:UpstreamExpert",
        local_entry="wav2vec2_local",
        default_entry="wav2vec2",
        # s3prl/upstream/wav2vec2/hubconf.py: wav2vec2() -> wav2vec2_base_960()
        default_url="https://huggingface.co/s3prl/converted_ckpts/resolve/main/wav2vec_small.pt",
    ),
    "wavlm": Family(
        name="wavlm",
        weights_key="model",
        config_key="cfg",
        required_keys=("cfg", "model"),
        expert="s3prl.upstream.wavlm.expert:UpstreamExpert",
        local_entry="wavlm_local",
        default_entry="wavlm",
        # s3prl/upstream/wavlm/hubconf.py: wavlm() -> wavlm_base_plus()
        default_url="https://huggingface.co/s3prl/converted_ckpts/resolve/main/wavlm_base_plus.pt",
    ),
}

# s3prl upstream names that load a family's local format, for `--upstream NAME` on the CLI
UPSTREAM_NAMES: Dict[str, str] = {
    **{f.local_entry: f.name for f in FAMILIES.values()},
    **{f.name: f.name for f in FAMILIES.values()},
    "hubert_custom": "hubert",
    "wav2vec2_custom": "wav2vec2",
    "hubert_base": "hubert",
    "wav2vec2_base_960": "wav2vec2",
    "wavlm_base_plus": "wavlm",
    "tiny_hubert": "hubert",  # the embedded default model: a hubert_local checkpoint shipped with the package
}


def embedded_checkpoint(name: str) -> Optional[str]:
    """The shipped checkpoint of an embedded upstream (``tiny_hubert``); None for every other name."""
    if name == "tiny_hubert":
        from .upstreams.tiny.expert import resolve_ckpt

        return resolve_ckpt(None)
    return None


def detect_family(ckpt: Mapping[str, Any]) -> Optional[str]:
    """The family whose local checkpoint layout ``ckpt`` has, or None."""
    if not isinstance(ckpt, Mapping):
        return None
    if all(k in ckpt for k in FAMILIES["hubert"].required_keys):
        return "hubert"
    if all(k in ckpt for k in FAMILIES["wav2vec2"].required_keys):
        return "wav2vec2"
    if all(k in ckpt for k in FAMILIES["wavlm"].required_keys):
        return "wavlm"
    return None


def family_for_upstream(name: str) -> Family:
    from .errors import UserInputError

    if name not in UPSTREAM_NAMES:
        raise UserInputError(
            f"upstream {name!r} is not a family this project can prune; use one of: {', '.join(sorted(UPSTREAM_NAMES))}"
        )
    return FAMILIES[UPSTREAM_NAMES[name]]
