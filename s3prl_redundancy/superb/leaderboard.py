"""The SUPERB leaderboard of a runner folder: scores, cost and capacity kept, one row per upstream.

Built only from the ``run.json`` files the runner leaves (nothing is trained or evaluated again) plus a
cost measurement of each upstream (loaded once, cached in ``cost.json``). Written as
``leaderboard.csv``, ``leaderboard.md``, ``leaderboard.json`` and ``pareto.png`` in the runner folder.

Columns (scores in percent, as SUPERB reports them):

* ``ks_acc``, ``sid_acc``, ``er_acc`` (ER: mean over the folds that ran, as SUPERB averages its 5 folds),
  ``asr_wer``: test scores;
* ``params_total`` / ``params_stack``: parameters of the whole upstream / of its transformer stack (the
  mimicker for a distilled upstream); ``macs_per_second``: multiply-accumulates per second of audio;
  ``latency_ms_per_second``: milliseconds of upstream compute per second of audio (median of repeats, all
  upstreams timed side by side on ``latency_device``); see :mod:`.cost`;
* ``capacity_<task>``: capacity kept relative to the reference upstream. For the accuracy tasks the ratio of
  accuracies; for ASR the ratio of word accuracies ``1 - WER`` (clipped at 0, since WER can exceed 100 %).
  Undefined (empty) when the reference scores 0 on the task (e.g. a WER of 100 % or more); ``capacity_avg`` is
  the mean over the tasks where it is defined, which ``capacity_tasks`` lists;
* ``failures``: each task that did not finish, with its error and log path.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import UserInputError
from ..io import atomic_write_json, atomic_write_text, json_ready, read_json, save_figure
from . import results as res
from .runs import RUN_JSON, RUNS_DIR, STATUS_FINISHED, read_run_json, read_superb_json
from .tasks import TASK_ORDER, TASKS
from .tasks.er import ER_FOLDS

PathLike = Union[str, "os.PathLike[str]"]

SCORE_COLUMN = {name: task.score_column for name, task in TASKS.items()}
CAPACITY_COLUMN = {t: f"capacity_{t}" for t in TASK_ORDER}
COLUMNS = (
    ["upstream", "hub_entry"] + [SCORE_COLUMN[t] for t in TASK_ORDER]
    + ["params_total", "params_stack", "macs_per_second", "latency_ms_per_second", "latency_device"]
    + [CAPACITY_COLUMN[t] for t in TASK_ORDER] + ["capacity_avg", "capacity_tasks", "er_folds", "learning_rates", "failures"]
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


def task_cells(runs: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """``{label: {"hub_entry", "upstream_args", "upstream_files", "learning_rates", "tasks": {task: cell}}}``
    where a cell is ``{"value": percent or NaN, "failure": text or None, "folds": [...]}``."""
    grouped: Dict[str, Dict[str, List[Mapping[str, Any]]]] = {}
    info: Dict[str, Dict[str, Any]] = {}
    for record in runs:
        label = record["upstream"]
        grouped.setdefault(label, {}).setdefault(record["task"], []).append(record)
        entry = info.setdefault(label, {"hub_entry": record.get("hub_entry"), "upstream_args": record.get("upstream_args"),
                                        "upstream_files": (record.get("config") or {}).get("upstream_files"),
                                        "learning_rates": {}})
        lr = (record.get("learning_rate") or {}).get("override")
        if lr is not None:
            entry["learning_rates"][record["task"]] = lr
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
                cells[task] = {"value": float("nan"), "failure": failure, "folds": folds}
            else:
                values = [res.percent(r["metric"]) for r in records]
                cells[task] = {"value": sum(values) / len(values), "failure": None, "folds": folds,
                               "per_fold": dict(zip(folds, values)) if folds else None}
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


def _row(label: str, info: Mapping[str, Any], ref_tasks: Mapping[str, Any], cost: Mapping[str, Any]
         ) -> Tuple[Dict[str, Any], List[str]]:
    """One upstream's row (scores, capacity kept, cost) and the tasks that did not finish."""
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
    row["learning_rates"] = ",".join(f"{t}={lr:g}" for t, lr in sorted(info["learning_rates"].items()))
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


