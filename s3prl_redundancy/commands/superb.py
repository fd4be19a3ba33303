"""``s3prl-redundancy superb``: run SUPERB KS/SID/ER/ASR on several upstreams with s3prl's run_downstream (resumable) and write the leaderboard.

Example (mini-SUPERB corpus, smoke profile)::

    s3prl-redundancy corpus --out mini
    s3prl-redundancy superb --upstreams hubert_local,p2=pruned_hubert --tasks ks,sid,er,asr --data-root mini \\
        --out exp --profile smoke --upstream-args hubert_local:k=hubert.pt --upstream-args p2:k=hubert.pt,g=keep.yaml \\
        --er-folds 1,2

See docs/superb.md."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

FLAGS = {"learning_rates": "--learning-rate", "recipe_overrides": "--recipe-override", "datarc_overrides": "--datarc",
         "datarc": "--datarc", "wait": "--no-wait", "setup": "--slurm-setup", "lr_grids": "--lr-grid"}
"""Python arguments of :func:`build_options` / :class:`SuperbOptions` whose flag is not ``--name-with-dashes``."""

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

from ..errors import UserInputError
from ..superb import recipe_files as rf
from ..superb.planning import SuperbOptions, UpstreamSpec
from ..superb.tasks import TASK_ORDER, TASKS, normalize_task
from ..superb.tasks.er import ER_FOLDS

PathLike = Union[str, "os.PathLike[str]"]


def add_arguments(parser):
    from .leaderboard import add_cost_arguments

    parser.add_argument("--upstreams", required=True,
                        help="comma-separated s3prl hub entries, each optionally LABEL=ENTRY (the label names the row "
                             "and folder, so one entry can run with different -k/-g), e.g. hubert_local,p6=pruned_hubert")
    parser.add_argument("--tasks", default="ks,sid,er,asr", help="comma-separated tasks: ks, sid, er, asr (default: all)")
    parser.add_argument("--data-root", required=True,
                        help="a mini-SUPERB corpus (with corpus.json) or a folder holding speech_commands_v0.01/, "
                             "speech_commands_test_set_v0.01/, VoxCeleb1/ (+ iden_split.txt), IEMOCAP/ (+ meta_data/), "
                             "LibriSpeech/ (+ len_for_bucket/)")
    parser.add_argument("--out", required=True, help="experiment root: runs/, superb.json and the leaderboard go here")
    parser.add_argument("--profile", default="official", help="recipe profile: official (SUPERB's configs) or smoke")
    parser.add_argument("--upstream-args", action="extend", nargs="+", metavar="NAME:k=PATH,g=YAML",
                        help="-k checkpoint and -g model config for upstream NAME (repeatable)")
    parser.add_argument("--learning-rate", action="extend", nargs="+", metavar="NAME:TASK=LR",
                        help="learning rate of upstream NAME on TASK (TASK 'all' for every task; repeatable); "
                             "SUPERB tunes it per upstream and task, it is recorded in each run.json")
    parser.add_argument("--er-folds", default="1,2,3,4,5", help="IEMOCAP folds to run and average (default 1,2,3,4,5)")
    parser.add_argument("--recipe-override", action="extend", nargs="+", metavar="[TASK:]KEY=VALUE",
                        help="set a recipe value for every task that has KEY (or only TASK), VALUE in YAML, e.g. "
                             "runner.total_steps=4 or asr:downstream_expert.modelrc.RNNs.dim=[32,32] (repeatable; part "
                             "of each run's configuration)")
    parser.add_argument("--datarc", action="extend", nargs="+", metavar="TASK:KEY=PATH",
                        help="set one data path, e.g. sid:file_path=/data/VoxCeleb1 (repeatable)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (s3prl's --device; also where latency is measured)")
    parser.add_argument("--force", action="store_true",
                        help="delete and rerun run folders recorded with a different configuration")
    parser.add_argument("--jobs", type=int, default=1, help="runs executed at the same time (default 1)")
    add_cost_arguments(parser, "OMP/MKL threads per s3prl process and torch threads for timing (default: unset; "
                               "cpu_count/jobs with --jobs > 1)")
    parser.add_argument("--no-leaderboard", action="store_true", help="do not build the leaderboard at the end")
    add_cluster_arguments(parser)
    add_lr_search_arguments(parser)


def resume_hint(args, argv) -> str:
    """Finished runs are kept; the same command runs the rest."""
    from ..cli import command_line

    return (f"finished runs are kept in {args.out}; the same command continues with the rest: "
            f"{command_line('superb', argv, drop=['--force'])}")


# ---- learning-rate search (one block: flags, parsing) ----


def add_lr_search_arguments(parser) -> None:
    grids = "; ".join(f"{t} {','.join(f'{lr:g}' for lr in TASKS[t].lr_grid)}" for t in TASK_ORDER)
    parser.add_argument("--lr-search", action="store_true",
                        help="before each full run, train short exploration runs at a grid of learning rates, score "
                             f"them on the dev split and train at the best (default grids: {grids}); a rate set with "
                             "--learning-rate is not searched")
    parser.add_argument("--lr-grid", action="extend", nargs="+", metavar="TASK=LR,LR,...",
                        help="the rates --lr-search tries on TASK, e.g. sid=1e-1,1e-2,1e-3 (repeatable)")
    parser.add_argument("--lr-search-steps", type=int, metavar="N",
                        help="training steps of each exploration run (default: a tenth of the recipe's total_steps)")


def parse_lr_grids(items: Optional[Sequence[str]], tasks: Sequence[str]) -> Dict[str, List[float]]:
    """``["sid=1e-1,1e-2"]`` -> ``{"sid": [0.1, 0.01]}``; tasks not selected are ignored."""
    out: Dict[str, List[float]] = {}
    for item in items or []:
        head, sep, text = item.partition("=")
        if not sep or not text.strip():
            raise UserInputError(f"{item!r} is not TASK=LR,LR,... (e.g. sid=1e-1,1e-2,1e-3)", argument="lr_grids")
        task = normalize_task(head, "lr_grids")
        try:
            rates = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise UserInputError(f"{item!r}: the rates must be numbers", argument="lr_grids") from None
        if not rates or any(not (r > 0 and r != float("inf")) for r in rates):
            raise UserInputError(f"{item!r}: give positive learning rates", argument="lr_grids")
        if task in tasks:
            out[task] = rates
    return out


# ---- end of the learning-rate search block ----


def run(args) -> int:
    from ..superb.runner import run_superb

    opts = build_options(
        args.upstreams, args.tasks, args.data_root, args.out, profile=args.profile,
        upstream_args=args.upstream_args, learning_rates=args.learning_rate, er_folds=args.er_folds,
        recipe_overrides=args.recipe_override, datarc=args.datarc, device=args.device, force=args.force,
        jobs=args.jobs, threads=args.threads, reference=args.reference, leaderboard=not args.no_leaderboard,
        cost_seconds=args.cost_seconds, cost_repeats=args.cost_repeats,
        lr_search=args.lr_search, lr_grid=args.lr_grid, lr_search_steps=args.lr_search_steps,
    )
    summary = run_superb(opts, launcher=cluster_launcher(args, opts.out))
    return 1 if summary["failed"] else 0


# --- where the runs execute: this machine or SLURM (submitit); see docs/cluster.md -------------------------------


def add_cluster_arguments(parser) -> None:
    from ..superb.cluster import LAUNCHERS

    group = parser.add_argument_group("cluster (--launcher slurm; see docs/cluster.md)")
    group.add_argument("--launcher", choices=LAUNCHERS, default="local",
                       help="local: child processes of this command (--jobs at a time); slurm: every train and test "
                            "process is a SLURM job (submitit; runs submitted together form a job array), requeued "
                            "from its last checkpoint when preempted or out of time; submitit-local: the same jobs "
                            "on this machine (submitit's local executor)")
    group.add_argument("--no-wait", action="store_true",
                       help="submit the jobs and return; run the same command again to adopt them (nothing is "
                            "submitted twice) and build the leaderboard; superb-status EXP shows their state")
    group.add_argument("--partition", help="SLURM partition")
    group.add_argument("--account", help="SLURM account")
    group.add_argument("--qos", help="SLURM quality of service")
    group.add_argument("--gpus-per-run", type=int,
                       help="GPUs of one run (default 1; N > 1 trains with s3prl's DDP: torchrun --nproc_per_node N)")
    group.add_argument("--cpus-per-run", type=int, help="CPUs of one run (default 8)")
    group.add_argument("--mem-gb", type=float, help="memory of one job in GB (default: the partition's)")
    group.add_argument("--time-min", type=int,
                       help="time limit of one job in minutes (default 1440); a longer training is requeued and "
                            "resumes from its last checkpoint")
    group.add_argument("--array-parallelism", type=int, help="jobs of one array running at once (default 64)")
    group.add_argument("--sbatch", action="extend", nargs="+", metavar="KEY=VALUE",
                       help="extra #SBATCH parameter, e.g. constraint=a100 or mail-type=END (repeatable)")
    group.add_argument("--slurm-setup", action="extend", nargs="+", metavar="LINE",
                       help="shell line run in the job before s3prl, e.g. 'module load cuda' (repeatable)")
    group.add_argument("--max-timeouts", type=int,
                       help="requeues after a time limit a job may take (default 20; preemptions do not count)")


def parse_sbatch(items: Optional[Sequence[str]]) -> Dict[str, str]:
    """``["constraint=a100", "--mail-type=END"]`` -> ``{"constraint": "a100", "mail-type": "END"}``."""
    out: Dict[str, str] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise UserInputError(f"{item!r} is not KEY=VALUE (e.g. constraint=a100)", argument="sbatch")
        out[key] = value.strip()
    return out


_SLURM_ONLY = ("partition", "account", "qos", "gpus_per_run", "cpus_per_run", "mem_gb", "array_parallelism", "sbatch",
               "setup")
_SUBMITIT_ONLY = ("time_min", "max_timeouts")


def cluster_options(launcher: str, device: str, **given: Any):
    """:class:`..superb.cluster.ClusterOptions` from the values given (None: not given); an option that does not
    apply to ``launcher`` is refused rather than ignored, and GPU jobs need a CUDA ``device``."""
    from ..superb.cluster import ClusterOptions

    for name, value in given.items():
        if value is None or value == []:
            continue
        if (name in _SLURM_ONLY and launcher != "slurm") or (name in _SUBMITIT_ONLY and launcher == "local"):
            needs = "`launcher='slurm'`" if name in _SLURM_ONLY else "a submitit launcher (slurm, submitit-local)"
            raise UserInputError(f"applies to {needs} only, not to `launcher={launcher!r}`", argument=name)
    values = {k: v for k, v in given.items() if v is not None and k not in ("sbatch", "setup")}
    options = ClusterOptions(**values, sbatch=parse_sbatch(given.get("sbatch")),
                             setup=list(given.get("setup") or [])).validate()
    if launcher == "slurm" and options.gpus_per_run > 0 and not device.startswith("cuda"):
        raise UserInputError(f"is {device!r} but every SLURM job gets `gpus_per_run={options.gpus_per_run}` GPU(s): "
                             "pass `device='cuda'`, or `gpus_per_run=0` for CPU-only jobs", argument="device")
    return options


def cluster_launcher(args, out: Path):
    """The launcher for ``args`` (None: the runner's local one)."""
    from ..superb.cluster import make_launcher

    options = cluster_options(
        args.launcher, args.device, partition=args.partition, gpus_per_run=args.gpus_per_run,
        cpus_per_run=args.cpus_per_run, mem_gb=args.mem_gb, time_min=args.time_min, account=args.account, qos=args.qos,
        array_parallelism=args.array_parallelism, sbatch=args.sbatch, setup=args.slurm_setup,
        max_timeouts=args.max_timeouts)
    return make_launcher(args.launcher, out, options, wait=not args.no_wait)


# The option strings of the command line -> the structured values of :class:`..superb.planning.SuperbOptions`.
# Each parser names the bad item, the Python argument it belongs to, and the fix.


def _split_list(text: Union[str, Sequence[str], None]) -> List[str]:
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def parse_tasks(text: Union[str, Sequence[str], None]) -> List[str]:
    """``"ks,sid"`` -> ``["ks", "sid"]`` (s3prl downstream names accepted); unknown names list the known ones."""
    names = _split_list(text) or list(TASK_ORDER)
    out: List[str] = []
    for name in names:
        task = normalize_task(name)
        if task not in out:
            out.append(task)
    return out


def parse_upstreams(text: Union[str, Sequence[str]]) -> List[Tuple[str, str]]:
    """``"hubert_local,p6=pruned_hubert"`` -> ``[("hubert_local", "hubert_local"), ("p6", "pruned_hubert")]``:
    ``LABEL=ENTRY`` names a row (so one hub entry can appear with different -k / -g), else the label is the entry."""
    items = _split_list(text)
    if not items:
        raise UserInputError("is empty; give s3prl hub entries, e.g. `upstreams=hubert_local,pruned_hubert`", argument="upstreams")
    out, seen = [], set()
    for item in items:
        label, sep, entry = item.partition("=")
        label, entry = (label.strip(), entry.strip()) if sep else (item, item)
        if not entry:
            raise UserInputError(f"item {item!r} names no hub entry; use LABEL=ENTRY or ENTRY", argument="upstreams")
        if not _LABEL_RE.match(label):
            raise UserInputError(
                f"upstream label {label!r} is not usable as a folder name; use letters, digits, '_', '.', '-' "
                "(e.g. `upstreams=base=hubert_local,p6=pruned_hubert`)", argument="upstreams")
        if label in seen:
            raise UserInputError(f"upstream label {label!r} appears twice; give each a LABEL=ENTRY name", argument="upstreams")
        seen.add(label)
        out.append((label, entry))
    return out


_ARG_KEYS = {"k": "ckpt", "ckpt": "ckpt", "g": "model_config", "model_config": "model_config"}


def _name_prefix(item: str, labels: Sequence[str], argument: str, example: str) -> Tuple[str, str]:
    label, sep, rest = item.partition(":")
    if not sep or not rest:
        raise UserInputError(f"{item!r} is not NAME:{example}", argument=argument)
    label = label.strip()
    if label not in labels:
        raise UserInputError(f"{item!r} names upstream {label!r}, which is not in `upstreams` {list(labels)}",
                             argument=argument)
    return label, rest


def parse_upstream_args(items: Optional[Sequence[str]], labels: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """``["p6:k=hubert.pt,g=keep.yaml"]`` -> ``{"p6": {"ckpt": "/abs/hubert.pt", "model_config": "/abs/keep.yaml"}}``.
    Local paths are made absolute; URLs and hub ids are kept (``SuperbOptions.validate`` checks them)."""
    out: Dict[str, Dict[str, str]] = {}
    for item in items or []:
        label, rest = _name_prefix(item, labels, "upstream_args", "k=CKPT,g=MODEL_CONFIG")
        args = out.setdefault(label, {})
        for part in rest.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in _ARG_KEYS or not value:
                raise UserInputError(
                    f"{item!r}: {part!r} is not k=PATH or g=PATH (k: the checkpoint s3prl gets "
                    "with -k, g: the model config it gets with -g)", argument="upstream_args")
            name = _ARG_KEYS[key]
            if name in args:
                raise UserInputError(f"{key} is given twice for {label!r}", argument="upstream_args")
            path = Path(os.path.expanduser(value))
            if path.exists():  # a local file or folder: absolute, since s3prl runs in the run's folder
                value = str(path.resolve())
            args[name] = value  # else a URL or hub id, as s3prl's -k takes it (planning checks which entries need a path)
    return out


def parse_learning_rates(items: Optional[Sequence[str]], labels: Sequence[str], tasks: Sequence[str]) -> Dict[Tuple[str, str], float]:
    """``["p6:ks=5e-5,asr=1e-4", "base:all=2e-4"]`` -> ``{("p6", "ks"): 5e-5, ...}`` (``all``: every task)."""
    out: Dict[Tuple[str, str], float] = {}
    for item in items or []:
        label, rest = _name_prefix(item, labels, "learning_rates", "TASK=LR (e.g. pruned_hubert:ks=5e-5)")
        for part in rest.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise UserInputError(f"{item!r}: {part!r} is not TASK=LR", argument="learning_rates")
            key = key.strip().lower()
            try:
                lr = float(value)
            except ValueError:
                raise UserInputError(f"{item!r}: {value!r} is not a number", argument="learning_rates") from None
            if not lr > 0 or lr == float("inf"):
                raise UserInputError(f"{item!r}: the learning rate must be positive, got {value!r}",
                                     argument="learning_rates")
            targets = list(tasks) if key in ("all", "*") else [normalize_task(key, "learning_rates")]
            for task in targets:
                if task not in tasks:
                    raise UserInputError(f"{item!r} sets task {task!r}, which is not in `tasks` {list(tasks)}",
                                         argument="learning_rates")
                out[(label, task)] = lr
    return out


def parse_er_folds(text: Union[str, Sequence[str], None]) -> List[str]:
    """``"1,2"`` or ``"fold1,fold3"`` -> ``["fold1", "fold2"]`` (default: all five)."""
    items = _split_list(text)
    if not items:
        return list(ER_FOLDS)
    out: List[str] = []
    for item in items:
        fold = item.lower()
        fold = f"fold{fold}" if fold.isdigit() else fold
        if fold not in ER_FOLDS:
            raise UserInputError(f"{item!r} is not one of 1..5 (IEMOCAP sessions held out for testing)",
                                 argument="er_folds")
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
            raise UserInputError(f"{item!r} is not [TASK:]dotted.key=VALUE (e.g. runner.total_steps=4)",
                                 argument="recipe_overrides")
        if ":" in head:
            task_name, key = head.split(":", 1)
            candidates = [normalize_task(task_name, "recipe_overrides")]
        else:
            key, candidates = head, list(TASKS)
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserInputError(f"{item!r}: the value is not YAML ({e})", argument="recipe_overrides") from None
        having = [t for t in candidates if _recipe_has_key(rf.official_recipe(t), key)]
        if not having:
            known = sorted({k for t in candidates for k in _recipe_keys(rf.official_recipe(t))})
            close = difflib.get_close_matches(key, known, n=4, cutoff=0.5)
            raise UserInputError(
                f"{item!r}: the official recipe of {', '.join(candidates)} has no key {key!r}"
                + (f"; did you mean {', '.join(close)}?" if close else "; see downstream_recipes/<task>.yaml for the keys"),
                argument="recipe_overrides")
        for task in having:
            if task in tasks:
                out.setdefault(task, {})[key] = value
    return out


def parse_datarc_overrides(items: Optional[Sequence[str]], tasks: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """``["sid:file_path=/data/vox1"]`` -> ``{"sid": {"file_path": "/data/vox1"}}`` (keys: :attr:`Task.data_keys`)."""
    out: Dict[str, Dict[str, str]] = {}
    for item in items or []:
        head, sep, value = item.partition("=")
        if not sep or ":" not in head or not value.strip():
            raise UserInputError(f"{item!r} is not TASK:KEY=PATH (e.g. sid:file_path=/data/VoxCeleb1)",
                                 argument="datarc_overrides")
        task_name, key = head.split(":", 1)
        task, key = normalize_task(task_name, "datarc_overrides"), key.strip()
        if key not in TASKS[task].data_keys:
            raise UserInputError(f"{item!r}: {task} has the data keys {list(TASKS[task].data_keys)}, not {key!r}",
                                 argument="datarc_overrides")
        if task in tasks:
            out.setdefault(task, {})[key] = str(Path(os.path.expanduser(value.strip())).resolve())
    return out


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
    lr_search: bool = False,
    lr_grid: Optional[Sequence[str]] = None,
    lr_search_steps: Optional[int] = None,
) -> SuperbOptions:
    """:class:`SuperbOptions` from the command-line strings (each parser names the bad item and the fix)."""
    pairs = parse_upstreams(upstreams)
    labels = [label for label, _ in pairs]
    task_list = parse_tasks(tasks)
    args = parse_upstream_args(upstream_args, labels)
    specs = [UpstreamSpec(label, entry, args.get(label, {}).get("ckpt"), args.get(label, {}).get("model_config"))
             for label, entry in pairs]
    return SuperbOptions(
        upstreams=specs, tasks=task_list, data_root=Path(os.path.expanduser(str(data_root))).resolve(),
        out=Path(os.path.expanduser(str(out))).resolve(), profile=profile,
        learning_rates=parse_learning_rates(learning_rates, labels, task_list),
        er_folds=parse_er_folds(er_folds), recipe_overrides=parse_recipe_overrides(recipe_overrides, task_list),
        datarc_overrides=parse_datarc_overrides(datarc, task_list), device=device, force=force, jobs=int(jobs),
        threads=threads, reference=reference, leaderboard=leaderboard, cost_seconds=cost_seconds,
        cost_repeats=cost_repeats, lr_search=lr_search, lr_grids=parse_lr_grids(lr_grid, task_list),
        lr_search_steps=lr_search_steps,
    ).validate()
