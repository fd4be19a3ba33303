"""Planning a SUPERB experiment: its options, its data, and the runs it consists of.

:class:`SuperbOptions` holds what ``s3prl-redundancy superb`` takes, as Python values (the command parses the
option strings, :mod:`s3prl_redundancy.commands.superb`); :meth:`SuperbOptions.validate` checks them.
:func:`resolve_data` finds and checks each task's data; :func:`plan_runs` lists every upstream x task (x fold)
run as a :class:`RunPlan` with its configuration fingerprint; :func:`check_existing` compares the plans with
the run folders already on disk (what decides "same run" on resume). The learning-rate search:
:func:`plan_lr_trials` (the exploration runs, each an ordinary run folder ``<task>-lr<rate>``) and
:func:`choose_rates` (the best dev score per upstream x task), whose result :func:`plan_runs` takes.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import UserInputError
from . import recipe_files as rf
from .leaderboard import check_cost_options
from .runs import EXPDIR_NAME, LOCK_NAME, RUN_JSON, read_run_json, run_dir
from .tasks import TASK_ORDER, TASKS, LayoutError, check_layout
from .tasks.er import ER_FOLDS

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_TASKS = TASK_ORDER
DEFAULT_ER_FOLDS = ER_FOLDS


@dataclasses.dataclass(frozen=True)
class UpstreamSpec:
    """One upstream of the benchmark: a label (row / folder name) for an s3prl hub entry plus its -k / -g."""

    label: str
    entry: str
    ckpt: Optional[str] = None
    model_config: Optional[str] = None

    def s3prl_args(self) -> List[str]:
        args = ["-u", self.entry]
        if self.ckpt:
            args += ["-k", self.ckpt]
        if self.model_config:
            args += ["-g", self.model_config]
        return args

    def describe(self) -> Dict[str, Any]:
        return {"label": self.label, "hub_entry": self.entry, "ckpt": self.ckpt, "model_config": self.model_config}


@dataclasses.dataclass
class SuperbOptions:
    """Everything ``s3prl-redundancy superb`` takes (see :func:`.runner.run_superb`).

    upstreams: the rows. tasks: task names (:data:`.tasks.TASKS`). data_root: a mini-SUPERB corpus or a folder
    of the real datasets. out: the experiment folder. profile: ``official`` or a profile of
    ``downstream_recipes/profiles``. learning_rates: ``{(label, task): lr}``. er_folds: ER folds to run.
    recipe_overrides: ``{task: {dotted key: value}}``. datarc_overrides: ``{task: {data key: path}}``.
    force: delete and rerun run folders recorded with another configuration. jobs: runs at the same time.
    threads: OMP/MKL threads per s3prl process. reference: the label capacity kept is relative to.
    lr_search: before each upstream x task run whose rate ``learning_rates`` does not fix, train short exploration
    runs at every rate of :meth:`lr_grid` (``lr_grids`` replaces a task's default grid) for ``lr_search_steps`` steps
    (default: a tenth of the recipe's ``runner.total_steps``) and run the full training at the rate with the best
    dev score (:func:`plan_lr_trials`, :func:`choose_rates`).
    """

    upstreams: List[UpstreamSpec]
    tasks: List[str]
    data_root: Path
    out: Path
    profile: str = "official"
    learning_rates: Dict[Tuple[str, str], float] = dataclasses.field(default_factory=dict)
    er_folds: List[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_ER_FOLDS))
    recipe_overrides: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    datarc_overrides: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    device: str = "cpu"
    force: bool = False
    jobs: int = 1
    threads: Optional[int] = None
    reference: Optional[str] = None
    leaderboard: bool = True
    cost_seconds: float = 1.0
    cost_repeats: int = 5
    lr_search: bool = False
    lr_grids: Dict[str, List[float]] = dataclasses.field(default_factory=dict)
    lr_search_steps: Optional[int] = None

    def lr_grid(self, task: str) -> List[float]:
        """The rates the search tries on ``task``: ``lr_grids[task]`` or the task's documented default."""
        return list(self.lr_grids.get(task) or TASKS[task].lr_grid)

    def validate(self) -> "SuperbOptions":
        """Check the values that do not need the data or the hub (each error names its argument)."""
        labels = [spec.label for spec in self.upstreams]
        if not labels:
            raise UserInputError("no upstream given", argument="upstreams")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise UserInputError(f"unknown or no tasks {unknown}; use some of {list(TASKS)}", argument="tasks")
        if self.profile not in rf.available_profiles():
            raise UserInputError(f"unknown profile {self.profile!r}; available: {rf.available_profiles()}",
                                 argument="profile")
        if self.jobs < 1:
            raise UserInputError(f"must be >= 1, got {self.jobs}", argument="jobs")
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"must be >= 1, got {self.threads}", argument="threads")
        if self.reference is not None and self.reference not in labels:
            raise UserInputError(f"{self.reference!r} is not one of `upstreams` {labels}", argument="reference")
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise UserInputError(f"{self.device!r}: use cpu or cuda", argument="device")
        check_cost_options(self.cost_seconds, self.cost_repeats)
        for spec in self.upstreams:
            check_upstream_files(spec)
        for task, grid in self.lr_grids.items():
            if task not in TASKS or not grid or any(not (lr > 0 and lr != float("inf")) for lr in grid):
                raise UserInputError(f"{task}: {grid!r}; give positive rates of a known task", argument="lr_grids")
        if self.lr_search_steps is not None and self.lr_search_steps < 1:
            raise UserInputError(f"must be >= 1, got {self.lr_search_steps}", argument="lr_search_steps")
        if (self.lr_grids or self.lr_search_steps is not None) and not self.lr_search:
            raise UserInputError("`lr_grids` and `lr_search_steps` only apply to a search: pass `lr_search=True`",
                                 argument="lr_search")
        return self


def check_upstream_files(spec: UpstreamSpec) -> None:
    """An entry that loads a checkpoint has one, and every local ``-k`` / ``-g`` file exists (before any run)."""
    from ..families import entry_needs_checkpoint

    if entry_needs_checkpoint(spec.entry) and not spec.ckpt:
        raise UserInputError(f"{spec.label}: the hub entry {spec.entry!r} loads a checkpoint, and none was given; "
                             f"add `upstream_args={spec.label}:k=PATH`", argument="upstream_args")
    remote = lambda value: str(value).startswith(("http://", "https://"))  # noqa: E731
    # -k is a local file or transformers folder; only s3prl's transformers entries (hf_*) also take a hub id
    if spec.ckpt and not remote(spec.ckpt) and not spec.entry.startswith("hf_") and not Path(spec.ckpt).exists():
        raise UserInputError(f"{spec.label}:k={spec.ckpt} does not exist (no such file or folder); give the path of the "
                             "checkpoint (a file, or a transformers model folder)", argument="upstream_args")
    if spec.model_config and not remote(spec.model_config) and not Path(spec.model_config).is_file():
        raise UserInputError(f"{spec.label}:g={spec.model_config} does not exist (or is not a file); give the path of "
                             "the model config", argument="upstream_args")


def validate_upstreams(specs: Sequence[UpstreamSpec]) -> None:
    """Every entry must be an ``s3prl.hub`` entry; an unknown one lists the known ones."""
    from ..upstream_loading import hub_names

    names = hub_names()
    for spec in specs:
        if spec.entry not in names:
            close = difflib.get_close_matches(spec.entry, names, n=5, cutoff=0.5)
            raise UserInputError(
                f"unknown upstream {spec.entry!r} ({spec.label}): not an s3prl hub entry. "
                + (f"Closest: {', '.join(close)}. " if close else "")
                + f"Known entries ({len(names)}): {', '.join(names)}", argument="upstreams")


def resolve_data(
    data_root: PathLike,
    tasks: Sequence[str],
    er_folds: Sequence[str] = DEFAULT_ER_FOLDS,
    datarc_overrides: Optional[Mapping[str, Mapping[str, str]]] = None,
) -> Tuple[Dict[str, Dict[str, str]], Dict[str, Any]]:
    """``({task: {data key: absolute path}}, data_info)`` for ``data_root`` and check each task's layout.

    A mini-SUPERB corpus root (``corpus.json``) gives its own paths; any other folder is searched for the real
    datasets under the names in :attr:`.tasks.Task.dataset_layout`. Every task is checked with
    :func:`.tasks.check_layout`; a problem raises :class:`UserInputError` naming the expected file or folder.
    """
    from .corpus import MANIFEST, load_corpus

    root = Path(os.path.expanduser(str(data_root))).resolve()
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise UserInputError(
            f"{root} {state}. Build the mini-SUPERB corpus there (s3prl_redundancy.superb.corpus.build_corpus, the corpus "
            "command), or point "
            f"`data_root` at the folder holding the datasets ({', '.join(_dataset_names(tasks))}).",
            argument="data_root")
    overrides = {t: dict(v) for t, v in (datarc_overrides or {}).items()}
    datarc: Dict[str, Dict[str, str]] = {}
    if (root / MANIFEST).is_file():
        corpus = load_corpus(root)
        info: Dict[str, Any] = {"root": str(root), "kind": "mini-superb", "size": corpus.size, "seed": corpus.seed,
                                "content_sha256": corpus.content_sha256}
        for task in tasks:
            datarc[task] = corpus.datarc_for(task)
    else:
        info = {"root": str(root), "kind": "datasets"}
        for task in tasks:
            datarc[task] = _find_dataset_paths(root, task)
    for task in tasks:
        datarc[task].update(overrides.get(task, {}))
        folds = list(er_folds) if TASKS[task].folds else [None]
        for fold in folds:
            extra = {"test_fold": fold} if fold else {}
            try:
                check_layout(task, datarc[task], **extra)
            except LayoutError as e:
                raise UserInputError(
                    f"{task} data ({TASKS[task].description}) under {root}: {e.message} (one path can be set with "
                    f"`datarc_overrides`, e.g. {task}:KEY=PATH; keys: {', '.join(TASKS[task].data_keys)})",
                    argument="data_root") from None
    return datarc, info


def _dataset_names(tasks: Sequence[str]) -> List[str]:
    return [TASKS[t].dataset_layout[TASKS[t].main_key][0] + "/" for t in tasks]


def _find_dataset_paths(root: Path, task: str) -> Dict[str, str]:
    found: Dict[str, str] = {}
    for key, candidates in TASKS[task].dataset_layout.items():
        paths = []
        for cand in candidates:
            if "{recipes}" in cand:
                paths.append(Path(cand.format(recipes=rf.recipes_dir())))
            elif "{root}" in cand:
                paths.append(Path(cand.format(root=found.get("root", root / "IEMOCAP"))))
            else:
                paths.append(root / cand)
        chosen = next((p for p in paths if p.exists()), paths[0])
        found[key] = str(chosen)
    return found


@dataclasses.dataclass
class RunPlan:
    """One upstream x task (x fold) run, ready to execute."""

    upstream: UpstreamSpec
    task: str
    fold: Optional[str]
    run_dir: Path
    learning_rate: Optional[float]
    overrides: Dict[str, Any]
    datarc: Dict[str, str]
    config_fields: Dict[str, Any]
    config_hash: str
    trial: Optional[Dict[str, Any]] = None  # an exploration run of the learning-rate search: {"rate", "steps"}
    search: Optional[Dict[str, Any]] = None  # the search that chose learning_rate (see choose_rates)

    @property
    def name(self) -> str:
        return f"{self.upstream.label}/{self.run_dir.name}"

    @property
    def expdir(self) -> Path:
        return self.run_dir / EXPDIR_NAME


def _sha256_file(path: str, cache: Dict[str, str]) -> str:
    if path not in cache:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        cache[path] = digest.hexdigest()
    return cache[path]


def _canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _upstream_files(up: UpstreamSpec, file_hashes: Dict[str, str]) -> Dict[str, Any]:
    files = {}
    for key, value in (("k", up.ckpt), ("g", up.model_config)):
        if value and not str(value).startswith(("http://", "https://")):
            files[key] = {"sha256": _sha256_file(value, file_hashes), "bytes": os.path.getsize(value)}
        elif value:
            files[key] = {"url": value}
    return files


def _plan(opts: SuperbOptions, up: UpstreamSpec, files: Mapping[str, Any], task: str, fold: Optional[str],
          lr: Optional[float], datarc: Mapping[str, str], data_identity: Mapping[str, Any],
          trial: Optional[Dict[str, Any]] = None, search: Optional[Dict[str, Any]] = None) -> RunPlan:
    """One run with its fingerprint; a ``trial`` (exploration of the learning-rate search) trains ``steps`` steps
    in its own folder ``<task>[-<fold>]-lr<rate>``."""
    overrides = dict(opts.recipe_overrides.get(task, {}))
    if trial:
        overrides.update(trial["overrides"])
    config = rf.load_recipe(task, opts.profile, overrides, learning_rate=lr, test_fold=fold, datarc=datarc)
    fields = {"hub_entry": up.entry, "upstream_files": files, "task": task, "fold": fold, "profile": opts.profile,
              "recipe_overrides": overrides, "learning_rate": lr, "recipe_sha256": _canonical_hash(config),
              "data": dict(data_identity)}
    if trial:
        fields["lr_trial"] = {"rate": lr, "steps": trial["steps"]}
    folder = run_dir(opts.out, up.label, task, fold)
    if trial:
        folder = folder.with_name(f"{folder.name}-{lr_suffix(lr)}")
    return RunPlan(upstream=up, task=task, fold=fold, run_dir=folder, learning_rate=lr, overrides=overrides,
                   datarc=dict(datarc), config_fields=fields, config_hash=_canonical_hash(fields),
                   trial={"rate": lr, "steps": trial["steps"]} if trial else None, search=search)


def _data_identity(data_info: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: data_info.get(k) for k in ("kind", "size", "seed", "content_sha256") if k in data_info}


def plan_runs(opts: SuperbOptions, datarc: Mapping[str, Mapping[str, str]], data_info: Mapping[str, Any],
              searches: Optional[Mapping[Tuple[str, str], Dict[str, Any]]] = None) -> List[RunPlan]:
    """Every run of ``opts`` with its configuration fingerprint (what decides 'same run' on resume).
    ``searches``: ``{(label, task): search}`` from :func:`choose_rates`, whose ``chosen`` rate the run trains with
    (a rate fixed in ``opts.learning_rates`` wins)."""
    plans: List[RunPlan] = []
    file_hashes: Dict[str, str] = {}
    for up in opts.upstreams:
        files = _upstream_files(up, file_hashes)
        for task in opts.tasks:
            search = None if (up.label, task) in opts.learning_rates else (searches or {}).get((up.label, task))
            lr = opts.learning_rates.get((up.label, task), search["chosen"] if search else None)
            for fold in (opts.er_folds if TASKS[task].folds else [None]):
                plans.append(_plan(opts, up, files, task, fold, lr, datarc[task], _data_identity(data_info),
                                   search=search))
    return plans


# --------------------------------------------------------------------------------------------------
# learning-rate search
# --------------------------------------------------------------------------------------------------


def lr_suffix(rate: float) -> str:
    """``lr1e-03``: the folder suffix of an exploration run at ``rate``."""
    return f"lr{float(rate):.0e}" if float(f"{float(rate):.0e}") == float(rate) else f"lr{float(rate):g}"


def trial_overrides(opts: SuperbOptions, task: str) -> Tuple[int, Dict[str, Any]]:
    """``(steps, recipe overrides)`` of an exploration run: ``lr_search_steps`` (default a tenth of the recipe's
    ``runner.total_steps``, at least 1), with dev evaluation and checkpoints no further apart than that, so every
    exploration is scored on the dev split at least once."""
    runner = rf.load_recipe(task, opts.profile, opts.recipe_overrides.get(task, {}))["runner"]
    steps = int(opts.lr_search_steps or max(1, int(runner["total_steps"]) // 10))
    return steps, {"runner.total_steps": steps, "runner.eval_step": min(int(runner["eval_step"]), steps),
                   "runner.save_step": min(int(runner["save_step"]), steps)}


def plan_lr_trials(opts: SuperbOptions, datarc: Mapping[str, Mapping[str, str]],
                   data_info: Mapping[str, Any]) -> List[RunPlan]:
    """The exploration runs of the learning-rate search: every upstream x task whose rate is not fixed, at every
    rate of its grid. A task with folds (ER) explores on its first selected fold; the rate serves all folds."""
    if not opts.lr_search:
        return []
    plans: List[RunPlan] = []
    file_hashes: Dict[str, str] = {}
    for up in opts.upstreams:
        files = _upstream_files(up, file_hashes)
        for task in opts.tasks:
            if (up.label, task) in opts.learning_rates:
                continue
            steps, overrides = trial_overrides(opts, task)
            fold = opts.er_folds[0] if TASKS[task].folds else None
            for rate in opts.lr_grid(task):
                plans.append(_plan(opts, up, files, task, fold, float(rate), datarc[task], _data_identity(data_info),
                                   trial={"steps": steps, "overrides": overrides}))
    return plans


def choose_rates(trials: Sequence[RunPlan], records: Sequence[Mapping[str, Any]]) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """``{(label, task): search}`` from the exploration runs and their ``run.json`` records (same order): the rate
    whose best dev score (``dev_best``) is best (highest accuracy, lowest WER; the first in grid order on a tie).
    ``search``: ``{"grid", "trials": [{"rate", "value", "step", "status"}], "chosen", "split", "metric"}``; when no
    exploration left a dev score, ``chosen`` is None and the full run keeps the recipe's rate."""
    out: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for plan, record in zip(trials, records):
        spec = TASKS[plan.task]
        search = out.setdefault((plan.upstream.label, plan.task), {
            "grid": [], "trials": [], "chosen": None, "split": spec.dev_split, "metric": spec.metric,
            "steps": plan.trial["steps"], "fold": plan.fold})
        dev = record.get("dev_best") or {}
        search["grid"].append(plan.learning_rate)
        search["trials"].append({"rate": plan.learning_rate, "value": dev.get("value"), "step": dev.get("step"),
                                 "status": record.get("status"), "run": plan.run_dir.name})
    for (label, task), search in out.items():
        scored = [t for t in search["trials"] if t["value"] is not None]
        if scored:
            pick = max if TASKS[task].higher_is_better else min
            search["chosen"] = pick(scored, key=lambda t: t["value"])["rate"]
    return out


def _differences(old: Mapping, new: Mapping, prefix: str = "") -> List[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        where = f"{prefix}.{key}" if prefix else key
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(_differences(a, b, where))
        elif a != b:
            out.append(f"{where}: {a!r} -> {b!r}")
    return out


def check_existing(plans: Sequence[RunPlan], force: bool) -> List[RunPlan]:
    """Refuse (or with ``force`` delete) run folders recorded with another configuration; returns the plans
    whose folders ``force`` will replace."""
    conflicts, replace = [], []
    for plan in plans:
        if not plan.run_dir.exists():
            continue
        try:
            old = read_run_json(plan.run_dir)
        except UserInputError as e:
            if not force:
                conflicts.append(f"{plan.run_dir}: {e}")
            replace.append(plan)
            continue
        if old is None:
            if any(p.name != LOCK_NAME for p in plan.run_dir.iterdir()):
                if not force:
                    conflicts.append(f"{plan.run_dir}: not empty and has no {RUN_JSON}")
                replace.append(plan)
            continue
        if old.get("config_hash") != plan.config_hash:
            if not force:
                diff = _differences(old.get("config", {}), plan.config_fields) or ["(recorded fingerprint differs)"]
                conflicts.append(f"{plan.run_dir} was run with another configuration: " + "; ".join(diff))
            replace.append(plan)
    if conflicts:
        raise UserInputError(
            "refusing to reuse run folders made with a different configuration:\n  " + "\n  ".join(conflicts)
            + "\nPass `force=True` to delete these runs and start them again, or choose another `out`.", argument="out"
        )
    return replace


__all__ = ["DEFAULT_TASKS", "DEFAULT_ER_FOLDS", "UpstreamSpec", "SuperbOptions", "RunPlan", "validate_upstreams",
           "resolve_data", "plan_runs", "check_existing", "lr_suffix", "trial_overrides", "plan_lr_trials",
           "choose_rates"]
