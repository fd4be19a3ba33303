"""Layer-by-layer similarity of a model's hidden states.

Submodules (import the one you need; nothing heavy happens at package import):

* :mod:`.metrics` -- streaming metrics (``cosine``, ``cka``, ``debiased_cka``, ``mknn``,
  ``block_influence``) with ``update`` / ``compute`` / ``merge`` / ``sync`` / ``state_dict``;
* :mod:`.blocks` -- contiguous blocks of mutually similar layers, solved exactly by
  dynamic programming;
* :mod:`.plots` -- heatmaps and bar charts (matplotlib, Agg), written atomically;
* :mod:`.collector` -- one pass of an s3prl upstream over a dataset, padding trimmed, hidden states
  handed to consumers (metrics, plugins through ``s3prl_redundancy_on_hidden_states``);
* :mod:`.analysis` -- ``analyze(...) -> SimilarityReport`` and the report files (JSON, CSV, PNG).

See ``docs/similarity.md`` for the definitions.
"""

METRIC_NAMES = ("cosine", "cka", "debiased_cka", "mknn", "block_influence")
"""Names accepted by :func:`s3prl_redundancy.similarity.metrics.build_metrics`."""
