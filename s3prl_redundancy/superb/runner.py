"""Run SUPERB (KS, SID, ER, ASR) on several upstreams with s3prl's own ``run_downstream``, resumably.

For every upstream x task (ER: x fold) the runner

1. writes the recipe (:func:`recipe_files.write_recipe`: the official config, the profile, the
   ``--recipe-override`` values, the per-upstream learning rate and the data paths) to ``recipe.yaml``;
2. trains with ``python -m s3prl.run_downstream -m train -u ENTRY [-k] [-g] -d DOWNSTREAM -c recipe.yaml
   -p expdir`` in a subprocess (s3prl's code, unchanged; our hub entries and compatibility layer are active in
   every process through the start-up hook), its output in ``train.log``;
3. tests with ``-m evaluate -t <test split> -e <dev-best.ckpt, else the last states-*.ckpt>``, its output in
   ``test.log``, and reads the metric (:mod:`.results`);
4. keeps ``run.json``: upstream, arguments, task, fold, profile, recipe hash, learning rate, status, metric,
   logs, wall time and the commands.

Layout of ``--out EXPROOT``::

    superb.json                          the invocations (upstream order, reference, options)
    runs/<label>/<task>/                 one run (ER: runs/<label>/er-fold<N>/)
        run.json  recipe.yaml  train.log  test.log  expdir/ (s3prl's -p folder)  voxceleb1_cache/ (SID)
    leaderboard.{csv,md,json}, pareto.png, cost.json   (see :mod:`.leaderboard`)

Resume: a finished run with the same configuration is skipped; an interrupted one continues from its
latest complete ``states-*.ckpt`` (``-m train -e <ckpt>``; s3prl restores step, optimizer and the downstream
weights) or starts over when there is none; a run whose training finished but whose test did not only
re-runs the test. A failed run is retried. A run directory recorded with a different configuration is
refused unless ``force=True``, which deletes it and starts that run again.

SID: s3prl's voxceleb1 dataset caches its file lists in ``<site-packages>/s3prl/downstream/voxceleb1/.cache``
whatever the data path (so two corpora collide). SID runs therefore go through a two-line launcher that
points the dataset's ``CACHE_PATH`` at the run's own ``voxceleb1_cache/`` (emptied when training starts
from scratch) before s3prl's ``run_downstream`` runs; the shared cache in site-packages is never used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import UserInputError
from . import recipe_files as rf
from . import results as res

PathLike = Union[str, "os.PathLike[str]"]

RUN_FORMAT = "s3prl_redundancy.superb.run/1"
SUPERB_JSON = "superb.json"
RUNS_DIR = "runs"
RUN_JSON = "run.json"
RECIPE_NAME = "recipe.yaml"
TRAIN_LOG = "train.log"
TEST_LOG = "test.log"
EXPDIR_NAME = "expdir"
SID_CACHE_NAME = "voxceleb1_cache"
DEFAULT_TASKS = ("ks", "sid", "er", "asr")
DEFAULT_ER_FOLDS = rf.ER_FOLDS

STATUS_FINISHED, STATUS_FAILED = "finished", "failed"
STATUS_TRAINING, STATUS_TESTING, STATUS_INTERRUPTED = "training", "testing", "interrupted"

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

SID_LAUNCH_CODE = (
    "import runpy, sys; import s3prl.downstream.voxceleb1.dataset as d; "
    "d.CACHE_PATH = sys.argv[1].rstrip('/') + '/'; sys.argv = ['run_downstream.py'] + sys.argv[2:]; "
    "runpy.run_module('s3prl.run_downstream', run_name='__main__', alter_sys=True)"
)
"""``python -c SID_LAUNCH_CODE <cache dir> <run_downstream arguments>``: s3prl's run_downstream, unchanged,
with the voxceleb1 file-list cache in ``<cache dir>`` instead of inside the installed package."""

DATASET_LAYOUT = {
    "ks": {"speech_commands_root": ("speech_commands_v0.01",),
           "speech_commands_test_root": ("speech_commands_test_set_v0.01",)},
    "sid": {"file_path": ("VoxCeleb1",), "meta_data": ("VoxCeleb1/iden_split.txt",)},
    "er": {"root": ("IEMOCAP", "IEMOCAP_full_release"), "meta_data": ("{root}/meta_data",)},
    "asr": {"libri_root": ("LibriSpeech",), "bucket_file": ("LibriSpeech/len_for_bucket",),
            "dict_path": ("LibriSpeech/char.dict", "{recipes}/asr/char.dict")},
}
"""Where the runner looks for each data key under a ``--data-root`` that holds the real datasets (the same
names as the mini-SUPERB corpus); the first existing candidate wins. ``--datarc TASK:KEY=PATH`` overrides one."""


# ==================================================================================================
# options and their parsers
# ==================================================================================================


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
    """Everything ``s3prl-redundancy superb`` takes (see :func:`run_superb`)."""

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


def _split_list(text: Union[str, Sequence[str], None]) -> List[str]:
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def parse_tasks(text: Union[str, Sequence[str], None]) -> List[str]:
    """``"ks,sid"`` -> ``["ks", "sid"]`` (s3prl downstream names accepted); unknown names list the known ones."""
    names = _split_list(text) or list(DEFAULT_TASKS)
    out: List[str] = []
    for name in names:
        task = rf.normalize_task(name)
        if task not in out:
            out.append(task)
    return out


def parse_upstreams(text: Union[str, Sequence[str]]) -> List[Tuple[str, str]]:
    """``"hubert_local,p6=pruned_hubert"`` -> ``[("hubert_local", "hubert_local"), ("p6", "pruned_hubert")]``:
    ``LABEL=ENTRY`` names a row (so one hub entry can appear with different -k / -g), else the label is the entry."""
    items = _split_list(text)
    if not items:
        raise UserInputError("--upstreams is empty; give s3prl hub entries, e.g. --upstreams hubert_local,pruned_hubert")
    out, seen = [], set()
    for item in items:
        label, sep, entry = item.partition("=")
        label, entry = (label.strip(), entry.strip()) if sep else (item, item)
        if not entry:
            raise UserInputError(f"--upstreams item {item!r} names no hub entry; use LABEL=ENTRY or ENTRY")
        if not _LABEL_RE.match(label):
            raise UserInputError(
                f"upstream label {label!r} is not usable as a folder name; use letters, digits, '_', '.', '-' "
                "(e.g. --upstreams base=hubert_local,p6=pruned_hubert)"
            )
        if label in seen:
            raise UserInputError(f"upstream label {label!r} appears twice in --upstreams; give each a LABEL=ENTRY name")
        seen.add(label)
        out.append((label, entry))
    return out


_ARG_KEYS = {"k": "ckpt", "ckpt": "ckpt", "g": "model_config", "model_config": "model_config"}


def _name_prefix(item: str, labels: Sequence[str], option: str, example: str) -> Tuple[str, str]:
    label, sep, rest = item.partition(":")
    if not sep or not rest:
        raise UserInputError(f"{option} {item!r} is not NAME:{example}")
    label = label.strip()
    if label not in labels:
        raise UserInputError(f"{option} {item!r} names upstream {label!r}, which is not in --upstreams {list(labels)}")
    return label, rest


def parse_upstream_args(items: Optional[Sequence[str]], labels: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """``["p6:k=hubert.pt,g=keep.yaml"]`` -> ``{"p6": {"ckpt": "/abs/hubert.pt", "model_config": "/abs/keep.yaml"}}``.
    Local paths are made absolute and must exist; URLs are kept."""
    out: Dict[str, Dict[str, str]] = {}
    for item in items or []:
        label, rest = _name_prefix(item, labels, "--upstream-args", "k=CKPT,g=MODEL_CONFIG")
        args = out.setdefault(label, {})
        for part in rest.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in _ARG_KEYS or not value:
                raise UserInputError(
                    f"--upstream-args {item!r}: {part!r} is not k=PATH or g=PATH (k: the checkpoint s3prl gets "
                    "with -k, g: the model config it gets with -g)"
                )
            name = _ARG_KEYS[key]
            if name in args:
                raise UserInputError(f"--upstream-args gives {key} twice for {label!r}")
            if not value.startswith(("http://", "https://")):
                path = Path(os.path.expanduser(value)).resolve()
                if not path.is_file():
                    raise UserInputError(
                        f"--upstream-args {label}: {key}={value} does not exist (or is not a file): {path}. "
                        "Give the path of the checkpoint (k) or model config (g)."
                    )
                value = str(path)
            args[name] = value
    return out


def parse_learning_rates(items: Optional[Sequence[str]], labels: Sequence[str], tasks: Sequence[str]) -> Dict[Tuple[str, str], float]:
    """``["p6:ks=5e-5,asr=1e-4", "base:all=2e-4"]`` -> ``{("p6", "ks"): 5e-5, ...}`` (``all``: every task)."""
    out: Dict[Tuple[str, str], float] = {}
    for item in items or []:
        label, rest = _name_prefix(item, labels, "--learning-rate", "TASK=LR (e.g. pruned_hubert:ks=5e-5)")
        for part in rest.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise UserInputError(f"--learning-rate {item!r}: {part!r} is not TASK=LR")
            key = key.strip().lower()
            try:
                lr = float(value)
            except ValueError:
                raise UserInputError(f"--learning-rate {item!r}: {value!r} is not a number") from None
            if not lr > 0 or lr == float("inf"):
                raise UserInputError(f"--learning-rate {item!r}: the learning rate must be positive, got {value!r}")
            targets = list(tasks) if key in ("all", "*") else [rf.normalize_task(key)]
            for task in targets:
                if task not in tasks:
                    raise UserInputError(f"--learning-rate {item!r} sets task {task!r}, which is not in --tasks {list(tasks)}")
                out[(label, task)] = lr
    return out


def parse_er_folds(text: Union[str, Sequence[str], None]) -> List[str]:
    """``"1,2"`` or ``"fold1,fold3"`` -> ``["fold1", "fold2"]`` (default: all five)."""
    items = _split_list(text)
    if not items:
        return list(DEFAULT_ER_FOLDS)
    out: List[str] = []
    for item in items:
        fold = item.lower()
        fold = f"fold{fold}" if fold.isdigit() else fold
        if fold not in rf.ER_FOLDS:
            raise UserInputError(f"--er-folds: {item!r} is not one of 1..5 (IEMOCAP sessions held out for testing)")
        if fold not in out:
            out.append(fold)
    return out


def _recipe_has_key(config: Mapping, dotted: str) -> bool:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _recipe_keys(config: Mapping, prefix: str = "") -> List[str]:
    out = []
    for key, value in config.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        out.append(where)
        if isinstance(value, Mapping):
            out.extend(_recipe_keys(value, where))
    return out


def parse_recipe_overrides(items: Optional[Sequence[str]], tasks: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``["runner.total_steps=4", "asr:downstream_expert.modelrc.RNNs.dim=[32, 32]"]`` -> per task
    ``{dotted key: value}`` (values are YAML). Without ``TASK:`` an override applies to every selected task whose
    official recipe has the key. Overrides of tasks that are not selected are ignored (one override list serves
    any ``--tasks``), but a key must exist in the official recipe of its task(s): a typo is refused with the
    closest keys."""
    import yaml

    out: Dict[str, Dict[str, Any]] = {}
    for item in items or []:
        head, sep, text = item.partition("=")
        if not sep or not head.strip():
            raise UserInputError(f"--recipe-override {item!r} is not [TASK:]dotted.key=VALUE (e.g. runner.total_steps=4)")
        if ":" in head:
            task_name, key = head.split(":", 1)
            candidates = [rf.normalize_task(task_name)]
        else:
            key, candidates = head, list(rf.TASKS)
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserInputError(f"--recipe-override {item!r}: the value is not YAML ({e})") from None
        having = [t for t in candidates if _recipe_has_key(rf.official_recipe(t), key)]
        if not having:
            known = sorted({k for t in candidates for k in _recipe_keys(rf.official_recipe(t))})
            close = difflib.get_close_matches(key, known, n=4, cutoff=0.5)
            raise UserInputError(
                f"--recipe-override {item!r}: the official recipe of {', '.join(candidates)} has no key {key!r}"
                + (f"; did you mean {', '.join(close)}?" if close else "; see downstream_recipes/<task>.yaml for the keys")
            )
        for task in having:
            if task in tasks:
                out.setdefault(task, {})[key] = value
    return out


