"""Hub entry of the embedded default model: ``tiny_hubert`` (no ``-k`` needed; ``-k`` loads another
``hubert_local`` checkpoint through the same code, e.g. one written by ``s3prl-redundancy pretrain-tiny``)."""

from s3prl_redundancy.upstreams import hub_entry

from .expert import TinyHubertExpert

__all__ = ["tiny_hubert"]

tiny_hubert = hub_entry(
    "tiny_hubert", TinyHubertExpert,
    "A 6-layer, 256-dim HuBERT (5.3 M parameters) pretrained on synthetic espeak-ng speech; ships with the package.",
)
