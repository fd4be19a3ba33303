"""Load any s3prl upstream by hub name, checkpoint and model config, and place it on a device.

The upstream is built exactly as s3prl's ``downstream/runner.py`` builds it::

    getattr(s3prl.hub, name)(ckpt=ckpt, model_config=model_config, refresh=refresh)

so every hub entry works, including the ones this project (and other plugins) add to ``s3prl.hub``.
Mistakes the user can fix (an unknown name, a missing checkpoint or config file, ``--device cuda``
without CUDA) raise :class:`~s3prl_redundancy.errors.UserInputError` naming the problem and the fix.
Heavy imports (torch, s3prl) happen inside the functions.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from .errors import UserInputError

__all__ = [
    "UpstreamLoadError",
    "resolve_device",
    "hub_names",
    "get_hub_entry",
    "load_upstream",
    "downsample_rate",
    "upstream_name",
]


class UpstreamLoadError(UserInputError):
    """The hub entry exists but building the upstream failed (bad checkpoint, a download without network, ...)."""


def _is_url(value: str) -> bool:
    return str(value).startswith(("http://", "https://"))


def resolve_device(device: Union[str, Any, None] = "cpu", local_rank: Optional[int] = None):
    """A ``torch.device`` for ``device`` ("cpu", "cuda", "cuda:1", a device, or None = "cpu").

    ``"cuda"`` without an index becomes ``cuda:<local_rank>`` under torchrun (``local_rank`` given),
    else the current CUDA device. Asking for CUDA where none is available is a user error.
    """
    import torch

    if device is None:
        device = "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserInputError(f"`device` {device!r} is not a device torch knows ({e}); use cpu or cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(
                f"`device` {device} was asked for but torch.cuda.is_available() is False (torch {torch.__version__}); "
                "use `device` cpu or install a CUDA build of torch"
            )
        if dev.index is None:
            dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise UserInputError(f"`device` {dev} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UserInputError(f"`device` {device!r} is not supported; use cpu or cuda")
    return dev


def hub_names() -> List[str]:
    """Every entry name in ``s3prl.hub`` (plugin entries included)."""
    import s3prl.hub as hub

    return sorted(hub.options())


def get_hub_entry(name: str):
    """The callable ``s3prl.hub.<name>``; an unknown name lists the closest known ones."""
    import s3prl.hub as hub

    entry = getattr(hub, name, None) if name and not name.startswith("_") else None
    if entry is None or not callable(entry) or name == "options":
        names = hub_names()
        close = difflib.get_close_matches(name or "", names, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserInputError(
            f"`upstream` {name!r} is not an s3prl hub entry; {hint}"
            f"list all {len(names)} with `python -c 'import s3prl.hub as h; print(h.options())'` "
            "(entries ending in _local take a local checkpoint through `ckpt`)"
        )
    return entry


def _check_ckpt(name: str, ckpt) -> str:
    """``ckpt`` passed on as s3prl's ``-k`` is: a path, a folder, a URL or a hub id, as the entry takes it.
    Refused early: an empty file, and a missing path for the ``*_local`` entries (which take a local file)."""
    path = Path(ckpt)
    if path.is_file() and path.stat().st_size == 0:
        raise UserInputError(f"`ckpt` {ckpt} is empty (0 bytes); re-copy or re-create the checkpoint")
    if name.endswith("_local") and not path.exists() and not _is_url(str(ckpt)):
        raise UserInputError(f"`ckpt` {ckpt} does not exist (or is not a file); give the path of the upstream's checkpoint")
    if path.is_file() and _loads_torch_checkpoint(name):  # say what a wrong file is, not what s3prl's loader tripped on
        from .checkpoints import check_checkpoint_file

        check_checkpoint_file(path)
    return str(ckpt)


def _folder_entry(name: str, ckpt: str):
    """For a family's local entry (``hubert_local`` ...) given a ``transformers`` folder: an entry that builds
    s3prl's expert from the folder converted in memory; None otherwise (the entry itself takes ``ckpt``)."""
    from .families import FAMILIES

    family = next((f for f in FAMILIES.values() if f.local_entry == name), None)
    if family is None or not Path(ckpt).is_dir():
        return None

    def entry(ckpt, model_config=None, refresh=False, **kwargs):
        from .checkpoints import checkpoint_buffer, load_family_checkpoint

        _, converted = load_family_checkpoint(ckpt, expected_family=family.name)
        return family.expert_class()(checkpoint_buffer(converted), **kwargs)

    return entry


