"""Hub entries for shallow layer inference (s3prl calls them with ``ckpt=``, ``model_config=``, ``refresh=``).

- ``-k``: a layer-consistent checkpoint in the family's s3prl local format (``hubert_local``,
  ``wav2vec2_local``, ``wavlm_local``), e.g. written by ``s3prl-redundancy lc-finetune`` (or, for HuBERT,
  ``pretrain-tiny --share-layers all --depth-range 1,6``); ``lc_tiny_hubert`` has a shipped default.
- ``-g``: a YAML file with ``depth: k``, the number of transformer layers to run (default: all).
"""

from s3prl_redundancy.upstreams import hub_entry

from .expert import LCHubertExpert, LCTinyHubertExpert, LCWav2Vec2Expert, LCWavLMExpert

__all__ = ["lc_hubert", "lc_wav2vec2", "lc_wavlm", "lc_tiny_hubert"]

lc_hubert = hub_entry(
    "lc_hubert", LCHubertExpert,
    "A layer-consistent HuBERT run through its first k layers (shallow layer inference).",
)
lc_wav2vec2 = hub_entry(
    "lc_wav2vec2", LCWav2Vec2Expert,
    "A layer-consistent wav2vec 2.0 run through its first k layers (shallow layer inference).",
)
lc_wavlm = hub_entry(
    "lc_wavlm", LCWavLMExpert,
    "A layer-consistent WavLM run through its first k layers (shallow layer inference); the relative "
    "position bias of layer 0 is kept.",
)
lc_tiny_hubert = hub_entry(
    "lc_tiny_hubert", LCTinyHubertExpert,
    "The shipped layer-consistent tiny HuBERT (shared layers, sampled depth), through its first k layers.",
)
