"""``report.md`` and a self-contained ``report.html`` (plots embedded) from the demo stages' output files.

The report is a list of blocks (headings, paragraphs, tables, images) rendered twice, as Markdown (images
linked relative to the report) and as HTML (images embedded as base64), so both always say the same.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

Block = Tuple  # ("h1"|"h2"|"p", text) | ("table", header, rows) | ("img", path, caption)


def _probe_cells(r) -> List[str]:
    from ..superb.display import fmt_interval

    acc, cap = r["accuracy"], r.get("capacity")
    if cap is None:
        return [fmt_interval(acc["point"], acc["low"], acc["high"]), "1 (reference)", "reference"]
    # three decimals: these intervals are a point or two wide, two decimals would hide them
    return [fmt_interval(acc["point"], acc["low"], acc["high"]), fmt_interval(cap["point"], cap["low"], cap["high"], 3),
            cap["verdict"]]


def _probe_blocks(out: Path) -> List[Block]:
    """The measurement: capacity kept by the keyword probe on unseen voices, with its paired intervals."""
    path = out / "probe" / "probe.json"
    if not path.is_file():
        return []
    p = json.loads(path.read_text())
    rows = [[label, *_probe_cells(r), *_probe_cells(r["last_layer"])] for label, r in p["rows"].items()]
    goal = (f"The widest capacity interval reaches {100 * p['widest_capacity_half_width']:.1f} points from its "
            f"estimate (goal: at most {100 * p['width_goal']:.0f}; {'met' if p['meets_width_goal'] else 'NOT met'}).")
    ref = p["reference"]
    return [("h2", "4. Measured: capacity kept on keyword spotting, unseen voices"),
            ("p", f"This is the study's measurement. {p['test_clips']:,} test clips ({p['test_voices']} voices) of the "
                  "10 command words, spoken by espeak-ng voice variants that pretraining never used; a linear probe "
                  f"({p['pooling']}) trained on {p['train_clips']:,} clips of the other voices, identical for every "
                  f"upstream (chance {100 * p['chance']:.0f} %). Two views: {p['views']['all']}, and "
                  f"{p['views']['last']}; the first includes the front end's output, which pruning and distillation "
                  "leave unchanged, the second shows what the compressed stack itself keeps. Accuracy: 95 % Wilson "
                  f"interval. Capacity kept = accuracy / {ref}'s accuracy, with a paired 95 % bootstrap interval (the "
                  "same test clips for both); 'indistinguishable': the interval of the accuracy difference contains 0. "
                  + goal),
            ("table", ["upstream", "accuracy % (all hidden states)", "capacity kept", f"vs {ref}",
                       "accuracy % (last hidden state)", "capacity kept", f"vs {ref}"], rows)]


def _leaderboard_blocks(out: Path) -> List[Block]:
    """The pipeline check: s3prl's run_downstream on the mini-SUPERB corpus, the leaderboard's own tables."""
    from ..superb.display import leaderboard_tables

    path = out / "superb" / "leaderboard.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    blocks: List[Block] = [
        ("h2", "5. Pipeline check: SUPERB tasks through s3prl's run_downstream"),
        ("p", "A check that every upstream runs through s3prl's real SUPERB recipes (smoke profile: a few dozen "
              "training steps on the mini-SUPERB corpus), not a measurement: the test sets are a few dozen clips, so "
              "the 95 % intervals below are tens of points wide and the scores say nothing about the models. "
              "Capacity kept = task accuracy / the original's (ASR: (1 - WER) / (1 - original WER)).")]
    for title, header, rows in leaderboard_tables(data, markup=False):
        blocks += [("p", title), ("table", header, rows)]
    for png in sorted((out / "superb").glob("*.png")):
        blocks.append(("img", png, "Pareto plot: average capacity kept (95 % paired interval) versus latency and "
                                   "parameters (pipeline check)"))
    return blocks


def _matrix_summary(similarity: Dict) -> List[List[str]]:
    rows = []
    for name, matrix in similarity["metrics"].items():
        n = len(matrix)
        off = [matrix[i][j] for i in range(n) for j in range(n) if i != j]
        adjacent = [matrix[i][i + 1] for i in range(n - 1)]
        blocks = similarity.get("blocks", {}).get(name, {}).get("blocks", [])
        rows.append([name, f"{sum(off) / len(off):.3f}", f"{min(off):.3f}", f"{sum(adjacent) / len(adjacent):.3f}",
                     " ".join(f"{a}-{b}" for a, b in blocks)])
    return rows


def build_blocks(out: Path, plan_log: Sequence[Dict], upstream: str) -> List[Block]:
    blocks: List[Block] = [("h1", f"Redundancy study of `{upstream}`")]
    blocks.append(("p", "Every number below was produced by the stages listed at the end, on synthetic espeak-ng speech. "
                        "Section 4 is the measurement (how much capacity compression keeps, with 95 % intervals, on "
                        "voices pretraining never heard); section 5 is a pipeline check of s3prl's SUPERB recipes "
                        "(a few training steps, a few dozen test clips), not a measurement."))
    sim_path = out / "similarity" / "similarity.json"
    if sim_path.is_file():
        sim = json.loads(sim_path.read_text())
        blocks += [("h2", "1. Layer similarity"),
                   ("p", f"{sim['num_utterances']} utterances, {sim['num_frames']} frames (every frame an example); "
                         "layer 0 is the transformer input, layer l the output of transformer layer l. Blocks: contiguous "
                         "layers whose pairwise similarity exceeds the matrix's mean off-diagonal similarity, found "
                         "exactly by dynamic programming."),
                   ("table", ["metric", "mean off-diagonal", "min", "mean adjacent", "blocks"], _matrix_summary(sim)),
                   ("img", out / "similarity" / "similarity_all.png", "All metrics side by side, blocks outlined")]
        bi = sim.get("block_influence") or []
        if bi:
            blocks.append(("p", "Block influence (1 - cos(input, output)) per transformer layer: "
                                + ", ".join(f"L{i + 1} {v:.3f}" for i, v in enumerate(bi))))
    pruned = sorted(out.glob("pruned_*/manifest.json"))
    if pruned:
        rows = []
        for path in pruned:
            m = json.loads(path.read_text())
            before, after = m.get("parameters_before", {}), m.get("parameters_after", {})
            rows.append([path.parent.name.replace("pruned_", "").replace("_", "-"), str(m.get("keep_layers")),
                         str(m.get("removed_layers")), f"{before.get('total', 0):,}", f"{after.get('total', 0):,}"])
        blocks += [("h2", "2. Layer pruning (no post-training)"),
                   ("table", ["strategy", "kept layers", "removed layers", "parameters before", "after"], rows)]
        for path in pruned:
            if (path.parent / "scores.png").is_file():
                blocks.append(("img", path.parent / "scores.png", f"Layer scores: {path.parent.name}"))
    distilled = out / "distilled" / "report.json"
    if distilled.is_file():
        r = json.loads(distilled.read_text())
        arch = r.get("architecture", {})
        blocks += [("h2", "3. Distillation into mimicking layers"),
                   ("p", f"The {len(r.get('targets', []))} transformer layers replaced by `{arch.get('arch')}` mimickers "
                         f"(hidden size {arch.get('hidden')}); the CNN front end is the teacher's, frozen.")]
        blocks.append(("table", ["cost", "teacher stack", "mimickers", "ratio", "whole upstream ratio"], _distill_cost_rows(r)))
        layers = r.get("mimicking_error", {}).get("layers", [])
        if layers:
            blocks.append(("table", ["hidden state", "CKA to the teacher's", "CKA of the stack's input (doing nothing)", "MSE"],
                           [[str(e["layer"]), f"{e['cka']:.3f}", f"{e['input_cka']:.3f}", f"{e['mse']:.3g}"] for e in layers]))
        for png in sorted((out / "distilled").glob("*.png")):
            blocks.append(("img", png, png.stem.replace("_", " ")))
        blocks += _whole_upstream_blocks(out, r)
    blocks += _probe_blocks(out) + _leaderboard_blocks(out)
    blocks += [("h2", "How this was made"),
               ("table", ["stage", "status", "wall seconds", "CPU seconds"],
                [[e["stage"], e["status"], f"{e['seconds']:,.1f}" if "seconds" in e else "",
                  f"{e['cpu_seconds']:,.1f}" if "cpu_seconds" in e else ""] for e in plan_log])]
    return blocks


def _whole_upstream_blocks(out: Path, teacher_front_end: Mapping[str, Any]) -> List[Block]:
    """The whole distilled upstream (front end included) against the teacher: today's student, whose front end
    is the teacher's, beside the student whose front end was distilled too."""
    from ..distill.report import WHOLE_UPSTREAM_HEADER, whole_upstream_rows

    light = out / "distilled_light" / "report.json"
    reports = {"distilled": teacher_front_end}
    if light.is_file():
        reports["distilled_light"] = json.loads(light.read_text())
    return [("p", "The whole upstream, front end included, as a fraction of the teacher (latency on this CPU):"),
            ("table", WHOLE_UPSTREAM_HEADER, whole_upstream_rows(reports))]


