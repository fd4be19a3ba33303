"""The SUPERB tasks, one module each (``ks``, ``sid``, ``er``, ``asr``): everything known of a task lives in its
module's ``TASK`` (:class:`~.base.Task`): s3prl downstream name, official recipe file, data keys, dataset layout
and its check, metric and its direction, evaluate / dev splits, TensorBoard tags, prediction files, folds.

Adding a task means adding one module here that defines ``TASK``; the registry below finds it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Dict, Mapping, Tuple, Union

from ...errors import UserInputError
from .base import PLACEHOLDER, LayoutError, Task, is_placeholder


def _discover() -> Dict[str, Task]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            task = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TASK", None)
            if isinstance(task, Task):
                found.append(task)
    return {task.name: task for task in sorted(found, key=lambda t: t.order)}


TASKS: Dict[str, Task] = _discover()
"""Task name -> :class:`Task`, in table order (ks, sid, er, asr)."""

TASK_ORDER: Tuple[str, ...] = tuple(TASKS)

_ALIASES = {alias: task.name for task in TASKS.values() for alias in task.aliases}


def normalize_task(task: str, argument: str = "tasks") -> str:
    """``ks``/``sid``/``er``/``asr``, also accepting the s3prl downstream names (``speech_commands``, ...)."""
    key = str(task).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise UserInputError(
            f"unknown SUPERB task {task!r}; use one of {sorted(TASKS)} "
            f"(or the s3prl downstream names {sorted(_ALIASES)} / 'asr')", argument=argument)
    return key


def get_task(task: Union[str, Task], argument: str = "tasks") -> Task:
    """The :class:`Task` of a name (or alias); a :class:`Task` is returned as is."""
    return task if isinstance(task, Task) else TASKS[normalize_task(task, argument)]


def check_layout(task: Union[str, Task], root: Any = None, **datarc: Any) -> dict:
    """Verify that data is laid out the way s3prl's expert for ``task`` reads it.

    ``root`` is the task's main data path (ks ``speech_commands_root``, sid ``file_path``, er ``root``,
    asr ``libri_root``) or a whole datarc mapping (e.g. ``CorpusInfo.datarc_for(task)``); the other datarc
    keys can be given as keyword arguments: ks ``speech_commands_test_root``; sid ``meta_data``; er
    ``meta_data``, ``test_fold``; asr ``bucket_file``, ``dict_path``, ``splits``. Keys not given are not
    checked. Raises :class:`LayoutError` naming the expected file or folder and the fix; returns counts.
    """
    import os

    spec = get_task(task, "task")
    values: dict = {}
    if isinstance(root, Mapping):
        values.update(root)
    elif root is not None:
        values[spec.main_key] = root
    values.update(datarc)
    if spec.main_key not in values:
        raise UserInputError(f"check_layout({spec.name!r}) needs the {spec.main_key} path", argument="root")
    values = {k: (os.path.expanduser(str(v)) if k in spec.data_keys else v) for k, v in values.items()}
    for key in spec.data_keys:
        if key in values and is_placeholder(values[key]):
            raise LayoutError(f"{spec.name} datarc key {key} is still the placeholder {values[key]}; pass the real path.")
    return spec.check(values)


__all__ = ["Task", "PLACEHOLDER", "is_placeholder", "LayoutError", "TASKS", "TASK_ORDER", "normalize_task", "get_task", "check_layout"]
