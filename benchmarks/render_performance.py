"""Render a pytest-benchmark JSON of the suite into ``docs/performance.md``.

    python benchmarks/render_performance.py docs/benchmarks.json docs/performance.md

Every benchmark stores (``benchmarks/conftest.py``) in ``extra_info``: ``ratios`` ``{case: {"values": [one
ratio per interleaved round], "reference": str, "target": "<= 0.06" | None, "floor": float | None}}``,
``context`` ``{name: absolute number}`` and optionally ``device``. For every ratio the page gives the median,
min, max and spread = (max - min) / median; a spread over 20% is flagged as unstable, a median that misses
its target is flagged too. Benchmarks are grouped by their pytest-benchmark ``group`` (one section each),
in the order of the JSON; CUDA groups get a section of their own. The output depends only on the JSON,
and is written atomically.
"""

from __future__ import annotations

import json
import math
import operator
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

UNSTABLE_SPREAD = 0.20
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}


# ---------------------------------------------------------------------------------------- numbers
def summarise(values: Sequence[float]) -> Dict[str, float]:
    """``median``, ``min``, ``max``, ``spread`` = (max - min) / median and ``n`` of one ratio's rounds."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("a ratio needs at least one value")
    med = statistics.median(vals)
    lo, hi = min(vals), max(vals)
    spread = (hi - lo) / abs(med) if med else (0.0 if hi == lo else math.inf)
    return {"median": med, "min": lo, "max": hi, "spread": spread, "n": len(vals)}


def check_target(target: Optional[str], value: float) -> Optional[bool]:
    """``"<= 0.06"`` -> whether ``value`` meets it (None when there is no target)."""
    if target is None:
        return None
    op, _, number = str(target).strip().partition(" ")
    if op not in _OPS:
        raise ValueError(f"target {target!r}: expected one of {', '.join(_OPS)} and a number")
    bound = float(number)
    if op == "==":
        return math.isclose(value, bound, rel_tol=1e-12, abs_tol=1e-12)
    return bool(_OPS[op](value, bound))


def fmt_ratio(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.3f}" if 0.01 <= abs(x) < 1000 else f"{x:.3g}"


def fmt_value(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x.is_integer() and abs(x) >= 1e4:
            return f"{int(x):,}"
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in x) + "]"
    if isinstance(x, Mapping):
        return json.dumps(x, sort_keys=True, default=str)
    return str(x)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------- rows
def ratio_rows(bench: Mapping[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for case, spec in (bench.get("extra_info", {}).get("ratios") or {}).items():
        s = summarise(spec["values"])
        target, floor = spec.get("target"), spec.get("floor")
        met = check_target(target, s["median"])
        verdict = []
        if met is not None:
            verdict.append("meets target" if met else "**misses target**")
        if floor:
            verdict.append(f"{s['median'] / floor:.2f} x floor")
        unstable = s["n"] > 1 and s["spread"] > UNSTABLE_SPREAD
        if unstable:
            verdict.append(f"**unstable: spread {s['spread']:.0%}**")
        rows.append(dict(s, case=case, reference=spec.get("reference", ""), target=target, floor=floor, met=met,
                         unstable=unstable, verdict="; ".join(verdict) or "-"))
    return rows


def _table(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    lines = ["| case | median | min - max | spread | n | target | floor | verdict | reference |",
             "|---|---:|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        spread = f"{r['spread']:.0%}" if r["n"] > 1 else "-"
        lines.append("| " + " | ".join(_cell(c) for c in (
            r["case"], fmt_ratio(r["median"]), f"{fmt_ratio(r['min'])} - {fmt_ratio(r['max'])}", spread, r["n"],
            r["target"] or "-", fmt_ratio(r["floor"]), r["verdict"], r["reference"])) + " |")
    return lines


def _groups(benchmarks: Sequence[Mapping[str, Any]]) -> List[Tuple[str, List[Mapping[str, Any]]]]:
    order: Dict[str, List[Mapping[str, Any]]] = {}
    for b in benchmarks:
        order.setdefault(b.get("group") or b.get("name", "ungrouped"), []).append(b)
    return list(order.items())


def _device(bench: Mapping[str, Any]) -> str:
    return str(bench.get("extra_info", {}).get("device") or "cpu")


def _section(group: str, benches: Sequence[Mapping[str, Any]], flagged: List[str]) -> List[str]:
    lines = [f"### {group}", ""]
    for b in benches:
        info = b.get("extra_info", {})
        rows = ratio_rows(b)
        lines.append(f"`{b.get('fullname', b.get('name', '?'))}`")
        lines.append("")
        if rows:
            lines += _table(rows)
            for r in rows:
                where = f"{group} / {r['case']}"
                if r["unstable"]:
                    flagged.append(f"{where}: unstable: spread {r['spread']:.0%} "
                                   f"(min {fmt_ratio(r['min'])}, max {fmt_ratio(r['max'])}, median {fmt_ratio(r['median'])})")
                if r["met"] is False:
                    flagged.append(f"{where}: misses target {r['target']} (median {fmt_ratio(r['median'])})")
        else:
            lines.append("No ratios recorded (this benchmark does not use the ratio schema yet).")
            flagged.append(f"{group} / {b.get('name', '?')}: no ratios recorded")
        lines.append("")
        context = dict(info.get("context") or {})
        if not rows:  # show what it did record
            context.update({k: v for k, v in info.items() if k not in ("ratios", "context", "device")})
        stats = b.get("stats") or {}
        if "total" in stats:
            context["measurement_wall_s"] = float(stats["total"])
        if context:
            lines.append("Context (absolute, this machine): " + "; ".join(
                f"{k} = {fmt_value(v)}" for k, v in context.items()) + ".")
            lines.append("")
    return lines


# ---------------------------------------------------------------------------------------- page
def render(data: Mapping[str, Any]) -> str:
    machine = data.get("machine_info") or {}
    bench_info = machine.get("bench") or {}
    commit = (data.get("commit_info") or {}).get("id")
    cpu = bench_info.get("cpu_model") or (machine.get("cpu") or {}).get("brand_raw") or machine.get("processor") or "?"
    load = bench_info.get("load_average_start", bench_info.get("load_average"))
    load_end = bench_info.get("load_average_end")
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (`benchmarks/render_performance.py` from `docs/benchmarks.json`); do not edit",
        "by hand.",
        "",
        f"- Date: {data.get('datetime', '?')}",
        f"- Machine: {cpu}, {bench_info.get('logical_cpus', '?')} logical CPUs, {machine.get('system', '?')} "
        f"{machine.get('release', '')}".rstrip()
        + (f"; load average (1, 5, 15 min) {fmt_value(load)} when the run began" if load else "")
        + (f", {fmt_value(load_end)} at its end" if load_end else ""),
        f"- Threads: {bench_info.get('threads', '?')} intra-op, {bench_info.get('interop_threads', '?')} inter-op",
        f"- torch {bench_info.get('torch', '?')}, Python {machine.get('python_version', '?')}, "
        f"pytest-benchmark {data.get('version', '?')}",
        f"- GPU: {bench_info.get('cuda') or 'none'}",
    ]
    if bench_info.get("audio_seconds") is not None:
        lines.append(f"- Settings: {fmt_value(bench_info.get('audio_seconds'))} s of audio per utterance, "
                     f"{bench_info.get('rounds', '?')} timed rounds after warm-up")
    if commit:
        lines.append(f"- Commit: {commit}")
    lines += [
        "",
        "Every figure is a ratio against the reference named in its row, measured in the same run with both",
        "sides taking turns within every round (one value per round; parameter and MAC counts are exact, one",
        "value). `median` and `min - max` are over the rounds; spread = (max - min) / median, and a spread",
        f"over {UNSTABLE_SPREAD:.0%} is flagged as unstable. `floor` is the best the case could reach (see the",
        "benchmark's docstring); `x floor` is the median over it. Absolute times are context only: they depend",
        "on the machine and its load.",
        "",
    ]
    benchmarks = list(data.get("benchmarks") or [])
    cpu_benches = [b for b in benchmarks if _device(b) != "cuda"]
    cuda_benches = [b for b in benchmarks if _device(b) == "cuda"]
    flagged: List[str] = []
    body: List[str] = ["## CPU", ""]
    for group, benches in _groups(cpu_benches):
        body += _section(group, benches, flagged)
    body += ["## CUDA", ""]
    if cuda_benches:
        body.append("Synchronised around every call, after warm-up rounds.")
        body.append("")
        for group, benches in _groups(cuda_benches):
            body += _section(group, benches, flagged)
    else:
        body += ["No GPU was available in this run: the CUDA cases were skipped.", ""]
    lines += ["## Flagged", ""]
    lines += [f"- {f}" for f in flagged] or ["None: every ratio met its target and had a spread of at most "
                                             f"{UNSTABLE_SPREAD:.0%}."]
    lines.append("")
    lines += body
    return "\n".join(lines).rstrip() + "\n"


def write_atomic(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python benchmarks/render_performance.py BENCHMARKS.json PERFORMANCE.md", file=sys.stderr)
        return 2
    data = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    out = write_atomic(Path(args[1]), render(data))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
