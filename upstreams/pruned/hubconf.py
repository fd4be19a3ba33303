"""Hub entries for layer-pruned upstreams (s3prl calls them with ``ckpt=``, ``model_config=``, ``refresh=``).

- ``-k``: a source checkpoint in the family's s3prl local format, a ``transformers`` model folder (``config.json`` +
  ``model.safetensors``, converted in memory), or one written by ``s3prl-redundancy prune``; none: the weights of
  s3prl's ``hubert`` / ``wav2vec2`` / ``wavlm`` entry (downloaded by s3prl's own code).
- ``-g``: a YAML file with ``keep_layers: [0, 1, 3, ...]`` (0-based layers of the source model); not needed
  with a pruned checkpoint.
"""

from s3prl_redundancy.upstreams import hub_entry

from .expert import PrunedHubertExpert, PrunedWav2Vec2Expert, PrunedWavLMExpert

__all__ = ["pruned_hubert", "pruned_wav2vec2", "pruned_wavlm"]

pruned_hubert = hub_entry(
    "pruned_hubert", PrunedHubertExpert,
    "HuBERT with transformer layers removed (no post-training).",
)
pruned_wav2vec2 = hub_entry(
    "pruned_wav2vec2", PrunedWav2Vec2Expert,
    "wav2vec 2.0 with transformer layers removed (no post-training).",
)
pruned_wavlm = hub_entry(
    "pruned_wavlm", PrunedWavLMExpert,
    "WavLM with transformer layers removed (no post-training); the relative position bias is kept.",
)
