"""How leaderboard numbers are shown to people: one set of formats for Markdown, HTML (the demo report) and plots.

Everything here works on the leaderboard's JSON (:func:`.leaderboard.leaderboard_json`), so the demo report,
which reads ``leaderboard.json``, shows exactly the tables ``leaderboard.md`` shows. Formats: scores in percent
with one decimal and their 95 % interval in brackets, capacity kept with two decimals, the SUPERB score rounded
to an integer as on the SUPERB site (Score-P with two decimals), parameters with thousands separators, MACs with
an SI prefix, latency in milliseconds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Mapping, Sequence, Tuple, Union

from .tasks import TASK_ORDER, TASKS

Table = Tuple[str, List[str], List[List[str]]]  # (title, header, rows)


def _missing(x: Any) -> bool:
    return x is None or x == "" or (isinstance(x, float) and math.isnan(x))


def fmt_int(x: Any) -> str:
    """``5,334,452``; ``n/a`` when unknown."""
    return "n/a" if _missing(x) else f"{int(round(float(x))):,}"


def fmt_si(x: Any, unit: str = "") -> str:
    """``414.5 M`` (one decimal, SI prefix); ``n/a`` when unknown."""
    if _missing(x):
        return "n/a"
    x = float(x)
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:,.1f} {prefix}{unit}".strip()
    return f"{x:,.0f} {unit}".strip()


def fmt_interval(point: Any, low: Any = None, high: Any = None, decimals: int = 1) -> str:
    """``93.8 [88.1, 96.9]``; the point alone when the interval is unknown; ``n/a`` when the point is."""
    if _missing(point):
        return "n/a"
    text = f"{float(point):,.{decimals}f}"
    if not _missing(low) and not _missing(high):
        text += f" [{float(low):,.{decimals}f}, {float(high):,.{decimals}f}]"
    return text


def score_title(task: str) -> str:
    """``KS acc %``, ``ASR WER %``: an error rate is written in capitals."""
    spec = TASKS[task]
    return f"{task.upper()} {spec.metric if spec.higher_is_better else spec.metric.upper()} %"


def _tasks_shown(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """Tasks with a value or a failure in some row (a task nobody ran gets no column)."""
    shown = []
    for task in TASK_ORDER:
        col = TASKS[task].score_column
        if any(not _missing(r.get(col)) or f"{task}:" in (r.get("failures") or "") for r in rows):
            shown.append(task)
    return shown


def _label(row: Mapping[str, Any], reference: str) -> str:
    return f"**{row['upstream']}**" if row["upstream"] == reference else str(row["upstream"])


def scores_table(data: Mapping[str, Any], markup: bool = True) -> Table:
    """Test scores with 95 % intervals, the SUPERB score (over the tasks run) and the learning rates."""
    rows, ref = data["rows"], data["reference"]
    tasks = _tasks_shown(rows)
    subsets = {r.get("superb_score_tasks") for r in rows if r.get("superb_score_tasks")}
    common = subsets.pop() if len(subsets) == 1 else None
    header = ["upstream"] + [score_title(t) for t in tasks] + [
        f"SUPERB score over {common}" if common else "SUPERB score (over the tasks named)", "Score-P", "learning rate"]
    body = []
    for r in rows:
        failed = {f.split(":", 1)[0] for f in (r.get("failures") or "").split("; ") if f}
        cells = [_label(r, ref) if markup else r["upstream"]]
        for t in tasks:
            col = TASKS[t].score_column
            cells.append("failed" if t in failed else fmt_interval(r.get(col), r.get(f"{col}_low"), r.get(f"{col}_high")))
        superb = fmt_interval(r.get("superb_score"), r.get("superb_score_low"), r.get("superb_score_high"), 0)
        if not common and r.get("superb_score_tasks"):
            superb += f" over {r['superb_score_tasks']}"
        cells += [superb, fmt_interval(r.get("superb_score_p"), r.get("superb_score_p_low"), r.get("superb_score_p_high"), 2),
                  (r.get("learning_rates") or "-").replace(",", ", ")]
        body.append(cells)
    return ("Test scores (95 % intervals)", header, body)


def capacity_table(data: Mapping[str, Any], markup: bool = True) -> Table:
    """Capacity kept per task and on average with paired 95 % intervals, and the verdict against the reference."""
    rows, ref = data["rows"], data["reference"]
    tasks = [t for t in _tasks_shown(rows) if any(not _missing(r.get(f"capacity_{t}")) for r in rows)]
    header = ["upstream"] + [f"{t.upper()} kept" for t in tasks] + ["avg kept", f"vs {ref}"]
    body = []
    for r in rows:
        cells = [_label(r, ref) if markup else r["upstream"]]
        cells += [fmt_interval(r.get(f"capacity_{t}"), r.get(f"capacity_{t}_low"), r.get(f"capacity_{t}_high"), 2)
                  for t in tasks]
        cells += [fmt_interval(r.get("capacity_avg"), r.get("capacity_avg_low"), r.get("capacity_avg_high"), 2),
                  r.get("verdict") or "-"]
        body.append(cells)
    return (f"Capacity kept relative to {ref} (paired 95 % intervals on the same test items)", header, body)


def cost_table(data: Mapping[str, Any], markup: bool = True) -> Table:
    rows, ref = data["rows"], data["reference"]
    header = ["upstream", "parameters", "stack parameters", "MACs per second of audio", "latency (ms per second of audio)"]
    body = [[_label(r, ref) if markup else r["upstream"], fmt_int(r.get("params_total")), fmt_int(r.get("params_stack")),
             fmt_si(r.get("macs_per_second")), fmt_interval(r.get("latency_ms_per_second"), decimals=1)] for r in rows]
    return ("Cost", header, body)


def leaderboard_tables(data: Mapping[str, Any], markup: bool = True) -> List[Table]:
    """The three tables of a leaderboard: scores, capacity kept, cost."""
    return [scores_table(data, markup), capacity_table(data, markup), cost_table(data, markup)]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return lines


def _detail_lines(data: Mapping[str, Any]) -> List[str]:
    details = [(r["upstream"], r.get("er_folds"), r.get("lr_search"), r.get("failures")) for r in data["rows"]]
    if not any(er or lr or fail for _, er, lr, fail in details):
        return []
    out = ["", "| upstream | ER folds | learning-rate search | failures |", "|---|---|---|---|"]
    return out + [f"| {u} | {er or '-'} | {lr or '-'} | {fail or '-'} |" for u, er, lr, fail in details]


def leaderboard_markdown(data: Mapping[str, Any]) -> str:
    """``leaderboard.md``: the three tables, how cost was measured, details and notes."""
    out = ["# SUPERB leaderboard", "",
           f"Reference for capacity kept: **{data['reference']}**. Capacity kept = accuracy / reference accuracy "
           "(ASR: (1 - WER) / (1 - reference WER)); avg kept = mean over the tasks where it is defined. Intervals: "
           "95 %, from the per-item test files of each run (accuracy: Wilson; ER over folds and ASR: seeded "
           "bootstrap; capacity kept: paired bootstrap). 'indistinguishable': on no task does the interval of the "
           "score difference exclude 0."]
    for title, header, rows in leaderboard_tables(data):
        out += ["", f"## {title}", "", *markdown_table(header, rows)]
    key = (data.get("cost") or {}).get("key") or {}
    if key:
        device = next((r.get("latency_device") for r in data["rows"] if r.get("latency_device")), "") or key.get("device")
        out += ["", f"Cost: one forward on {key.get('seconds')} s of audio; latency = median of {key.get('repeats')} "
                    f"interleaved repeats on {device}" + (f" with {key['threads']} thread(s)" if key.get("threads") else "")
                + "."]
    out += _detail_lines(data)
    if data.get("notes"):
        out += ["", "Notes:", *[f"- {n}" for n in data["notes"]]]
    return "\n".join(out) + "\n"


def plot_pareto(data: Mapping[str, Any], path: Union[str, Path]) -> Path:
    """Average capacity kept versus latency and versus parameters, each point with its paired 95 % interval as
    an error bar; the Pareto front (by the point estimates) drawn as a line, the reference outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import save_figure
    from .leaderboard import pareto_front

    rows, ref = data["rows"], data["reference"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, column, scale, xlabel in ((axes[0], "latency_ms_per_second", 1.0, "latency (ms per second of audio)"),
                                      (axes[1], "params_total", 1e6, "parameters (millions)")):
        xs = [float("nan") if _missing(r.get(column)) else float(r[column]) / scale for r in rows]
        ys = [float("nan") if _missing(r.get("capacity_avg")) else float(r["capacity_avg"]) for r in rows]
        front = pareto_front(xs, ys)
        finite = [(x, y) for x, y in zip(xs, ys) if not (math.isnan(x) or math.isnan(y))]
        span_x = (max(p[0] for p in finite) - min(p[0] for p in finite)) or 1.0 if finite else 1.0
        span_y = (max(p[1] for p in finite) - min(p[1] for p in finite)) or 1.0 if finite else 1.0
        labelled: List[Tuple[float, float]] = []
        for x, y, r, on in zip(xs, ys, rows, front):
            if math.isnan(x) or math.isnan(y):
                continue
            low, high = r.get("capacity_avg_low"), r.get("capacity_avg_high")
            yerr = None if _missing(low) or _missing(high) else [[max(0.0, y - low)], [max(0.0, high - y)]]
            ax.errorbar([x], [y], yerr=yerr, fmt="o", ms=9 if on else 6, capsize=4, zorder=3,
                        color="C3" if on else "C0", mec="black" if r["upstream"] == ref else "none")
            text = r["upstream"] if _missing(r.get("superb_score")) else \
                f"{r['upstream']} (SUPERB {fmt_interval(r['superb_score'], decimals=0)})"
            # a point close to an already labelled one (labels run ~40% of the x span) gets its label stacked below
            near = sum(abs(x - lx) < 0.4 * span_x and abs(y - ly) < 0.05 * span_y for lx, ly in labelled)
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 4 - 11 * near), fontsize=8)
            labelled.append((x, y))
        pts = sorted((x, y) for x, y, on in zip(xs, ys, front) if on)
        if len(pts) > 1:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="C3", linestyle="--", zorder=2, label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        valid = [x for x in xs if not math.isnan(x) and x > 0]
        if valid and max(valid) / min(valid) > 20:
            ax.set_xscale("log")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"average capacity kept (vs {ref})")
        ax.grid(True, alpha=0.3)
    tasks = {r.get("superb_score_tasks") for r in rows if r.get("superb_score_tasks")}
    over = f"; SUPERB score over {tasks.pop()}" if len(tasks) == 1 else ""
    fig.suptitle("SUPERB: average capacity kept (95 % paired interval) vs cost (red: Pareto front, black edge: "
                 f"reference{over})", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


__all__ = ["fmt_int", "fmt_si", "fmt_interval", "score_title", "scores_table", "capacity_table", "cost_table",
           "leaderboard_tables", "markdown_table", "leaderboard_markdown", "plot_pareto"]