def build_leaderboard(
    exproot: PathLike,
    reference: Optional[str] = None,
    device: str = "cpu",
    cost: bool = True,
    cost_seconds: float = 1.0,
    cost_repeats: int = 5,
    threads: Optional[int] = None,
    remeasure: bool = False,
) -> Leaderboard:
    """The leaderboard of a runner folder (see the module docstring). ``reference``: the upstream label capacity is
    relative to (default: the one recorded by ``superb``, else the first upstream). ``cost=False`` leaves the cost
    columns empty (no upstream is loaded)."""
    import pandas as pd

    exproot = Path(exproot).resolve()
    cells = task_cells(collect_runs(exproot))
    reference, order = _reference_label(exproot, list(cells), reference)
    notes: List[str] = []
    cost_data: Dict[str, Any] = {}
    if cost:
        cost_data = measure_costs(exproot, cells, device=device, seconds=cost_seconds, repeats=cost_repeats,
                                  threads=threads, remeasure=remeasure)
    ref_tasks = cells[reference]["tasks"]
    ref_folds = ref_tasks.get("er", {}).get("folds")
    rows = []
    failed_tasks: Dict[str, List[str]] = {}
    for label in order:
        row, failed = _row(label, cells[label], ref_tasks, (cost_data.get("upstreams") or {}).get(label) or {})
        if failed:
            failed_tasks[label] = failed
        folds = cells[label]["tasks"].get("er", {}).get("folds") or []
        if folds and ref_folds and folds != ref_folds:
            notes.append(f"{label}: ER averaged over folds {row['er_folds']}, the reference over "
                         f"{','.join(f.replace('fold', '') for f in ref_folds)}")
        rows.append(row)
    for task in TASK_ORDER:
        ref_cell = ref_tasks.get(task)
        if ref_cell and not ref_cell["failure"] and task_accuracy(task, ref_cell["value"]) <= 0:
            what = "accuracy" if TASKS[task].higher_is_better else f"1 - {TASKS[task].metric.upper()}"
            notes.append(f"capacity kept on {task} is undefined: the reference {reference} has {what} 0 "
                         f"({SCORE_COLUMN[task]} = {ref_cell['value']:.2f})")
    table = pd.DataFrame(rows, columns=COLUMNS)
    return Leaderboard(table=table, reference=reference, notes=notes, cost=cost_data, exproot=exproot,
                       failed_tasks=failed_tasks)


# --------------------------------------------------------------------------------------------------
# rendering and writing
# --------------------------------------------------------------------------------------------------


def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _si(x: Any, unit: str = "") -> str:
    if _isnan(x):
        return "n/a"
    x = float(x)
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}".strip()


def _score_title(task: str) -> str:
    """``KS acc %``, ``ASR WER %``: an error rate is written in capitals."""
    spec = TASKS[task]
    return f"{task.upper()} {spec.metric if spec.higher_is_better else spec.metric.upper()} %"


