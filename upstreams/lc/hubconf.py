"""Hub entries for shallow layer inference (s3prl calls them with ``ckpt=``, ``model_config=``, ``refresh=``).

- ``-k``: a layer-consistent ``hubert_local`` checkpoint (``s3prl-redundancy lc-finetune`` or
  ``pretrain-tiny --share-layers all --depth-range 1,6``); ``lc_tiny_hubert`` has a shipped default.
- ``-g``: a YAML file with ``depth: k``, the number of transformer layers to run (default: all).
"""

from .expert import LCHubertExpert, LCTinyHubertExpert

__all__ = ["lc_hubert", "lc_tiny_hubert"]


def lc_hubert(ckpt=None, model_config=None, refresh=False, **kwargs):
    """A layer-consistent HuBERT run through its first k layers (shallow layer inference)."""
    return LCHubertExpert(ckpt, model_config, **kwargs)


def lc_tiny_hubert(ckpt=None, model_config=None, refresh=False, **kwargs):
    """The shipped layer-consistent tiny HuBERT (shared layers, sampled depth), through its first k layers."""
    return LCTinyHubertExpert(ckpt, model_config, **kwargs)