def _loads_torch_checkpoint(name: str) -> bool:
    """Whether the hub entry ``name`` takes a PyTorch checkpoint file (the families' entries and this project's)."""
    from .families import UPSTREAM_NAMES

    return name in UPSTREAM_NAMES or name.startswith(("pruned_", "distilled_"))


def load_upstream(
    name: str,
    ckpt: Optional[Union[str, Path]] = None,
    model_config: Optional[Union[str, Path]] = None,
    device: Union[str, Any, None] = "cpu",
    refresh: bool = False,
    eval_mode: bool = True,
):
    """Build the s3prl upstream ``name`` like s3prl's runner does, move it to ``device`` and set eval mode.

    Args:
        name: an ``s3prl.hub`` entry (``hubert_local``, ``wavlm_local``, ``distiller_local``, ``pruned_hubert``, ...).
        ckpt: as s3prl's ``-k``: a checkpoint path, a folder, a URL or a hub id, whatever the entry takes
            (``None``: the entry's default; entries without local weights download them). The family
            ``*_local`` entries (and this project's entries) also take a ``transformers`` model folder.
        model_config: the entry's model config YAML, if it takes one.
        device: where to put the upstream (see :func:`resolve_device`).
        refresh: passed to the entry (re-download a URL checkpoint).
        eval_mode: call ``.eval()`` (dropout off); s3prl's entries already switch layerdrop off.
    """
    dev = resolve_device(device)
    entry = get_hub_entry(name)
    if ckpt is not None:
        ckpt = _check_ckpt(name, ckpt)
        entry = _folder_entry(name, ckpt) or entry
    if model_config is not None:
        if not Path(model_config).is_file():
            raise UserInputError(f"`model_config` {model_config} does not exist (or is not a file); give the upstream's YAML config")
        model_config = str(model_config)
    try:
        upstream = entry(ckpt=ckpt, model_config=model_config, refresh=refresh)
    except UserInputError:
        raise
    except Exception as e:  # s3prl raises assorted types: AssertionError, RuntimeError, OSError, KeyError, ...
        source = f" from {ckpt}" if ckpt else " (no `ckpt`: the entry's default weights, which may need a download)"
        raise UpstreamLoadError(
            f"could not build upstream {name!r}{source}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            ". Check that `ckpt` is what this entry loads (a checkpoint file for the *_local entries, a transformers "
            "folder or hub id for the hf_* entries) and that any download is reachable."
        ) from e
    if upstream is None or not hasattr(upstream, "to"):
        raise UpstreamLoadError(f"s3prl hub entry {name!r} returned {type(upstream).__name__}, not an nn.Module upstream")
    upstream = upstream.to(dev)
    upstream._s3prl_redundancy_name = name  # plain attribute (not a parameter/buffer): reports name the entry
    if eval_mode:
        upstream.eval()
    return upstream


def _is_s3prl_upstream(module: Any) -> bool:
    """``isinstance(module, s3prl.nn.S3PRLUpstream)`` without importing s3prl.nn when nobody has."""
    import sys

    mod = sys.modules.get("s3prl.nn.upstream")
    return mod is not None and isinstance(module, mod.S3PRLUpstream)


def downsample_rate(upstream: Any, default: Optional[int] = None) -> Optional[int]:
    """Samples per hidden-state frame: ``get_downsample_rates("hidden_states")`` (s3prl's interface).

    An ``S3PRLUpstream`` gives one rate per layer (they must agree). Returns ``default`` when the
    upstream does not say; layers with different rates are an error (one frame grid is needed).
    """
    rates: Optional[Sequence[int]] = None
    if _is_s3prl_upstream(upstream):
        rates = list(upstream.downsample_rates)
    elif hasattr(upstream, "get_downsample_rates"):
        value = upstream.get_downsample_rates("hidden_states")
        rates = list(value) if isinstance(value, (list, tuple)) else [value]
    if not rates:
        return default
    distinct = sorted({int(r) for r in rates})
    if len(distinct) != 1:
        raise ValueError(
            f"the upstream's hidden states have different downsample rates {distinct}; layer similarity needs "
            "every layer on the same frame grid"
        )
    if distinct[0] < 1:
        raise ValueError(f"invalid downsample rate {distinct[0]} reported by the upstream")
    return distinct[0]


def upstream_name(upstream: Any) -> str:
    """A readable name for reports: the hub name given to :func:`load_upstream`, else the class name."""
    name = getattr(upstream, "_s3prl_redundancy_name", None)
    if name:
        return str(name)
    if _is_s3prl_upstream(upstream):
        inner = getattr(upstream, "upstream", None)
        return f"S3PRLUpstream({type(inner).__module__}.{type(inner).__name__})"
    cls = type(upstream)
    return f"{cls.__module__}.{cls.__name__}"