def render_markdown(board: Leaderboard) -> str:
    """The leaderboard as a Markdown table (failed tasks show ``failed``; undefined values ``n/a``)."""
    df = board.table
    header = (["upstream"] + [_score_title(t) for t in TASK_ORDER]
              + ["params", "stack params", "MACs / s audio", "latency ms / s audio"]
              + [f"{t.upper()} kept" for t in TASK_ORDER] + ["avg kept"])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for _, row in df.iterrows():
        failed = set(board.failed_tasks.get(row["upstream"], []))
        cells = [f"**{row['upstream']}**" if row["upstream"] == board.reference else str(row["upstream"])]
        for task in TASK_ORDER:
            value = row[SCORE_COLUMN[task]]
            cells.append("failed" if task in failed else ("n/a" if _isnan(value) else f"{value:.2f}"))
        cells += [_si(row["params_total"]), _si(row["params_stack"]), _si(row["macs_per_second"]),
                  "n/a" if _isnan(row["latency_ms_per_second"]) else f"{row['latency_ms_per_second']:.2f}"]
        for col in [CAPACITY_COLUMN[t] for t in TASK_ORDER] + ["capacity_avg"]:
            cells.append("n/a" if _isnan(row[col]) else f"{row[col]:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    device = next((d for d in df["latency_device"] if d), "")
    cost_key = (board.cost or {}).get("key") or {}
    out = [
        "# SUPERB leaderboard",
        "",
        f"Reference for capacity kept: **{board.reference}**. Capacity kept = accuracy / reference accuracy "
        "(ASR: (1 - WER) / (1 - reference WER)); avg kept = mean over the tasks where it is defined.",
        "",
        *lines,
        "",
    ]
    if cost_key:
        out.append(f"Cost: one forward on {cost_key.get('seconds')} s of audio; latency = median of "
                   f"{cost_key.get('repeats')} interleaved repeats on {device or cost_key.get('device')}"
                   + (f" with {cost_key['threads']} thread(s)" if cost_key.get("threads") else "") + ".")
    details = [(row["upstream"], row["er_folds"], row["learning_rates"], row["failures"]) for _, row in df.iterrows()]
    if any(er or lr or fail for _, er, lr, fail in details):
        out += ["", "| upstream | ER folds | learning-rate overrides | failures |", "|---|---|---|---|"]
        out += [f"| {u} | {er or '-'} | {lr or '-'} | {fail or '-'} |" for u, er, lr, fail in details]
    if board.notes:
        out += ["", "Notes:", *[f"- {n}" for n in board.notes]]
    return "\n".join(out) + "\n"


def leaderboard_json(board: Leaderboard) -> Dict[str, Any]:
    rows = [{col: json_ready(row[col]) for col in COLUMNS} for _, row in board.table.iterrows()]
    return {
        "format": "s3prl_redundancy.superb.leaderboard/1",
        "reference": board.reference,
        "columns": list(COLUMNS),
        "rows": rows,
        "notes": board.notes,
        "units": {**{SCORE_COLUMN[t]: "%" for t in TASK_ORDER}, "macs_per_second": "MACs per second of audio",
                  "latency_ms_per_second": "ms per second of audio", "capacity": "ratio to the reference"},
        "definitions": {
            "capacity_kept": "accuracy / reference accuracy; ASR: max(0, 1 - WER) / (1 - reference WER); undefined when "
                             "the reference accuracy is 0",
            "capacity_avg": "mean of capacity_<task> over capacity_tasks",
            "er_acc": "mean test accuracy over the ER folds in er_folds",
        },
        "cost": board.cost,
    }


def plot_pareto(board: Leaderboard, path: PathLike) -> Path:
    """``pareto.png``: average capacity kept versus latency and versus parameters, the Pareto front drawn
    as a line through its points (larger markers), the reference marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = board.table
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, column, xlabel in ((axes[0], "latency_ms_per_second", "latency (ms per second of audio)"),
                               (axes[1], "params_total", "parameters")):
        xs, ys = list(df[column].astype(float)), list(df["capacity_avg"].astype(float))
        front = pareto_front(xs, ys)
        finite = [(x, y) for x, y in zip(xs, ys) if not (_isnan(x) or _isnan(y))]
        span_x = (max(p[0] for p in finite) - min(p[0] for p in finite)) or 1.0 if finite else 1.0
        span_y = (max(p[1] for p in finite) - min(p[1] for p in finite)) or 1.0 if finite else 1.0
        labelled = []
        for x, y, label, on in zip(xs, ys, df["upstream"], front):
            if _isnan(x) or _isnan(y):
                continue
            ax.scatter([x], [y], s=80 if on else 30, color="C3" if on else "C0", zorder=3,
                       edgecolors="black" if label == board.reference else "none")
            # a point close to an already labelled one (labels run ~25% of the x span) gets its label stacked below
            near = sum(abs(x - lx) < 0.25 * span_x and abs(y - ly) < 0.04 * span_y for lx, ly in labelled)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5 - 11 * near), fontsize=8)
            labelled.append((x, y))
        pts = sorted((x, y) for x, y, on in zip(xs, ys, front) if on)
        if len(pts) > 1:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="C3", linestyle="--", zorder=2, label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        valid = [x for x in xs if not _isnan(x) and x > 0]
        if valid and max(valid) / min(valid) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"average capacity kept (vs {board.reference})")
        ax.grid(True, alpha=0.3)
    fig.suptitle("SUPERB: average capacity kept vs cost (red: Pareto front, black edge: reference)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


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
    "COLUMNS", "SCORE_COLUMN", "CAPACITY_COLUMN", "FILES", "Leaderboard", "collect_runs", "task_cells",
    "task_accuracy", "capacity_kept", "pareto_front", "measure_costs", "build_leaderboard", "render_markdown",
    "leaderboard_json", "plot_pareto", "write_leaderboard",
]
