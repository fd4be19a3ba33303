"""The plugin manager: our built-ins plus every package registered under the ``s3prl_redundancy`` entry points.

This is the only module that looks up registered upstream entries, similarity metrics and pruning
strategies; the modules that define the built-ins never import it (``builtin_plugin`` imports them), so
there is no import cycle.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterable, Union

import pluggy

from . import hookspecs


@functools.lru_cache(maxsize=None)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built once; :func:`reset` rebuilds it)."""
    from . import builtin_plugin

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin_plugin, name="builtin")
    pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
    return pm


def reset() -> None:
    get_plugin_manager.cache_clear()


def _merged(results, what: str) -> Dict[str, object]:
    merged: Dict[str, object] = {}
    # pluggy returns the last-registered plugin first; reverse so built-ins come first and plugins extend them
    for result in reversed(results):
        for name, value in (result or {}).items():
            if name in merged and merged[name] is not value:
                raise ValueError(f"two plugins define the {what} {name!r}; rename one of them")
            merged[name] = value
    return merged


def upstream_entries() -> Dict[str, Callable]:
    return _merged(get_plugin_manager().hook.s3prl_redundancy_upstream_entries(), "upstream entry")


def similarity_metrics() -> Dict[str, type]:
    return _merged(get_plugin_manager().hook.s3prl_redundancy_similarity_metrics(), "similarity metric")


def pruning_strategies() -> Dict[str, type]:
    return _merged(get_plugin_manager().hook.s3prl_redundancy_pruning_strategies(), "pruning strategy")


def build_strategy(name: str, **options: Any):
    """An instance of the pruning strategy ``name``; only the options the strategy declares (its ``options``
    mapping) are passed to it, and ``None`` values are left out."""
    from .errors import UserInputError

    strategies = pruning_strategies()
    if name not in strategies:
        raise UserInputError(f"unknown strategy {name!r}; use one of: {', '.join(strategies)}", argument="strategy")
    cls = strategies[name]
    accepted = getattr(cls, "options", {}) or {}
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})


def build_metrics(names: Union[str, Iterable[str]], **options: Any) -> Dict[str, Any]:
    """Instantiate registered metrics (:func:`similarity_metrics`) by name (a list or a
    comma-separated string).

    Each option goes to every requested metric whose constructor accepts it (e.g.
    ``k=5`` to ``mknn``); an option accepted by none of them is an error.
    """
    from .similarity.metrics import constructor_options, parse_metric_names

    registry = similarity_metrics()
    names = parse_metric_names(names, registry)
    metrics: Dict[str, Any] = {}
    used = set()
    accepted = set()
    for n in names:
        cls = registry[n]
        params = set(constructor_options(cls))
        accepted |= params
        kwargs = {k: v for k, v in options.items() if k in params}
        used |= set(kwargs)
        metrics[n] = cls(**kwargs)
    unused = sorted(set(options) - used)
    if unused:
        raise ValueError(
            f"option(s) {unused} are not accepted by any requested metric ({', '.join(names)}); "
            f"accepted options: {sorted(accepted) or 'none'}"
        )
    return metrics
