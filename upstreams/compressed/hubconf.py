"""Hub entries for compressed upstreams (s3prl calls them with ``ckpt=``, ``model_config=``, ``refresh=``).

One entry per family; each reads what was done (layers removed, attention heads removed, factorised
linear layers, magnitude pruning, linear bridges) from the checkpoint written by
``s3prl-redundancy prune``, so a new combination of techniques needs no new entry.

- ``-k``: a ``pruned.pt`` written by ``s3prl-redundancy prune`` (any local-format checkpoint also works);
- ``-g``: not used (an error if given).
"""

from s3prl_redundancy.upstreams import hub_entry

from .expert import CompressedHubertExpert, CompressedWav2Vec2Expert, CompressedWavLMExpert

__all__ = ["compressed_hubert", "compressed_wav2vec2", "compressed_wavlm"]

compressed_hubert = hub_entry(
    "compressed_hubert", CompressedHubertExpert,
    "HuBERT compressed by s3prl-redundancy (layers, heads, low rank, magnitude, bridges).",
)
compressed_wav2vec2 = hub_entry(
    "compressed_wav2vec2", CompressedWav2Vec2Expert,
    "wav2vec 2.0 compressed by s3prl-redundancy (layers, heads, low rank, magnitude, bridges).",
)
compressed_wavlm = hub_entry(
    "compressed_wavlm", CompressedWavLMExpert,
    "WavLM compressed by s3prl-redundancy (layers, heads, low rank, magnitude, bridges).",
)
