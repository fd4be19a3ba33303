"""SUPERB downstream recipes and the data files s3prl's pip package does not ship.

Recipes
    ``downstream_recipes/{ks,sid,er,asr}.yaml`` are the official s3prl ``config.yaml`` files of the
    ``speech_commands``, ``voxceleb1``, ``emotion`` and ``asr`` downstreams with only the data paths
    replaced by ``<SET_BY_RUNNER:key>`` placeholders. :func:`load_recipe` deep-merges a profile
    (``profiles/<name>.yaml``, e.g. ``smoke``) and overrides into one; :func:`write_recipe` writes the
    YAML passed to s3prl with ``-c``; :func:`recipe_override_string` builds the ``-o`` string that fills
    the data keys (:data:`TASKS` lists them per task).

The data files the recipes point at are written by :mod:`.datafiles`; what each task is, by :mod:`.tasks`.

Only the standard library and PyYAML are imported.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Optional, Union

import yaml

from ..errors import UserInputError
from .datafiles import write_if_changed
from .tasks import TASKS, is_placeholder, normalize_task

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------------


def recipes_dir() -> Path:
    """The folder holding the recipe YAMLs (installed ``s3prl_redundancy/downstream_recipes`` or the
    repository's ``downstream_recipes/``)."""
    candidates = []
    spec = None
    try:
        spec = importlib.util.find_spec("s3prl_redundancy.downstream_recipes")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) for p in spec.submodule_search_locations)
    candidates.append(Path(__file__).resolve().parents[2] / "downstream_recipes")
    for cand in candidates:
        if (cand / "ks.yaml").is_file():
            return cand
    raise UserInputError(
        "the downstream recipes (ks.yaml, sid.yaml, er.yaml, asr.yaml) were not found in "
        f"{[str(c) for c in candidates]}; reinstall s3prl-redundancy (`pip install -e .` from the repository)."
    )


def available_profiles() -> list:
    """``official`` plus the profile files under ``downstream_recipes/profiles/``."""
    return ["official"] + sorted(p.stem for p in (recipes_dir() / "profiles").glob("*.yaml"))


def official_recipe(task: str) -> dict:
    """The official config of ``task`` with its data placeholders, as a fresh dict."""
    spec = TASKS[normalize_task(task)]
    path = recipes_dir() / spec.recipe
    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    if not isinstance(config, dict):
        raise UserInputError(f"recipe {path} is not a YAML mapping; reinstall s3prl-redundancy")
    return config


def load_profile(profile: str, task: str) -> dict:
    """The override section of ``task`` in ``profiles/<profile>.yaml`` (``{}`` for ``official``)."""
    task = normalize_task(task)
    if profile in (None, "official"):
        return {}
    path = recipes_dir() / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        raise UserInputError(f"unknown recipe profile {profile!r}; available: {available_profiles()}", argument="profile")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict) or task not in data or not isinstance(data[task], dict):
        raise UserInputError(f"profile {path} has no mapping for task {task!r}; add a '{task}:' section", argument="profile")
    return data[task]


def unfilled_placeholders(config: Mapping) -> list:
    """Dotted keys (``downstream_expert.datarc.root``) whose values are still placeholders."""
    out = []

    def walk(node, prefix):
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
        elif is_placeholder(node):
            out.append(prefix)

    walk(config, "")
    return out