def _distill_cost_rows(r):
    """Parameters, MACs and latency of the replaced stack against the teacher's, from the distill report."""
    params, macs, lat = r.get("parameters", {}), r.get("macs_per_second_of_audio", {}), r.get("latency_seconds", {})
    rows = [["parameters", f"{params.get('teacher_stack', 0):,}", f"{params.get('student_replaced', 0):,}",
             f"{params.get('ratio_replaced_to_stack', float('nan')):.3f}", f"{params.get('ratio_upstream', float('nan')):.3f}"],
            ["MACs per second of audio", f"{macs.get('teacher_stack', 0):,.0f}", f"{macs.get('student_stack', 0):,.0f}",
             f"{macs.get('ratio_stack', float('nan')):.3f}", f"{macs.get('ratio_upstream', float('nan')):.3f}"]]
    if lat:
        rows.append([f"latency on {lat.get('audio_seconds')} s of audio ({lat.get('device')}, {lat.get('threads')} threads)",
                     f"{lat.get('teacher_stack', 0) * 1000:.1f} ms", f"{lat.get('student_stack', 0) * 1000:.1f} ms",
                     f"{lat.get('ratio_stack', float('nan')):.3f}", f"{lat.get('ratio_upstream', float('nan')):.3f}"])
    return rows


