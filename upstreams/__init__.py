"""s3prl-style upstream folders (``expert.py`` + ``hubconf.py``), installed as ``s3prl_redundancy.upstreams``.

Every sub-folder with a ``hubconf.py`` is a family of hub entries: the names in its ``__all__`` become
s3prl hub entries (see :func:`hubconf_modules`).
"""

from __future__ import annotations

import pkgutil
from typing import Callable, List


def hubconf_modules() -> List[str]:
    """Module names of every ``<folder>/hubconf.py`` below this package (found without importing them)."""
    names = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.ispkg and any(m.name == "hubconf" for m in pkgutil.iter_modules([f"{__path__[0]}/{info.name}"])):
            names.append(f"{__name__}.{info.name}.hubconf")
    return names


def hub_entry(name: str, expert_class: type, doc: str) -> Callable:
    """The hub entry ``name`` for ``expert_class``, called as s3prl calls every entry:
    ``entry(ckpt=None, model_config=None, refresh=False, **kwargs)`` -> the expert."""

    def entry(ckpt=None, model_config=None, refresh=False, **kwargs):
        return expert_class(ckpt, model_config, refresh=refresh, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    # s3prl's folder convention: the entry lives in the hubconf.py beside the expert's expert.py
    entry.__module__ = expert_class.__module__.rsplit(".", 1)[0] + ".hubconf"
    return entry