def expand_dotted(overrides: Mapping) -> dict:
    """``{"runner.total_steps": 10, "optimizer": {"lr": 1e-5}}`` -> nested dict. Dotted and nested keys mix."""
    out: dict = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            value = expand_dotted(value)
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise UserInputError(f"override {key!r} conflicts with another override of {part!r}", argument="overrides")
            node = nxt
        if isinstance(node.get(parts[-1]), dict) and isinstance(value, dict):
            node[parts[-1]] = deep_merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def deep_merge(base: Mapping, override: Mapping, *, strict: bool = False, _path: str = "") -> dict:
    """A new dict: ``base`` with ``override`` merged in recursively (mappings merge, anything else replaces).
    With ``strict=True`` every key of ``override`` must already exist in ``base`` (catches typos)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        where = f"{_path}.{key}" if _path else str(key)
        if key not in merged:
            if strict:
                raise UserInputError(
                    f"override key {where!r} does not exist in the official recipe; fix the spelling "
                    f"(known keys here: {sorted(map(str, merged))})", argument="override"
                )
            merged[key] = copy.deepcopy(value)
        elif isinstance(merged[key], Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(merged[key], value, strict=strict, _path=where)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _diff(old: Any, new: Any, prefix: str = "") -> dict:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = {}
        for key in list(old) + [k for k in new if k not in old]:
            where = f"{prefix}.{key}" if prefix else str(key)
            out.update(_diff(old.get(key, _MISSING), new.get(key, _MISSING), where))
        return out
    if old != new:
        return {prefix: [None if old is _MISSING else old, None if new is _MISSING else new]}
    return {}


_MISSING = object()


def _check_data_value(task: str, key: str, value: Any) -> str:
    spec = TASKS[task]
    if key not in spec.data_keys:
        raise UserInputError(f"{key!r} is not a data key of {task}; its data keys are {list(spec.data_keys)}", argument="datarc")
    if value is None or str(value).strip() == "":
        raise UserInputError(f"data key {key!r} of {task} is empty; pass the path", argument="datarc")
    text = str(Path(os.path.expanduser(str(value))).resolve())
    if ",," in text or "=" in text:
        raise UserInputError(
            f"path {text!r} for {key} contains ',,' or '=', which s3prl's -o override parser cannot carry; "
            "move or symlink the data to a plain path.", argument="datarc"
        )
    return text


def _normalize_fold(task: str, test_fold: Any) -> str:
    """``fold3`` / ``3`` / ``Fold3`` -> ``fold3`` (tasks with folds: ER)."""
    folds = TASKS[task].folds
    if not folds:
        raise UserInputError(f"only applies to a task with folds (er), not {task}", argument="test_fold")
    fold = str(test_fold).strip().lower()
    if fold.isdigit():
        fold = f"fold{fold}"
    if fold not in folds:
        raise UserInputError(f"must be one of {list(folds)} (the held-out IEMOCAP session), got {test_fold!r}",
                             argument="test_fold")
    return fold


def load_recipe(
    task: str,
    profile: str = "official",
    overrides: Optional[Mapping] = None,
    *,
    learning_rate: Optional[float] = None,
    test_fold: Optional[str] = None,
    datarc: Optional[Mapping] = None,
    record: Optional[MutableMapping] = None,
) -> dict:
    """The s3prl config of ``task`` (ks/sid/er/asr): the official recipe, deep-merged with the profile
    (``official`` = unchanged, ``smoke`` = ``profiles/smoke.yaml``; profile keys must exist in the recipe),
    then ``overrides`` (nested or dotted keys, e.g. ``{"runner.total_steps": 100}``; may add keys), then
    the explicit parameters:

    learning_rate: per-upstream learning rate, sets ``optimizer.lr`` (SUPERB only tunes this).
    test_fold: ER only, ``fold1``..``fold5`` (sets ``downstream_expert.datarc.test_fold``).
    datarc: data paths (:data:`TASKS` ``[task].data_keys``) written into the placeholders; without it the
        placeholders stay for the runner's ``-o`` (:func:`recipe_override_string`).
    record: a dict to fill with what was applied (task, downstream, profile, learning rates, test fold,
        overrides, the dotted ``changes`` against the official recipe and the recipe source) so the runner
        can store it with the run.
    """
    task = normalize_task(task)
    spec = TASKS[task]
    official = official_recipe(task)
    profile = profile or "official"
    profile_overrides = load_profile(profile, task)
    config = deep_merge(official, profile_overrides, strict=True)
    user = expand_dotted(overrides) if overrides else {}
    config = deep_merge(config, user)
    if learning_rate is not None:
        lr = float(learning_rate)
        if not lr > 0 or lr != lr or lr == float("inf"):
            raise UserInputError(f"learning_rate must be a positive number, got {learning_rate!r}", argument="learning_rate")
        config.setdefault("optimizer", {})["lr"] = lr
    if test_fold is not None:
        config["downstream_expert"]["datarc"]["test_fold"] = _normalize_fold(task, test_fold)
    if datarc:
        for key, value in datarc.items():
            config["downstream_expert"]["datarc"][key] = _check_data_value(task, key, value)
    if record is not None:
        record.update({
            "task": task,
            "downstream": spec.downstream,
            "profile": profile,
            "recipe_source": spec.source,
            "official_learning_rate": official.get("optimizer", {}).get("lr"),
            "learning_rate": float(learning_rate) if learning_rate is not None else None,
            "effective_learning_rate": config.get("optimizer", {}).get("lr"),
            "test_fold": config["downstream_expert"]["datarc"].get("test_fold") if spec.folds else None,
            "profile_overrides": copy.deepcopy(profile_overrides),
            "overrides": copy.deepcopy(user),
            "changes": _diff(official, config),
            "unfilled_data_keys": [k.rsplit(".", 1)[-1] for k in unfilled_placeholders(config)],
        })
    return config


def recipe_override_string(
    task: str,
    datarc: Mapping,
    *,
    learning_rate: Optional[float] = None,
    test_fold: Optional[str] = None,
) -> str:
    """The value of s3prl's ``-o`` that fills the data keys of ``task``, e.g. for ks
    ``config.downstream_expert.datarc.speech_commands_root='/abs/sc',,config.downstream_expert.datarc.speech_commands_test_root='/abs/sc_test'``.

    Every data key of the task is required; paths are made absolute and quoted (s3prl ``eval``s each
    value). ``learning_rate`` adds ``config.optimizer.lr=...``; ``test_fold`` (er) adds the fold.
    """
    task = normalize_task(task)
    spec = TASKS[task]
    missing = [k for k in spec.data_keys if k not in datarc]
    extra = [k for k in datarc if k not in spec.data_keys]
    if missing or extra:
        raise UserInputError(
            f"{task} needs exactly the data keys {list(spec.data_keys)}; missing {missing}, unknown {extra}", argument="datarc"
        )
    parts = [
        f"config.downstream_expert.datarc.{key}={_check_data_value(task, key, datarc[key])!r}"
        for key in spec.data_keys
    ]
    if test_fold is not None:
        fold = _normalize_fold(task, test_fold)
        parts.append(f"config.downstream_expert.datarc.test_fold={fold!r}")
    if learning_rate is not None:
        lr = float(learning_rate)
        if not lr > 0:
            raise UserInputError(f"learning_rate must be positive, got {learning_rate!r}", argument="learning_rate")
        parts.append(f"config.optimizer.lr={lr!r}")
    return ",,".join(parts)


def write_recipe(
    path: PathLike,
    task: str,
    profile: str = "official",
    overrides: Optional[Mapping] = None,
    *,
    learning_rate: Optional[float] = None,
    test_fold: Optional[str] = None,
    datarc: Optional[Mapping] = None,
    force: bool = False,
) -> dict:
    """Write the config YAML for s3prl's ``-c`` and return the run record (see :func:`load_recipe`) plus
    ``config_path``, ``sha256`` of the file and, when ``datarc`` is given, ``data_override`` (the ``-o``
    string with the same paths; harmless to pass as well). An existing different file is only replaced
    with ``force=True``."""
    record: dict = {}
    config = load_recipe(
        task, profile, overrides, learning_rate=learning_rate, test_fold=test_fold, datarc=datarc, record=record
    )
    header = (
        f"# s3prl downstream config written by s3prl_redundancy.superb.recipe_files.write_recipe\n"
        f"# task={record['task']} (-d {record['downstream']}) profile={record['profile']} "
        f"lr={record['effective_learning_rate']!r}\n# source: {record['recipe_source']}\n"
    )
    text = header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    path = Path(path)
    write_if_changed(path, text, force=force, what=f"{record['task']} recipe", argument="path")
    record["config_path"] = str(path.resolve())
    record["sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    record["data_override"] = recipe_override_string(task, datarc) if datarc else None
    return record


def resolve_recipe_data(task: str, data_root: Optional[PathLike] = None, datarc: Optional[Mapping] = None,
                        test_fold: Optional[str] = None) -> dict:
    """The data paths of ``task`` for a stand-alone recipe: found under ``data_root`` (a mini-SUPERB corpus or a
    folder of the real datasets, checked as the runner checks it) and/or given in ``datarc`` (which wins). Every
    data key must end up with a path: a missing one is refused by name, so no placeholder reaches s3prl."""
    task = normalize_task(task, "task")
    paths: dict = {}
    if data_root is not None:
        from .planning import resolve_data  # planning imports this module

        folds = [_normalize_fold(task, test_fold)] if TASKS[task].folds and test_fold is not None else \
            list(TASKS[task].folds[:1])
        found, _ = resolve_data(data_root, [task], folds, {task: dict(datarc or {})})
        paths.update(found[task])
    for key, value in (datarc or {}).items():
        if key not in TASKS[task].data_keys:
            raise UserInputError(f"{task} has the data keys {list(TASKS[task].data_keys)}, not {key!r}", argument="datarc")
        paths[key] = os.path.abspath(os.path.expanduser(str(value)))
    missing = [k for k in TASKS[task].data_keys if k not in paths]
    if missing:
        raise UserInputError(
            f"the {task} recipe needs the data path(s) {', '.join(missing)} (downstream_expert.datarc); give "
            f"`data_root` (a mini-SUPERB corpus or the datasets' folder) or set them in `datarc`", argument="data_root")
    return paths


def write_user_recipe(path: PathLike, task: str, profile: str = "official", *, data_root: Optional[PathLike] = None,
                      datarc: Optional[Mapping] = None, learning_rate: Optional[float] = None,
                      test_fold: Optional[str] = None, overrides: Optional[Mapping] = None, force: bool = False) -> dict:
    """A complete config for s3prl's own ``run_downstream -d <downstream> -c PATH``: the official recipe, the
    profile merged in, the data paths filled (:func:`resolve_recipe_data`) and checked to leave no
    ``<SET_BY_RUNNER:...>`` placeholder. Returns :func:`write_recipe`'s record."""
    if profile not in available_profiles():
        raise UserInputError(f"unknown profile {profile!r}; available: {available_profiles()}", argument="profile")
    paths = resolve_recipe_data(task, data_root, datarc, test_fold)
    config = load_recipe(task, profile, overrides, learning_rate=learning_rate, test_fold=test_fold, datarc=paths)
    left = unfilled_placeholders(config)
    if left:  # a placeholder outside the data keys: the recipe files and TASKS disagree
        raise UserInputError(f"the {task} recipe still has placeholders at {', '.join(left)}", argument="datarc")
    return write_recipe(path, task, profile, overrides, learning_rate=learning_rate, test_fold=test_fold,
                        datarc=paths, force=force)


__all__ = [
    "resolve_recipe_data", "write_user_recipe", "recipes_dir", "available_profiles", "official_recipe", "load_profile", "load_recipe",
    "recipe_override_string", "write_recipe", "deep_merge", "expand_dotted", "unfilled_placeholders",
]