def parse_datarc_overrides(items: Optional[Sequence[str]], tasks: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """``["sid:file_path=/data/vox1"]`` -> ``{"sid": {"file_path": "/data/vox1"}}`` (keys: :data:`recipe_files.TASKS`)."""
    out: Dict[str, Dict[str, str]] = {}
    for item in items or []:
        head, sep, value = item.partition("=")
        if not sep or ":" not in head or not value.strip():
            raise UserInputError(f"--datarc {item!r} is not TASK:KEY=PATH (e.g. sid:file_path=/data/VoxCeleb1)")
        task_name, key = head.split(":", 1)
        task, key = rf.normalize_task(task_name), key.strip()
        if key not in rf.TASKS[task].data_keys:
            raise UserInputError(f"--datarc {item!r}: {task} has the data keys {list(rf.TASKS[task].data_keys)}, not {key!r}")
        if task in tasks:
            out.setdefault(task, {})[key] = str(Path(os.path.expanduser(value.strip())).resolve())
    return out


# ==================================================================================================
# data
# ==================================================================================================


def resolve_data(
    data_root: PathLike,
    tasks: Sequence[str],
    er_folds: Sequence[str] = DEFAULT_ER_FOLDS,
    datarc_overrides: Optional[Mapping[str, Mapping[str, str]]] = None,
) -> Tuple[Dict[str, Dict[str, str]], Dict[str, Any]]:
    """``({task: {data key: absolute path}}, data_info)`` for ``--data-root`` and check each task's layout.

    A mini-SUPERB corpus root (``corpus.json``) gives its own paths; any other folder is searched for the real
    datasets under the names in :data:`DATASET_LAYOUT`. Every task is checked with
    :func:`corpus.check_layout`; a problem raises :class:`UserInputError` naming the expected file or folder.
    """
    from .corpus import LayoutError, MANIFEST, check_layout, load_corpus

    root = Path(os.path.expanduser(str(data_root))).resolve()
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise UserInputError(
            f"--data-root {root} {state}. Build the mini-SUPERB corpus there with `s3prl-redundancy corpus --out "
            f"{root}`, or point --data-root at the folder holding the datasets ({', '.join(_dataset_names(tasks))})."
        )
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
        folds = list(er_folds) if task == "er" else [None]
        for fold in folds:
            extra = {"test_fold": fold} if fold else {}
            try:
                check_layout(task, datarc[task], **extra)
            except LayoutError as e:
                raise UserInputError(
                    f"{task} data ({rf.TASKS[task].description}) under --data-root {root}: {e} "
                    f"(one path can be set with --datarc {task}:KEY=PATH; keys: {', '.join(rf.TASKS[task].data_keys)})"
                ) from None
    return datarc, info


def _dataset_names(tasks: Sequence[str]) -> List[str]:
    return [DATASET_LAYOUT[t][rf.TASKS[t].data_keys[0]][0] + "/" for t in tasks]


def _find_dataset_paths(root: Path, task: str) -> Dict[str, str]:
    found: Dict[str, str] = {}
    for key, candidates in DATASET_LAYOUT[task].items():
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


# ==================================================================================================
# planning
# ==================================================================================================


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

    @property
    def name(self) -> str:
        return f"{self.upstream.label}/{self.run_dir.name}"

    @property
    def expdir(self) -> Path:
        return self.run_dir / EXPDIR_NAME


def run_dir_name(task: str, fold: Optional[str]) -> str:
    return f"{task}-{fold}" if fold else task


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


def plan_runs(opts: SuperbOptions, datarc: Mapping[str, Mapping[str, str]], data_info: Mapping[str, Any]) -> List[RunPlan]:
    """Every run of ``opts`` with its configuration fingerprint (what decides 'same run' on resume)."""
    plans: List[RunPlan] = []
    file_hashes: Dict[str, str] = {}
    data_identity = {k: data_info.get(k) for k in ("kind", "size", "seed", "content_sha256") if k in data_info}
    for up in opts.upstreams:
        files = {}
        for key, value in (("k", up.ckpt), ("g", up.model_config)):
            if value and not str(value).startswith(("http://", "https://")):
                files[key] = {"sha256": _sha256_file(value, file_hashes), "bytes": os.path.getsize(value)}
            elif value:
                files[key] = {"url": value}
        for task in opts.tasks:
            lr = opts.learning_rates.get((up.label, task))
            overrides = dict(opts.recipe_overrides.get(task, {}))
            for fold in (opts.er_folds if task == "er" else [None]):
                config = rf.load_recipe(task, opts.profile, overrides, learning_rate=lr, test_fold=fold,
                                        datarc=datarc[task])
                fields = {
                    "hub_entry": up.entry,
                    "upstream_files": files,
                    "task": task,
                    "fold": fold,
                    "profile": opts.profile,
                    "recipe_overrides": overrides,
                    "learning_rate": lr,
                    "recipe_sha256": _canonical_hash(config),
                    "data": data_identity,
                }
                plans.append(RunPlan(
                    upstream=up, task=task, fold=fold,
                    run_dir=opts.out / RUNS_DIR / up.label / run_dir_name(task, fold),
                    learning_rate=lr, overrides=overrides, datarc=dict(datarc[task]),
                    config_fields=fields, config_hash=_canonical_hash(fields),
                ))
    return plans


def read_run_json(run_dir: PathLike) -> Optional[Dict[str, Any]]:
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserInputError(f"{path} is not valid JSON ({e}); delete the run folder or rerun with --force") from None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise UserInputError(f"{path} was not written by the SUPERB runner ({RUN_FORMAT}); use another --out or --force")
    return data


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
            if any(p.name != ".lock" for p in plan.run_dir.iterdir()):
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
            + "\nPass --force to delete these runs and start them again, or choose another --out."
        )
    return replace


