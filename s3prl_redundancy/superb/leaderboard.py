"""The SUPERB leaderboard of a runner folder: scores, cost and capacity kept, one row per upstream.

Built only from the ``run.json`` files the runner leaves (nothing is trained or evaluated again) plus a
cost measurement of each upstream (loaded once, cached in ``cost.json``). Written as
``leaderboard.csv``, ``leaderboard.md``, ``leaderboard.json`` and ``pareto.png`` in the runner folder.

Columns (scores in percent, as SUPERB reports them):

* ``ks_acc``, ``sid_acc``, ``er_acc`` (ER: mean over the folds that ran, as SUPERB averages its 5 folds),
  ``asr_wer``: test scores, each with ``_low`` / ``_high``: its 95 % interval from the per-item test files in the
  run's ``expdir`` (:mod:`.uncertainty`);
* ``superb_score`` (+ ``_low`` / ``_high``): the SUPERB score over the tasks in ``superb_score_tasks`` (:mod:`.score`),
  ``superb_<task>`` the normalised task scores, ``superb_score_p`` Score-P from ``params_total``;
* ``params_total`` / ``params_stack``: parameters of the whole upstream / of its transformer stack (the
  mimicker for a distilled upstream); ``macs_per_second``: multiply-accumulates per second of audio;
  ``latency_ms_per_second``: milliseconds of upstream compute per second of audio (median of repeats, all
  upstreams timed side by side on ``latency_device``); see :mod:`.cost`;
* ``capacity_<task>``: capacity kept relative to the reference upstream. For the accuracy tasks the ratio of
  accuracies; for ASR the ratio of word accuracies ``1 - WER`` (clipped at 0, since WER can exceed 100 %).
  Undefined (empty) when the reference scores 0 on the task (e.g. a WER of 100 % or more); ``capacity_avg`` is
  the mean over the tasks where it is defined, which ``capacity_tasks`` lists. Each has ``_low`` / ``_high`` (paired
  bootstrap on the same test items) and ``_verdict``; ``verdict`` says whether the row can be told apart from the
  reference at all;
* ``learning_rates``: the rate each task trained with; ``lr_search``: the dev scores that chose it, when searched;
* ``failures``: each task that did not finish, with its error and log path.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import UserInputError
from ..io import atomic_write_json, atomic_write_text, json_ready, read_json
from . import results as res
from .runs import RUN_JSON, RUNS_DIR, STATUS_FINISHED, read_run_json, read_superb_json
from .tasks import TASK_ORDER, TASKS
from .tasks.er import ER_FOLDS

if TYPE_CHECKING:
    from .uncertainty import RowUncertainty

PathLike = Union[str, "os.PathLike[str]"]

SCORE_COLUMN = {name: task.score_column for name, task in TASKS.items()}
CAPACITY_COLUMN = {t: f"capacity_{t}" for t in TASK_ORDER}
COLUMNS = (
    ["upstream", "hub_entry"]
    + [c for t in TASK_ORDER for c in (SCORE_COLUMN[t], f"{SCORE_COLUMN[t]}_low", f"{SCORE_COLUMN[t]}_high")]
    + ["superb_score", "superb_score_low", "superb_score_high", "superb_score_tasks", "superb_score_p",
       "superb_score_p_low", "superb_score_p_high"]
    + [f"superb_{t}" for t in TASK_ORDER]
    + ["params_total", "params_stack", "macs_per_second", "latency_ms_per_second", "latency_device"]
    + [c for t in TASK_ORDER for c in (CAPACITY_COLUMN[t], f"{CAPACITY_COLUMN[t]}_low", f"{CAPACITY_COLUMN[t]}_high",
                                        f"{CAPACITY_COLUMN[t]}_verdict")]
    + ["capacity_avg", "capacity_avg_low", "capacity_avg_high", "capacity_tasks", "verdict"]
    + ["test_items", "er_folds", "er_fold_std", "learning_rates", "lr_search", "failures"]
)
FILES = {"csv": "leaderboard.csv", "md": "leaderboard.md", "json": "leaderboard.json", "png": "pareto.png"}
COST_JSON = "cost.json"


# --------------------------------------------------------------------------------------------------
# runs -> per-task scores
# --------------------------------------------------------------------------------------------------


def collect_runs(exproot: PathLike) -> List[Dict[str, Any]]:
    """Every ``runs/<label>/<run>/run.json`` under ``exproot`` (sorted by path)."""
    root = Path(exproot)
    if not root.is_dir():
        raise UserInputError(f"{root} does not exist; give the output folder of a superb run", argument="exproot")
    runs = []
    for path in sorted((root / RUNS_DIR).glob(f"*/*/{RUN_JSON}")):
        record = read_run_json(path.parent)
        if record is not None and not all(isinstance(record.get(k), str) for k in ("upstream", "task")):
            raise UserInputError(f"{path} has no upstream label / task name: it was edited or damaged; delete that "
                                 "run folder (the next superb run repeats it)", argument="exproot")
        if record is not None:
            record["_run_dir"] = str(path.parent)
            runs.append(record)
    if not runs:
        raise UserInputError(
            f"no {RUNS_DIR}/<upstream>/<task>/{RUN_JSON} under {root}: nothing has run there yet. Run the superb "
            "benchmark into this folder first.", argument="exproot")
    return runs


def _metric_problem(record: Mapping[str, Any]) -> Optional[str]:
    """Why a finished run's ``metric`` cannot be shown (None when it is a finite number)."""
    metric = record.get("metric")
    if not metric:
        return "no metric recorded"
    try:
        value = res.percent(metric)
    except (TypeError, KeyError, ValueError):
        value = float("nan")
    if not math.isfinite(value):
        return f"the metric {metric!r} in {record.get('_run_dir', '?')}/{RUN_JSON} is not a number"
    return None


