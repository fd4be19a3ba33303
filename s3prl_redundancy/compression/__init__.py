"""Compressing s3prl upstreams: choosing layers to drop, classic techniques, bridges, sweeps, export.

Submodules (import the one you need; nothing heavy happens at package import):

* :mod:`.layers` -- removing transformer layers from a local checkpoint (renumbered, loadable by s3prl's
  unchanged ``<family>_local`` entry);
* :mod:`.strategies` -- layer-selection strategies behind one interface, targets (``--drop``/``--keep``/
  ``--ratio``/budgets) and the resulting :class:`~.strategies.LayerPlan`;
* :mod:`.statistics` -- the one forward pass over ``--data`` that strategies, head importance and
  bridges need (per-layer boundary states trimmed to true frame counts), and labels;
* :mod:`.convexity` -- graph convexity of class regions (Tětková et al.; used for pruning by
  Dorszewski et al., arXiv 2408.11858);
* :mod:`.structure` -- the modules of a compressed model (per-layer attention heads, factorised
  linear layers, linear bridges) and rebuilding a model from a compressed checkpoint;
* :mod:`.head_pruning`, :mod:`.low_rank`, :mod:`.magnitude`, :mod:`.bridges` -- the techniques;
* :mod:`.cost` -- parameters, MACs (``torch.utils.flop_counter``) and measured latency;
* :mod:`.compress` -- layer plans and techniques applied to a checkpoint, and the output folder;
* :mod:`.sweep` -- capacity versus layers removed, one curve per strategy (linear probe);
* :mod:`.export_transformers` -- a (layer-)pruned model in the ``transformers`` format.

See ``docs/compression.md``.
"""