# ==================================================================================================
# launching s3prl
# ==================================================================================================

Launcher = Callable[[List[str], Path, Path, Dict[str, str]], int]
"""``launcher(command, log_path, cwd, env) -> exit status``; the default runs a subprocess."""


def subprocess_launcher(command: List[str], log_path: Path, cwd: Path, env: Dict[str, str],
                        pass_fds: Sequence[int] = ()) -> int:
    """Run ``command`` with stdout and stderr appended to ``log_path``; return its exit status (negative:
    killed by that signal). On KeyboardInterrupt the child is stopped before re-raising. ``pass_fds``: the run's
    lock file, inherited so the run stays locked while the child lives (even if this process dies first)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, cwd=str(cwd), env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, pass_fds=tuple(pass_fds))
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


def s3prl_command(args: Sequence[str], sid_cache: Optional[Path] = None) -> List[str]:
    """The command line running s3prl's ``run_downstream`` with ``args`` (SID: through :data:`SID_LAUNCH_CODE`)."""
    if sid_cache is not None:
        return [sys.executable, "-c", SID_LAUNCH_CODE, str(sid_cache), *args]
    return [sys.executable, "-m", "s3prl.run_downstream", *args]


def latest_checkpoint(expdir: Path) -> Optional[Path]:
    """The complete ``states-<step>.ckpt`` with the highest step (a file cut short by a kill is skipped)."""
    found = []
    for path in Path(expdir).glob("states-*.ckpt"):
        match = re.match(r"^states-(\d+)\.ckpt$", path.name)
        if match and zipfile.is_zipfile(path):
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def choose_test_checkpoint(task: str, expdir: Path) -> Tuple[Optional[Path], Optional[str]]:
    """``(path, kind)``: the expert's ``<dev split>-best.ckpt`` if it saved one, else the last states ckpt."""
    best = Path(expdir) / f"{res.DEV_SPLIT[task]}-best.ckpt"
    if best.is_file() and zipfile.is_zipfile(best):
        return best, "dev-best"
    last = latest_checkpoint(expdir)
    return (last, "last") if last is not None else (None, None)