def _failure(record: Mapping[str, Any]) -> str:
    status = record.get("status")
    error = record.get("error") or (_metric_problem(record) if status == STATUS_FINISHED else "did not finish")
    return f"{status}: {error} (log: {record.get('log')})"


LR_TRIAL = "lr_trial"
"""Key of ``run.json`` marking a short exploration run of the learning-rate search (``{"rate", "of"}``): its dev
score chose a rate, it is not a row of the leaderboard."""


def _learning_rate(record: Mapping[str, Any]) -> Optional[float]:
    """The rate a run trained with: the recorded effective rate, else the override (older records)."""
    lr = record.get("learning_rate") or {}
    value = lr.get("effective") if lr.get("effective") is not None else lr.get("override")
    return float(value) if value is not None else None


def task_cells(runs: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """``{label: {"hub_entry", "upstream_args", "upstream_files", "learning_rates", "lr_search", "tasks": {task:
    cell}}}`` where a cell is ``{"value": percent or NaN, "failure": text or None, "folds": [...], "records": [...]}``.
    Exploration runs of the learning-rate search (:data:`LR_TRIAL`) are not rows; their outcome is in the final
    run's ``learning_rate.search``."""
    grouped: Dict[str, Dict[str, List[Mapping[str, Any]]]] = {}
    info: Dict[str, Dict[str, Any]] = {}
    for record in runs:
        if record.get(LR_TRIAL):
            continue
        label = record["upstream"]
        grouped.setdefault(label, {}).setdefault(record["task"], []).append(record)
        entry = info.setdefault(label, {"hub_entry": record.get("hub_entry"), "upstream_args": record.get("upstream_args"),
                                        "upstream_files": (record.get("config") or {}).get("upstream_files"),
                                        "learning_rates": {}, "lr_search": {}})
        lr = _learning_rate(record)
        if lr is not None:
            entry["learning_rates"][record["task"]] = lr
        search = (record.get("learning_rate") or {}).get("search")
        if search:
            entry["lr_search"][record["task"]] = search
    out: Dict[str, Dict[str, Any]] = {}
    for label, tasks in grouped.items():
        cells = {}
        for task, records in tasks.items():
            records = sorted(records, key=lambda r: ER_FOLDS.index(r["fold"]) if r.get("fold") in ER_FOLDS else -1)
            bad = [r for r in records if r.get("status") != STATUS_FINISHED or _metric_problem(r)]
            folds = [r.get("fold") for r in records if r.get("fold")]
            if bad:
                failure = "; ".join(
                    (f"{r['fold']}: " if r.get("fold") else "") + _failure(r) for r in bad
                )
                cells[task] = {"value": float("nan"), "failure": failure, "folds": folds, "records": []}
            else:
                values = [res.percent(r["metric"]) for r in records]
                cells[task] = {"value": sum(values) / len(values), "failure": None, "folds": folds,
                               "per_fold": dict(zip(folds, values)) if folds else None, "records": records}
        out[label] = dict(info[label], tasks=cells)
    return out


# --------------------------------------------------------------------------------------------------
# capacity kept and Pareto front
# --------------------------------------------------------------------------------------------------


def task_accuracy(task: str, score_percent: float) -> float:
    """The accuracy behind a task score, as a fraction: ``acc / 100``; an error rate (lower is better, ASR's
    WER): ``max(0, 1 - rate / 100)``."""
    if score_percent is None or (isinstance(score_percent, float) and math.isnan(score_percent)):
        return float("nan")
    if not TASKS[task].higher_is_better:
        return max(0.0, 1.0 - float(score_percent) / 100.0)
    return float(score_percent) / 100.0


def capacity_kept(task: str, score_percent: float, reference_percent: float) -> float:
    """``accuracy / reference accuracy`` (ASR: of ``1 - WER``); NaN when either is missing or the reference's
    accuracy is 0 (the ratio is undefined)."""
    acc, ref = task_accuracy(task, score_percent), task_accuracy(task, reference_percent)
    if math.isnan(acc) or math.isnan(ref) or ref <= 0:
        return float("nan")
    return acc / ref


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> List[bool]:
    """True for every point no other point dominates (cost <= and score >=, one of them strictly); points with a
    missing (NaN) cost or score are never on the front."""
    def ok(x):
        return x is not None and not (isinstance(x, float) and math.isnan(x))

    points = [(float(c), float(s)) if ok(c) and ok(s) else None for c, s in zip(costs, scores)]
    front = []
    for i, p in enumerate(points):
        if p is None:
            front.append(False)
            continue
        dominated = any(
            q is not None and j != i and q[0] <= p[0] and q[1] >= p[1] and (q[0] < p[0] or q[1] > p[1])
            for j, q in enumerate(points)
        )
        front.append(not dominated)
    return front


# --------------------------------------------------------------------------------------------------
# cost
# --------------------------------------------------------------------------------------------------


def check_cost_options(cost_seconds: float, cost_repeats: int) -> None:
    """Refuse a cost measurement that cannot be made, before any work."""
    if cost_repeats < 1 or cost_seconds <= 0:
        raise UserInputError("must be >= 1 and `cost_seconds` > 0", argument="cost_repeats")


def _cost_key(info: Mapping[str, Mapping[str, Any]], device: str, seconds: float, repeats: int, threads) -> Dict[str, Any]:
    return {
        "upstreams": {label: {"hub_entry": v.get("hub_entry"), "upstream_args": v.get("upstream_args"),
                              "upstream_files": v.get("upstream_files")} for label, v in sorted(info.items())},
        "device": device, "seconds": seconds, "repeats": repeats, "threads": threads,
    }


def measure_costs(
    exproot: PathLike,
    info: Mapping[str, Mapping[str, Any]],
    device: str = "cpu",
    seconds: float = 1.0,
    repeats: int = 5,
    threads: Optional[int] = None,
    remeasure: bool = False,
) -> Dict[str, Any]:
    """Cost of every upstream of the leaderboard, measured side by side and cached in ``cost.json`` (reused while
    the upstreams, device, audio length, repeats and threads are the same). An upstream that cannot be loaded gets
    an ``error`` instead of numbers."""
    import torch

    from ..upstream_loading import load_upstream
    from .cost import measure_upstream_costs

    path = Path(exproot) / COST_JSON
    key = json_ready(_cost_key(info, device, seconds, repeats, threads))
    if path.is_file() and not remeasure:
        try:
            cached = read_json(path)
            if isinstance(cached, dict) and cached.get("key") == key:
                return cached
        except UserInputError:  # an unreadable cache is measured again
            pass
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        loaded, costs = {}, {}
        for label, v in info.items():
            args = v.get("upstream_args") or {}
            try:
                loaded[label] = load_upstream(v["hub_entry"], args.get("k"), args.get("g"), device="cpu")
            except Exception as e:  # a moved checkpoint must not hide the scores
                costs[label] = {"error": f"could not load the upstream to measure its cost: {type(e).__name__}: {e}"}
        if loaded:
            print(f"measuring cost of {len(loaded)} upstream(s) on {device} ({seconds:g} s of audio, {repeats} repeats)",
                  flush=True)
            try:
                costs.update(measure_upstream_costs(loaded, seconds=seconds, repeats=repeats, device=device))
            except Exception:  # find the upstream that fails; the others are measured one by one
                for label, upstream in loaded.items():
                    try:
                        costs.update(measure_upstream_costs({label: upstream}, seconds=seconds, repeats=repeats,
                                                            device=device))
                    except Exception as e:
                        costs[label] = {"error": f"its forward failed while measuring cost: {type(e).__name__}: {e}"}
    finally:
        torch.set_num_threads(previous)
    data = json_ready({"key": key, "upstreams": costs})
    atomic_write_json(path, data)
    return data


# --------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------


@dataclass
class Leaderboard:
    table: Any  # pandas.DataFrame, one row per upstream, columns COLUMNS
    reference: str
    notes: List[str] = field(default_factory=list)
    cost: Dict[str, Any] = field(default_factory=dict)
    exproot: Optional[Path] = None
    failed_tasks: Dict[str, List[str]] = field(default_factory=dict)  # label -> tasks that did not finish
    intervals: Dict[str, Any] = field(default_factory=dict)  # label -> uncertainty.RowUncertainty.to_dict()
    lr_search: Dict[str, Any] = field(default_factory=dict)  # label -> {task: the search that chose its rate}

    @property
    def markdown(self) -> str:
        return render_markdown(self)


def _reference_label(exproot: Path, labels: Sequence[str], reference: Optional[str]) -> Tuple[str, List[str]]:
    state = read_superb_json(exproot)
    order: List[str] = list(state.get("upstreams", []))
    saved = state.get("reference")
    order = [label for label in order if label in labels] + sorted(label for label in labels if label not in order)
    if reference is not None:
        if reference not in labels:
            raise UserInputError(f"{reference!r} has no runs in {exproot}; upstreams with runs: {order}",
                                 argument="reference")
        return reference, order
    return (saved if saved in labels else order[0]), order


def _nan() -> float:
    return float("nan")


def _interval_columns(row: Dict[str, Any], unc: "RowUncertainty") -> None:
    """The low / high / verdict columns of one row from its intervals (NaN where unknown)."""
    for task in TASK_ORDER:
        score = unc.scores.get(task)
        row[f"{SCORE_COLUMN[task]}_low"] = score.low if score else _nan()
        row[f"{SCORE_COLUMN[task]}_high"] = score.high if score else _nan()
        cap = unc.capacity.get(task)
        row[f"{CAPACITY_COLUMN[task]}_low"] = cap.low if cap else _nan()
        row[f"{CAPACITY_COLUMN[task]}_high"] = cap.high if cap else _nan()
        row[f"{CAPACITY_COLUMN[task]}_verdict"] = cap.verdict if cap else ""
    avg = unc.capacity_avg
    row["capacity_avg_low"], row["capacity_avg_high"] = (avg.low, avg.high) if avg else (_nan(), _nan())
    row["test_items"] = ",".join(f"{t}={n}" for t, n in unc.n_items.items())
    row["er_fold_std"] = unc.folds.std if unc.folds else _nan()


def _superb_columns(row: Dict[str, Any], superb: Optional[Mapping[str, Any]]) -> None:
    row["superb_score"] = superb["score"] if superb else _nan()
    interval = (superb or {}).get("interval") or {}
    row["superb_score_low"], row["superb_score_high"] = interval.get("low", _nan()), interval.get("high", _nan())
    row["superb_score_tasks"] = ", ".join(superb["tasks"]) if superb else ""
    row["superb_score_p"] = superb["score_p"] if superb and superb["score_p"] is not None else _nan()
    interval_p = (superb or {}).get("score_p_interval") or {}
    row["superb_score_p_low"], row["superb_score_p_high"] = interval_p.get("low", _nan()), interval_p.get("high", _nan())
    for task in TASK_ORDER:
        row[f"superb_{task}"] = (superb or {}).get("task_scores", {}).get(task.upper(), _nan())


def _lr_search_text(search: Mapping[str, Mapping[str, Any]]) -> str:
    """``ks: 1e-3 of 1e-4, 1e-3, 1e-2 (best dev acc)`` per task whose rate a search chose."""
    parts = []
    for task, s in sorted(search.items(), key=lambda kv: TASKS[kv[0]].order):
        scores = ", ".join(f"{t['rate']:g}: {t['value']:.4g}" if t.get("value") is not None else f"{t['rate']:g}: n/a"
                           for t in s.get("trials", []))
        chosen = f"{s['chosen']:g}" if s.get("chosen") is not None else "recipe's rate (no exploration scored)"
        parts.append(f"{task}: {chosen} by best {s.get('split')} {s.get('metric')} ({scores})")
    return "; ".join(parts)


def _row(label: str, info: Mapping[str, Any], ref_tasks: Mapping[str, Any], cost: Mapping[str, Any]
         ) -> Tuple[Dict[str, Any], List[str]]:
    """One upstream's row (scores, capacity kept, cost) and the tasks that did not finish; the interval columns
    are filled by :func:`_interval_columns`."""
    tasks = info["tasks"]
    row: Dict[str, Any] = {"upstream": label, "hub_entry": info["hub_entry"]}
    failures, failed = [], []
    for task in TASK_ORDER:
        cell = tasks.get(task)
        row[SCORE_COLUMN[task]] = cell["value"] if cell else float("nan")
        if cell and cell["failure"]:
            failures.append(f"{task}: {cell['failure']}")
            failed.append(task)
        ref_cell = ref_tasks.get(task)
        row[CAPACITY_COLUMN[task]] = capacity_kept(task, row[SCORE_COLUMN[task]],
                                                  ref_cell["value"] if ref_cell else float("nan"))
    defined = [t for t in TASK_ORDER if not math.isnan(row[CAPACITY_COLUMN[t]])]
    row["capacity_avg"] = (sum(row[CAPACITY_COLUMN[t]] for t in defined) / len(defined)) if defined else float("nan")
    row["capacity_tasks"] = ",".join(defined)
    row["er_folds"] = ",".join(f.replace("fold", "") for f in tasks.get("er", {}).get("folds") or [])
    row["learning_rates"] = ",".join(f"{t}={lr:g}" for t, lr in sorted(info["learning_rates"].items(),
                                                                       key=lambda kv: TASKS[kv[0]].order))
    row["lr_search"] = _lr_search_text(info.get("lr_search") or {})
    if "error" in cost:
        failures.append(f"cost: {cost['error']}")
    row["params_total"] = cost.get("params_total", float("nan"))
    row["params_stack"] = cost.get("params_stack") if cost.get("params_stack") is not None else float("nan")
    row["macs_per_second"] = cost.get("macs_per_second", float("nan"))
    lat = cost.get("latency_seconds_per_second")
    row["latency_ms_per_second"] = lat * 1000.0 if lat is not None else float("nan")
    row["latency_device"] = cost.get("device_name") or cost.get("device") or ""
    row["failures"] = "; ".join(failures)
    return row, failed


def _finished(cells: Mapping[str, Any]) -> Dict[str, Any]:
    return {t: c for t, c in cells.items() if not c["failure"] and not _isnan(c["value"])}


def _uncertainty(label: str, info: Mapping[str, Any], reference: str, ref_items: Mapping[str, Any],
                 row: Mapping[str, Any], seed: int, resamples: int) -> "RowUncertainty":
    from .uncertainty import row_uncertainty

    done = _finished(info["tasks"])
    params = row["params_total"]
    return row_uncertainty({t: c["records"] for t, c in done.items()}, {t: c["value"] for t, c in done.items()},
                           ref_items, None if _isnan(params) else float(params) / 1e6, label == reference,
                           seed=seed, resamples=resamples)


def build_leaderboard(
    exproot: PathLike,
    reference: Optional[str] = None,
    device: str = "cpu",
    cost: bool = True,
    cost_seconds: float = 1.0,
    cost_repeats: int = 5,
    threads: Optional[int] = None,
    remeasure: bool = False,
    seed: int = 0,
    resamples: Optional[int] = None,
) -> Leaderboard:
    """The leaderboard of a runner folder (see the module docstring). ``reference``: the upstream label capacity is
    relative to (default: the one recorded by ``superb``, else the first upstream). ``cost=False`` leaves the cost
    columns empty (no upstream is loaded). ``seed`` / ``resamples``: of the bootstrap intervals
    (:mod:`.uncertainty`; the same seed gives the same bounds)."""
    import pandas as pd

    from .uncertainty import RESAMPLES, task_items

    exproot = Path(exproot).resolve()
    cells = task_cells(collect_runs(exproot))
    reference, order = _reference_label(exproot, list(cells), reference)
    notes: List[str] = []
    cost_data: Dict[str, Any] = {}
    if cost:
        cost_data = measure_costs(exproot, cells, device=device, seconds=cost_seconds, repeats=cost_repeats,
                                  threads=threads, remeasure=remeasure)
    ref_tasks = cells[reference]["tasks"]
    ref_items = {t: found for t, c in _finished(ref_tasks).items()
                 if (found := task_items(t, c["records"])) is not None}
    ref_folds = ref_tasks.get("er", {}).get("folds")
    rows, intervals = [], {}
    failed_tasks: Dict[str, List[str]] = {}
    for label in order:
        row, failed = _row(label, cells[label], ref_tasks, (cost_data.get("upstreams") or {}).get(label) or {})
        unc = _uncertainty(label, cells[label], reference, ref_items, row, seed, resamples or RESAMPLES)
        _interval_columns(row, unc)
        _superb_columns(row, unc.superb)
        row["verdict"] = "reference" if label == reference else unc.verdict()
        intervals[label] = unc.to_dict()
        if failed:
            failed_tasks[label] = failed
        folds = cells[label]["tasks"].get("er", {}).get("folds") or []
        if folds and ref_folds and folds != ref_folds:
            notes.append(f"{label}: ER averaged over folds {row['er_folds']}, the reference over "
                         f"{','.join(f.replace('fold', '') for f in ref_folds)}")
        missing = [t.upper() for t in TASK_ORDER if t in _finished(cells[label]["tasks"]) and t not in unc.scores]
        if missing:
            notes.append(f"{label}: no per-item test files for {', '.join(missing)} in its expdir, so no interval")
        rows.append(row)
    for task in TASK_ORDER:
        ref_cell = ref_tasks.get(task)
        if ref_cell and not ref_cell["failure"] and task_accuracy(task, ref_cell["value"]) <= 0:
            what = "accuracy" if TASKS[task].higher_is_better else f"1 - {TASKS[task].metric.upper()}"
            notes.append(f"capacity kept on {task} is undefined: the reference {reference} has {what} 0 "
                         f"({SCORE_COLUMN[task]} = {ref_cell['value']:.2f})")
    table = pd.DataFrame(rows, columns=COLUMNS)
    return Leaderboard(table=table, reference=reference, notes=notes, cost=cost_data, exproot=exproot,
                       failed_tasks=failed_tasks, intervals=intervals,
                       lr_search={label: cells[label].get("lr_search") or {} for label in order})


# --------------------------------------------------------------------------------------------------
# rendering and writing
# --------------------------------------------------------------------------------------------------


def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


DEFINITIONS = {
    "capacity_kept": "accuracy / reference accuracy; ASR: max(0, 1 - WER) / (1 - reference WER); undefined when "
                     "the reference accuracy is 0",
    "capacity_avg": "mean of capacity_<task> over capacity_tasks",
    "er_acc": "mean test accuracy over the ER folds in er_folds",
    "intervals": "95 %: Wilson for one set of accuracy items; seeded percentile bootstrap for ER over several folds "
                 "and ASR; capacity kept: paired bootstrap on the same test items as the reference",
    "verdict": "indistinguishable: on every task the 95 % interval of (score - reference score) contains 0",
    "superb_score": "the SUPERB site's formula over the tasks in superb_score_tasks (0 = FBANK, 1000 = the best "
                    "published upstream); superb_score_p divides each task's score by the parameters in millions",
    "learning_rates": "the optimizer.lr each task trained with",
}


def leaderboard_json(board: Leaderboard) -> Dict[str, Any]:
    rows = [{col: json_ready(row[col]) for col in COLUMNS} for _, row in board.table.iterrows()]
    return {
        "format": "s3prl_redundancy.superb.leaderboard/2",
        "reference": board.reference,
        "columns": list(COLUMNS),
        "rows": rows,
        "notes": board.notes,
        "units": {**{SCORE_COLUMN[t]: "%" for t in TASK_ORDER}, "macs_per_second": "MACs per second of audio",
                  "latency_ms_per_second": "ms per second of audio", "capacity": "ratio to the reference",
                  "superb_score": "0 (FBANK) .. 1000 (topline)"},
        "definitions": DEFINITIONS,
        "intervals": json_ready(board.intervals),
        "lr_search": json_ready(board.lr_search),
        "cost": board.cost,
    }


def render_markdown(board: Leaderboard) -> str:
    """The leaderboard as Markdown: scores, capacity kept and cost tables (:mod:`.display`)."""
    from .display import leaderboard_markdown

    return leaderboard_markdown(leaderboard_json(board))


def plot_pareto(board: Leaderboard, path: PathLike) -> Path:
    """``pareto.png``: average capacity kept (with its paired 95 % interval) versus latency and parameters."""
    from .display import plot_pareto as plot

    return plot(leaderboard_json(board), path)


def write_leaderboard(board: Leaderboard, out_dir: Optional[PathLike] = None) -> Dict[str, str]:
    """Write CSV, Markdown, JSON and the Pareto plot (atomically; they are views of the runs and are rebuilt
    on every call). Returns ``{kind: path}``."""
    out = Path(out_dir or board.exproot)
    paths = {k: out / name for k, name in FILES.items()}
    atomic_write_text(paths["csv"], board.table.to_csv(index=False))
    atomic_write_text(paths["md"], render_markdown(board))
    atomic_write_json(paths["json"], leaderboard_json(board))
    plot_pareto(board, paths["png"])
    return {k: str(v) for k, v in paths.items()}


__all__ = [
    "COLUMNS", "SCORE_COLUMN", "CAPACITY_COLUMN", "FILES", "LR_TRIAL", "DEFINITIONS", "Leaderboard", "collect_runs",
    "task_cells", "task_accuracy", "capacity_kept", "pareto_front", "measure_costs", "build_leaderboard",
    "render_markdown", "leaderboard_json", "plot_pareto", "write_leaderboard",
]