def render_markdown(blocks: Sequence[Block], base: Path) -> str:
    lines: List[str] = []
    for b in blocks:
        if b[0] in ("h1", "h2"):
            lines += [("# " if b[0] == "h1" else "## ") + b[1], ""]
        elif b[0] == "p":
            lines += [b[1], ""]
        elif b[0] == "table":
            header, rows = b[1], b[2]
            lines += ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows] + [""]
        elif b[0] == "img":
            lines += [f"![{b[2]}]({os.path.relpath(b[1], base)})", ""]
    return "\n".join(lines)


def render_html(blocks: Sequence[Block]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>s3prl-redundancy report</title><style>"
             "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
             "img{max-width:100%}figcaption{color:#555;font-size:90%}</style></head><body>"]
    for b in blocks:
        if b[0] in ("h1", "h2"):
            parts.append(f"<{b[0]}>{html.escape(b[1])}</{b[0]}>")
        elif b[0] == "p":
            parts.append(f"<p>{html.escape(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b[2])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif b[0] == "img":
            data = base64.b64encode(Path(b[1]).read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[2])}'>"
                         f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: Path, plan_log: Sequence[Dict], upstream: str) -> Dict[str, Path]:
    from ..io import atomic_write_text

    blocks = build_blocks(out, plan_log, upstream)
    md = atomic_write_text(out / "report.md", render_markdown(blocks, out))
    page = atomic_write_text(out / "report.html", render_html(blocks))
    return {"markdown": md, "html": page}