def _s3prl_path(path: Path, what: str) -> str:
    text = str(path)
    if "=" in text or ",," in text:
        raise UserInputError(f"{what} {text} contains '=' or ',,', which s3prl's -o parser cannot carry; use another path")
    return text


# ==================================================================================================
# executing one run
# ==================================================================================================


class _Printer:
    def __init__(self, total: int):
        self.total = total
        self.lock = threading.Lock()
        self.bar = None
        if total > 1 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="SUPERB runs", unit="run", leave=False)

    def __call__(self, index: int, name: str, message: str) -> None:
        line = f"[{index}/{self.total}] {name}: {message}"
        with self.lock:
            if self.bar is not None:
                self.bar.write(line, file=sys.stdout)
            else:
                print(line, flush=True)

    def done(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """An exclusive lock on ``run_dir/.lock``, released when every process holding it has ended; yields the
    file descriptor, or None when another process holds the lock."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / ".lock", "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield None
            return
        try:
            yield fh.fileno()
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _write_run_json(run_dir: Path, record: Mapping[str, Any]) -> None:
    from ..io import atomic_write_text

    atomic_write_text(run_dir / RUN_JSON, json.dumps(record, indent=2, default=str) + "\n")


def _metric_text(metric: Optional[Mapping[str, Any]]) -> str:
    if not metric:
        return "no metric"
    return f"test {metric['metric']} {res.percent(metric):.2f}%"


def _log_header(log_path: Path, title: str, command: Sequence[str]) -> int:
    """Append a header for one attempt; return the log's size after it (where the command's output starts)."""
    import shlex

    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(f"\n===== {_now()} {title}\n$ {' '.join(shlex.quote(c) for c in command)}\n")
    return log_path.stat().st_size


def _child_env(opts: SuperbOptions) -> Dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    threads = opts.threads
    if threads is None and opts.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // opts.jobs)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def _new_record(plan: RunPlan, opts: SuperbOptions) -> Dict[str, Any]:
    import platform

    try:
        from importlib.metadata import version

        s3prl_version = version("s3prl")
    except Exception:
        s3prl_version = None
    return {
        "format": RUN_FORMAT,
        "upstream": plan.upstream.label,
        "hub_entry": plan.upstream.entry,
        "upstream_args": {"k": plan.upstream.ckpt, "g": plan.upstream.model_config},
        "task": plan.task,
        "fold": plan.fold,
        "downstream": rf.TASKS[plan.task].downstream,
        "profile": opts.profile,
        "recipe_overrides": plan.overrides,
        "learning_rate": {"override": plan.learning_rate},
        "datarc": plan.datarc,
        "config": plan.config_fields,
        "config_hash": plan.config_hash,
        "device": opts.device,
        "status": "planned",
        "metric": None,
        "dev_best": None,
        "error": None,
        "log": None,
        "train": {"done": False, "attempts": 0, "seconds": 0.0},
        "test": {"done": False, "attempts": 0, "seconds": 0.0},
        "wall_seconds": 0.0,
        "created_at": _now(),
        "versions": {"s3prl": s3prl_version, "python": platform.python_version()},
    }


def execute_run(plan: RunPlan, opts: SuperbOptions, launcher: Launcher, report: Callable[[str], None]) -> Dict[str, Any]:
    """Train (or resume) and test one run; returns its final ``run.json`` record. Never raises for a crash of
    s3prl or another error of this run (only KeyboardInterrupt passes): the record's status is ``failed`` with
    the error and the log path."""
    run_dir = plan.run_dir
    with _run_lock(run_dir) as lock_fd:
        if lock_fd is None:
            report(f"skipped: another process holds {run_dir / '.lock'} (it is running this run now)")
            record = read_run_json(run_dir) or _new_record(plan, opts)
            return dict(record, status=record.get("status"), skipped="locked by another process")
        record = read_run_json(run_dir)
        if record is not None and record.get("status") == STATUS_FINISHED:
            report(f"finished earlier ({_metric_text(record.get('metric'))}); skipped")
            return dict(record, skipped="finished earlier")
        if record is None:
            record = _new_record(plan, opts)
        elif record.get("status") in (STATUS_TRAINING, STATUS_TESTING, STATUS_INTERRUPTED, STATUS_FAILED):
            report(f"previous attempt ended as '{record['status']}' ({record.get('error') or 'interrupted'}); continuing")
        record["device"] = opts.device
        started = time.perf_counter()
        base_wall = float(record.get("wall_seconds") or 0.0)
        if launcher is subprocess_launcher:
            launcher = functools.partial(subprocess_launcher, pass_fds=(lock_fd,))
        try:
            _execute(plan, opts, launcher, report, record)
        except KeyboardInterrupt:
            record.update(status=STATUS_INTERRUPTED, error="interrupted by the user (Ctrl-C)")
            raise
        except Exception as e:  # a problem of this run (a file it cannot write, ...) must not stop the others
            _fail(record, f"runner error: {type(e).__name__}: {e}", Path(record.get("log") or run_dir / TRAIN_LOG), report)
        finally:
            record["wall_seconds"] = base_wall + time.perf_counter() - started
            record["updated_at"] = _now()
            _write_run_json(run_dir, record)
        return record


def _fail(record: Dict[str, Any], message: str, log: Path, report: Callable[[str], None]) -> None:
    record.update(status=STATUS_FAILED, error=message, log=str(log))
    report(f"FAILED: {message}; log: {log}")


def _execute(plan: RunPlan, opts: SuperbOptions, launcher: Launcher, report: Callable[[str], None],
             record: Dict[str, Any]) -> None:
    run_dir, expdir, task = plan.run_dir, plan.expdir, plan.task
    sid_cache = run_dir / SID_CACHE_NAME if task == "sid" else None
    env = _child_env(opts)
    recipe = rf.write_recipe(run_dir / RECIPE_NAME, task, opts.profile, plan.overrides,
                             learning_rate=plan.learning_rate, test_fold=plan.fold, datarc=plan.datarc, force=True)
    record["recipe"] = {k: recipe[k] for k in ("config_path", "sha256", "recipe_source", "changes")}
    record["learning_rate"] = {"override": plan.learning_rate, "effective": recipe["effective_learning_rate"],
                               "official": recipe["official_learning_rate"]}
    expdir_arg = _s3prl_path(expdir, "run folder")
    train_log, test_log = run_dir / TRAIN_LOG, run_dir / TEST_LOG

    # ---- train ------------------------------------------------------------------------------------
    if not record["train"].get("done"):
        resume = latest_checkpoint(expdir) if expdir.is_dir() else None
        if resume is not None:
            args = ["-m", "train", "-e", str(resume), "-o", f"args.expdir={expdir_arg!r}", "--device", opts.device]
            what = f"resuming training from {resume.name}"
        else:
            if expdir.exists():  # a previous attempt left no usable checkpoint: start clean
                shutil.rmtree(expdir)
            if sid_cache is not None and sid_cache.exists():
                shutil.rmtree(sid_cache)
            args = ["-m", "train", *plan.upstream.s3prl_args(), "-d", rf.TASKS[task].downstream,
                    "-c", recipe["config_path"], "-p", expdir_arg, "--device", opts.device]
            what = "training"
        command = s3prl_command(args, sid_cache)
        record["train"].update(command=command, log=str(train_log), resumed_from=str(resume) if resume else None,
                               attempts=int(record["train"].get("attempts", 0)) + 1, started_at=_now())
        record.update(status=STATUS_TRAINING, error=None, log=str(train_log))
        _write_run_json(run_dir, record)
        report(f"{what} (log: {train_log})")
        _log_header(train_log, what, command)
        t0 = time.perf_counter()
        code = launcher(command, train_log, run_dir, env)
        record["train"]["seconds"] = float(record["train"].get("seconds", 0.0)) + time.perf_counter() - t0
        record["train"]["returncode"] = code
        if code != 0:
            _fail(record, f"training exited with status {code}", train_log, report)
            return
        record["train"]["done"] = True
        record["dev_best"] = res.best_dev(task, expdir, plan.fold)
        _write_run_json(run_dir, record)

    # ---- test -------------------------------------------------------------------------------------
    ckpt, kind = choose_test_checkpoint(task, expdir)
    if ckpt is None:
        _fail(record, f"training finished but left no dev-best or states-*.ckpt in {expdir}", train_log, report)
        return
    split = res.evaluate_split(task)
    log_file = expdir / "log.log"
    offset = log_file.stat().st_size if log_file.is_file() else 0
    args = ["-m", "evaluate", "-t", split, "-e", str(ckpt), "-o", f"args.expdir={expdir_arg!r}", "--device", opts.device]
    command = s3prl_command(args, sid_cache)
    record["test"].update(command=command, log=str(test_log), checkpoint=str(ckpt), checkpoint_kind=kind,
                          attempts=int(record["test"].get("attempts", 0)) + 1, started_at=_now())
    record.update(status=STATUS_TESTING, error=None, log=str(test_log))
    _write_run_json(run_dir, record)
    report(f"testing {kind} checkpoint {ckpt.name} on {split} (log: {test_log})")
    start = _log_header(test_log, f"evaluate {ckpt.name} on {split}", command)
    t0 = time.perf_counter()
    code = launcher(command, test_log, run_dir, env)
    record["test"]["seconds"] = float(record["test"].get("seconds", 0.0)) + time.perf_counter() - t0
    record["test"]["returncode"] = code
    if code != 0:
        _fail(record, f"evaluation exited with status {code}", test_log, report)
        return
    with open(test_log, "rb") as fh:
        fh.seek(start)
        output = fh.read().decode("utf-8", errors="replace")
    try:
        metric = res.read_test_result(task, expdir, test_log=output, log_offset=offset, fold=plan.fold)
    except res.ResultError as e:
        _fail(record, f"could not read the test metric: {e}", test_log, report)
        return
    record["test"]["done"] = True
    record.update(status=STATUS_FINISHED, metric=metric, error=None, log=str(test_log), finished_at=_now())
    report(f"finished: {_metric_text(metric)} ({kind} checkpoint; train {record['train']['seconds']:.1f} s, "
           f"test {record['test']['seconds']:.1f} s)")


# ==================================================================================================
# the whole benchmark
# ==================================================================================================


def validate_upstreams(specs: Sequence[UpstreamSpec]) -> None:
    """Every entry must be an ``s3prl.hub`` entry; an unknown one lists the known ones."""
    from ..upstream_loading import hub_names

    names = hub_names()
    for spec in specs:
        if spec.entry not in names:
            close = difflib.get_close_matches(spec.entry, names, n=5, cutoff=0.5)
            raise UserInputError(
                f"unknown upstream {spec.entry!r} (--upstreams {spec.label}): not an s3prl hub entry. "
                + (f"Closest: {', '.join(close)}. " if close else "")
                + f"Known entries ({len(names)}): {', '.join(names)}"
            )


def build_options(
    upstreams: Union[str, Sequence[str]],
    tasks: Union[str, Sequence[str], None],
    data_root: PathLike,
    out: PathLike,
    *,
    profile: str = "official",
    upstream_args: Optional[Sequence[str]] = None,
    learning_rates: Optional[Sequence[str]] = None,
    er_folds: Union[str, Sequence[str], None] = None,
    recipe_overrides: Optional[Sequence[str]] = None,
    datarc: Optional[Sequence[str]] = None,
    device: str = "cpu",
    force: bool = False,
    jobs: int = 1,
    threads: Optional[int] = None,
    reference: Optional[str] = None,
    leaderboard: bool = True,
    cost_seconds: float = 1.0,
    cost_repeats: int = 5,
) -> SuperbOptions:
    """:class:`SuperbOptions` from the command-line strings (each parser names the bad item and the fix)."""
    pairs = parse_upstreams(upstreams)
    labels = [label for label, _ in pairs]
    task_list = parse_tasks(tasks)
    if profile not in rf.available_profiles():
        raise UserInputError(f"unknown --profile {profile!r}; available: {rf.available_profiles()}")
    args = parse_upstream_args(upstream_args, labels)
    specs = [UpstreamSpec(label, entry, args.get(label, {}).get("ckpt"), args.get(label, {}).get("model_config"))
             for label, entry in pairs]
    if jobs < 1:
        raise UserInputError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UserInputError(f"--threads must be >= 1, got {threads}")
    if reference is not None and reference not in labels:
        raise UserInputError(f"--reference {reference!r} is not one of --upstreams {labels}")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise UserInputError(f"--device {device!r}: use cpu or cuda")
    return SuperbOptions(
        upstreams=specs, tasks=task_list, data_root=Path(os.path.expanduser(str(data_root))).resolve(),
        out=Path(os.path.expanduser(str(out))).resolve(), profile=profile,
        learning_rates=parse_learning_rates(learning_rates, labels, task_list),
        er_folds=parse_er_folds(er_folds), recipe_overrides=parse_recipe_overrides(recipe_overrides, task_list),
        datarc_overrides=parse_datarc_overrides(datarc, task_list), device=device, force=force, jobs=int(jobs),
        threads=threads, reference=reference, leaderboard=leaderboard, cost_seconds=cost_seconds,
        cost_repeats=cost_repeats,
    )


def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; give a folder")
    _s3prl_path(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not (out / SUPERB_JSON).is_file() and not (out / RUNS_DIR).is_dir():
        if not force:
            raise UserInputError(
                f"--out {out} is not empty and holds no SUPERB runs ({SUPERB_JSON} missing); refusing to write there. "
                "Choose a new or empty folder, or pass --force (nothing of yours is deleted; runs go under runs/)."
            )


def _update_superb_json(opts: SuperbOptions, data_info: Mapping[str, Any]) -> Dict[str, Any]:
    from ..io import atomic_write_text

    path = opts.out / SUPERB_JSON
    state: Dict[str, Any] = {}
    if path.is_file():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            state = {}
    order = list(state.get("upstreams", []))
    for spec in opts.upstreams:
        if spec.label not in order:
            order.append(spec.label)
    reference = opts.reference or state.get("reference") or opts.upstreams[0].label
    invocation = {
        "at": _now(),
        "argv": list(sys.argv),
        "upstreams": [s.describe() for s in opts.upstreams],
        "tasks": opts.tasks,
        "profile": opts.profile,
        "er_folds": opts.er_folds,
        "learning_rates": {f"{k[0]}:{k[1]}": v for k, v in sorted(opts.learning_rates.items())},
        "recipe_overrides": opts.recipe_overrides,
        "device": opts.device,
        "data": dict(data_info),
    }
    state.update(format="s3prl_redundancy.superb/1", upstreams=order, reference=reference,
                 invocations=(state.get("invocations") or [])[-19:] + [invocation])
    opts.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(state, indent=2, default=str) + "\n")
    return state


def run_superb(opts: SuperbOptions, launcher: Optional[Launcher] = None, validate_hub: bool = True) -> Dict[str, Any]:
    """Run (or resume) every upstream x task of ``opts``; write the leaderboard at the end.

    Returns ``{"runs": [run.json records in plan order], "failed": [...], "leaderboard": {...} or None}``.
    Bad input raises :class:`UserInputError` before anything runs; a crash inside s3prl only fails its run.
    """
    if opts.device.startswith("cuda"):
        from ..upstream_loading import resolve_device

        resolve_device(opts.device)
    _check_out_dir(opts.out, opts.force)
    if validate_hub:
        validate_upstreams(opts.upstreams)
    datarc, data_info = resolve_data(opts.data_root, opts.tasks, opts.er_folds, opts.datarc_overrides)
    plans = plan_runs(opts, datarc, data_info)
    replace = check_existing(plans, opts.force)
    _update_superb_json(opts, data_info)
    for plan in replace:
        print(f"--force: deleting {plan.run_dir} (recorded with another configuration)", flush=True)
        shutil.rmtree(plan.run_dir)
    launcher = launcher or subprocess_launcher
    printer = _Printer(len(plans))
    print(f"SUPERB: {len(opts.upstreams)} upstream(s) x {len(opts.tasks)} task(s) = {len(plans)} run(s) "
          f"({'ER folds ' + ','.join(f[4:] for f in opts.er_folds) if 'er' in opts.tasks else 'no ER'}), profile "
          f"{opts.profile}, device {opts.device}, data {data_info['kind']} at {data_info['root']}, out {opts.out}",
          flush=True)

    def one(i_plan: Tuple[int, RunPlan]) -> Dict[str, Any]:
        i, plan = i_plan
        try:
            return execute_run(plan, opts, launcher, lambda msg: printer(i + 1, plan.name, msg))
        finally:
            printer.done()

    try:
        if opts.jobs > 1:
            with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
                records = list(pool.map(one, enumerate(plans)))
        else:
            records = [one(item) for item in enumerate(plans)]
    finally:
        printer.close()
    failed = [r for r in records if r.get("status") != STATUS_FINISHED]
    summary: Dict[str, Any] = {"runs": records, "failed": failed, "leaderboard": None}
    if opts.leaderboard:
        from .leaderboard import build_leaderboard, write_leaderboard

        board = build_leaderboard(opts.out, reference=opts.reference, device=opts.device,
                                  cost_seconds=opts.cost_seconds, cost_repeats=opts.cost_repeats, threads=opts.threads)
        summary["leaderboard"] = write_leaderboard(board, opts.out)
        print(board.markdown, flush=True)
    if failed:
        print(f"{len(failed)} of {len(records)} run(s) did not finish:", flush=True)
        for r in failed:
            print(f"  {r['upstream']}/{run_dir_name(r['task'], r.get('fold'))}: {r.get('status')}: "
                  f"{r.get('error') or r.get('skipped')}; log: {r.get('log')}", flush=True)
    return summary


__all__ = [
    "UpstreamSpec", "SuperbOptions", "RunPlan", "DATASET_LAYOUT", "SID_LAUNCH_CODE", "DEFAULT_TASKS",
    "parse_tasks", "parse_upstreams", "parse_upstream_args", "parse_learning_rates", "parse_er_folds",
    "parse_recipe_overrides", "parse_datarc_overrides", "resolve_data", "plan_runs", "check_existing",
    "read_run_json", "run_dir_name", "subprocess_launcher", "s3prl_command", "latest_checkpoint", "choose_test_checkpoint",
    "execute_run", "validate_upstreams", "build_options", "run_superb",
]
