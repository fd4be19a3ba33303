"""Hook specifications: the extension points that other packages implement (pluggy, project ``s3prl_redundancy``).

A third-party package adds hub entries, similarity metrics or pruning strategies by exposing a module
with ``@hookimpl`` functions under the setuptools entry-point group ``s3prl_redundancy``::

    # setup.cfg of the other package
    [options.entry_points]
    s3prl_redundancy =
        my_plugin = my_package.redundancy_plugin

    # my_package/redundancy_plugin.py
    from s3prl_redundancy.hookspecs import hookimpl

    @hookimpl
    def s3prl_redundancy_upstream_entries():
        return {"my_pruned_model": my_entry}
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import pluggy

PROJECT = "s3prl_redundancy"
ENTRY_POINT_GROUP = "s3prl_redundancy"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def s3prl_redundancy_upstream_entries() -> Mapping[str, Callable]:
    """Return ``{name: entry}`` to add to ``s3prl.hub``.

    ``entry(ckpt=None, model_config=None, refresh=False, **kwargs)`` returns an s3prl upstream (an
    ``nn.Module`` whose forward takes a list of 16 kHz waveforms and returns a dict with
    ``hidden_states``, and which has ``get_downsample_rates``). Names already in ``s3prl.hub`` are not replaced.
    """


@hookspec
def s3prl_redundancy_similarity_metrics() -> Mapping[str, type]:
    """Return ``{name: metric class}``; classes follow ``similarity.metrics.LayerSimilarityMetric``
    (``update(layers, keys=None)``, ``compute()``, ``reset()``, ``merge(other)``, ``sync(group=None)``)."""


@hookspec
def s3prl_redundancy_pruning_strategies() -> Mapping[str, type]:
    """Return ``{name: strategy class}`` choosing which transformer layers to remove."""


@hookspec
def s3prl_redundancy_on_hidden_states(
    hidden_states: Sequence, lengths: Sequence[int], utterance_ids: Sequence[str]
) -> None:
    """Called once per batch during an analysis pass with every layer's hidden states ``(B, T, D)``, the
    true frame count of each utterance and its id. Padding frames beyond ``lengths`` must be ignored."""

