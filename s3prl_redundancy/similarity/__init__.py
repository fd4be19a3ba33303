"""Layer-by-layer similarity of a model's hidden states.

Submodules (import the one you need; nothing heavy happens at package import):

* :mod:`.functional` -- the formulas as plain functions (``linear_cka``, ``cosine_similarity``,
  ``mutual_knn``, CKA from statistics), called by the metric classes and by other packages;
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



def __getattr__(name: str):
    # METRIC_NAMES: the registered metrics (built-ins and plugins), looked up in the one registry when asked for
    if name == "METRIC_NAMES":
        from ..plugins import similarity_metrics

        return tuple(similarity_metrics())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
