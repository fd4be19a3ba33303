"""What distillation bought and cost: ``report.json`` and ``report.md``.

- parameters of the replaced part (the mimicker) versus the teacher's transformer stack, and of the whole
  upstream (front end + stack / mimicker; the teacher's pre-training heads are not counted);
- MACs per second of audio (:func:`s3prl_redundancy.compression.cost.macs`: ``FlopCounterMode``, MACs =
  FLOPs / 2, fused CPU attention included; it counts matrix products, convolutions and attention, not norms
  or activations);
- latency of the stack alone and of the whole upstream, teacher and student timed side by side in one run
  (:func:`s3prl_redundancy.compression.cost.time_side_by_side`: interleaved, median of repeats);
- per target layer, on held-out audio: MSE and linear CKA between the student's prediction and the teacher's
  hidden state, over frames, in float64; the same for the transformer input (what "copy the input" would
  score) as a baseline.

Written by ``s3prl-redundancy distill`` at the end; on its own::

    python -m s3prl_redundancy.distill.report --student OUT/student.pt [--ckpt TEACHER.pt] [--data DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

# parameters, MACs and latency are counted where every other cost is (``macs`` and ``time_side_by_side`` stay
# importable from here)
from ..compression.cost import count_module_parameters, macs, time_side_by_side  # noqa: F401

SECONDS = 4.0  # audio length for MACs and latency


class LayerError:
    """Streaming MSE and linear CKA between frames ``X`` (prediction) and ``Y`` (teacher), float64.

    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), with ``Xc`` the column-centred frames, from
    running sums (:func:`~s3prl_redundancy.similarity.functional.linear_cka_from_moments`). The sums are of
    frames minus the first batch's mean: raw products of features with a large common offset would cancel
    in ``X^T X - s_x s_x^T / N``; shifted ones do not, and CKA does not change."""

    def __init__(self):
        self.n = 0
        self.sq = 0.0
        self.sx = self.sy = self.sxx = self.syy = self.syx = None
        self.shift_x = self.shift_y = None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to("cpu", torch.float64)
        y = y.detach().reshape(-1, y.shape[-1]).to("cpu", torch.float64)
        if self.sx is None:
            self.sx, self.sy = x.new_zeros(x.shape[1]), y.new_zeros(y.shape[1])
            self.sxx, self.syy, self.syx = x.new_zeros(x.shape[1], x.shape[1]), y.new_zeros(y.shape[1], y.shape[1]), \
                y.new_zeros(y.shape[1], x.shape[1])
        self.n += x.shape[0]
        if x.shape == y.shape:
            self.sq += float((x - y).pow(2).sum())
        if self.shift_x is None:
            self.shift_x, self.shift_y = x.mean(0), y.mean(0)
        x, y = x - self.shift_x, y - self.shift_y
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.sxx += x.T @ x
        self.syy += y.T @ y
        self.syx += y.T @ x

    def mse(self) -> float:
        """Mean squared difference per value (only when prediction and target have the same width)."""
        if self.sx.numel() != self.sy.numel():
            raise ValueError("MSE needs predictions and targets of the same width")
        return self.sq / (self.n * self.sx.numel())

    def cka(self) -> float:
        from ..similarity.functional import linear_cka_from_moments

        return float(linear_cka_from_moments(self.n, self.sx, self.sy, self.sxx, self.syy, self.syx))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two ``(frames, dims)`` matrices in one go (float64)."""
    acc = LayerError()
    acc.update(x, y)
    return acc.cka()


def layer_errors(student, expert, wavs: Sequence[torch.Tensor], device) -> Dict[str, Any]:
    """Per layer: MSE / CKA of the student's hidden state and of the teacher's transformer input (the "copy
    the input" baseline) against the teacher's. Layer 0 (the front end's output) is listed when the student's
    front end is its own (light); with the teacher's it is equal by construction (``input_max_abs_diff``)."""
    layers = ([0] if student.front_end.trainable else []) + list(student.targets)
    index = {t: k for k, t in enumerate([0, *student.targets])}  # position in the student's hidden_states
    pred = {t: LayerError() for t in layers}
    base = {t: LayerError() for t in layers}
    input_diff = 0.0
    with torch.inference_mode():
        for wav in wavs:  # one utterance at a time: no padding
            teacher = expert([wav.to(device)])["hidden_states"]
            ours, _ = student([wav.to(device)])
            input_diff = max(input_diff, float((ours[0] - teacher[0]).abs().max()))
            for t in layers:
                pred[t].update(ours[index[t]][0], teacher[t][0])
                base[t].update(teacher[0][0], teacher[t][0])
    return {
        "frames": pred[layers[0]].n if layers else 0,
        "input_max_abs_diff": input_diff,
        "layers": [{"layer": t, "mse": pred[t].mse(), "cka": pred[t].cka(),
                    "input_mse": base[t].mse(), "input_cka": base[t].cka()} for t in layers],
    }


def build_report(student, expert, family: str, wavs: Sequence[torch.Tensor], device=None, repeats: int = 5,
                 seconds: float = SECONDS, audio_note: str = "held-out utterances") -> Dict[str, Any]:
    from .front_end import teacher_front_end_parameters
    from .teacher import TeacherStack

    device = torch.device(device or "cpu")
    student.eval()
    expert.eval()
    stack = TeacherStack(expert.model, family).eval()
    wav = torch.randn(int(seconds * 16000), generator=torch.Generator().manual_seed(0)).mul(0.1).to(device)
    with torch.inference_mode():
        x0, mask = student.front_end([wav])
    front, teacher_front = count_module_parameters(student.front_end), teacher_front_end_parameters(expert.model)
    params = {
        "teacher_stack": count_module_parameters(stack),
        "student_replaced": count_module_parameters(student.mimicker),
        "front_end": front,
        "teacher_front_end": teacher_front,
    }
    params.update(teacher_upstream=teacher_front + params["teacher_stack"],
                  student_upstream=front + params["student_replaced"],
                  teacher_checkpoint_total=count_module_parameters(expert.model))
    params["ratio_replaced_to_stack"] = params["student_replaced"] / params["teacher_stack"]
    params["ratio_upstream"] = params["student_upstream"] / params["teacher_upstream"]

    fns = {
        "teacher_stack": lambda: stack(x0),
        "student_stack": lambda: student.mimicker(x0, mask),
        "teacher_upstream": lambda: expert([wav]),
        "student_upstream": lambda: student([wav]),
    }
    mac = {k: macs(f) / seconds for k, f in fns.items()}
    latency = time_side_by_side(fns, repeats=repeats, device=device)
    return {
        "family": family,
        "architecture": student.config.to_dict(),
        "front_end": student.front_end.config(),
        "targets": student.targets,
        "parameters": params,
        "macs_per_second_of_audio": {**mac, "ratio_stack": mac["student_stack"] / mac["teacher_stack"],
                                     "ratio_upstream": mac["student_upstream"] / mac["teacher_upstream"]},
        "latency_seconds": {**latency, "ratio_stack": latency["student_stack"] / latency["teacher_stack"],
                            "ratio_upstream": latency["student_upstream"] / latency["teacher_upstream"],
                            "audio_seconds": seconds, "repeats": repeats, "device": str(device),
                            "threads": torch.get_num_threads()},
        "mimicking_error": {"audio": audio_note, "utterances": len(wavs), **layer_errors(student, expert, wavs, device)},
    }


def render_markdown(report: Mapping[str, Any]) -> str:
    p, m, t, e = (report["parameters"], report["macs_per_second_of_audio"], report["latency_seconds"],
                  report["mimicking_error"])
    arch = report["architecture"]
    front = report.get("front_end", {"kind": "teacher"})
    front_text = ("the teacher's frozen front end" if front["kind"] == "teacher"
                  else f"a light front end ({front['channels']} channels)")
    lines = [
        f"# Distilled {report['family']} student: {front_text}, {arch['arch']} mimicker (hidden {arch['hidden']}), "
        f"{len(report['targets'])} target layers",
        "",
        "| | teacher | student | student / teacher |",
        "|---|---:|---:|---:|",
        f"| parameters, transformer stack vs mimicker | {p['teacher_stack']:,} | {p['student_replaced']:,} | "
        f"{p['ratio_replaced_to_stack']:.2%} |",
        f"| parameters, whole upstream (front end {p.get('teacher_front_end', p['front_end']):,} vs "
        f"{p['front_end']:,}) | {p['teacher_upstream']:,} | "
        f"{p['student_upstream']:,} | {p['ratio_upstream']:.2%} |",
        f"| MACs per second of audio, stack | {m['teacher_stack']:.4g} | {m['student_stack']:.4g} | {m['ratio_stack']:.2%} |",
        f"| MACs per second of audio, whole upstream | {m['teacher_upstream']:.4g} | {m['student_upstream']:.4g} | "
        f"{m['ratio_upstream']:.2%} |",
        f"| latency ({t['audio_seconds']:g} s audio), stack | {t['teacher_stack'] * 1e3:.2f} ms | "
        f"{t['student_stack'] * 1e3:.2f} ms | {t['ratio_stack']:.2%} |",
        f"| latency ({t['audio_seconds']:g} s audio), whole upstream | {t['teacher_upstream'] * 1e3:.2f} ms | "
        f"{t['student_upstream'] * 1e3:.2f} ms | {t['ratio_upstream']:.2%} |",
        "",
        f"Latency: median of {t['repeats']} interleaved repeats on {t['device']} ({t['threads']} threads). "
        "MACs = FLOPs / 2 from torch's FlopCounterMode (matrix products, convolutions, attention).",
        "",
        f"## Mimicking error on {e['utterances']} {e['audio']} ({e['frames']} frames)",
        "",
        f"Transformer input: largest |student - teacher| = {e['input_max_abs_diff']:.3g}.",
        "",
        "| layer | MSE | linear CKA | MSE of the input (baseline) | CKA of the input |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in e["layers"]:
        lines.append(f"| {row['layer']} | {row['mse']:.4g} | {row['cka']:.4f} | {row['input_mse']:.4g} | {row['input_cka']:.4f} |")
    return "\n".join(lines) + "\n"


WHOLE_UPSTREAM_HEADER = ["student", "front end", "parameters / teacher", "MACs / teacher", "latency / teacher",
                         "CKA of the last hidden state (doing nothing)"]


def whole_upstream_rows(reports: Mapping[str, Mapping[str, Any]]) -> List[List[str]]:
    """One table row per student (``{label: report.json dict}``) under :data:`WHOLE_UPSTREAM_HEADER`: the whole
    upstream's cost as a fraction of the teacher's and the last layer's CKA, e.g. a teacher-front-end and a
    light-front-end student side by side (for the demo's report)."""
    rows = []
    for label, r in reports.items():
        front = r.get("front_end", {"kind": "teacher"})
        kind = "teacher's (frozen)" if front["kind"] == "teacher" else f"light ({front.get('channels')} channels)"
        last = (r.get("mimicking_error", {}).get("layers") or [{}])[-1]
        rows.append([label, kind, f"{r['parameters']['ratio_upstream']:.3f}",
                     f"{r['macs_per_second_of_audio']['ratio_upstream']:.3f}",
                     f"{r['latency_seconds']['ratio_upstream']:.3f}",
                     f"{last.get('cka', float('nan')):.3f} ({last.get('input_cka', float('nan')):.3f})"])
    return rows


def write_report(report: Mapping[str, Any], out_dir) -> Path:
    from ..io import atomic_write_text
    from .outputs import REPORT_JSON, REPORT_MD

    out = Path(out_dir)
    atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    return atomic_write_text(out / REPORT_MD, render_markdown(report))


def report_for_checkpoint(student_path, teacher: Optional[str] = None, ckpt: Optional[str] = None,
                          data: Optional[str] = None, out_dir=None, device: str = "cpu", repeats: int = 5,
                          max_utterances: Optional[int] = 100, max_seconds: Optional[float] = None) -> Dict[str, Any]:
    """The report of a saved student against its teacher (the one recorded in ``student.pt`` unless given)."""
    from ..audio import AudioDataset
    from ..errors import UserInputError
    from ..families import FAMILIES
    from .student import load_student
    from .teacher import build_teacher_expert, resolve_teacher

    student, saved = load_student(student_path)
    family = saved["teacher"]["family"]
    source = ckpt or saved["teacher"].get("source")
    if source and not str(source).startswith(("http://", "https://")):
        teacher_src = resolve_teacher(teacher or FAMILIES[family].local_entry, source)
    else:  # s3prl's default weights of the family
        teacher_src = resolve_teacher(teacher or family, None)
    if teacher_src.family.name != family:
        raise UserInputError(f"{student_path} was distilled from a {family} teacher, not {teacher_src.family.name}")
    if data:
        dataset = AudioDataset.from_data(data, max_utterances, max_seconds)
        note = f"utterances of {data}"
    else:
        manifest = Path(student_path).with_name("manifest.json")
        files = json.loads(manifest.read_text())["data"]["heldout_files"] if manifest.is_file() else []
        if not files:
            raise UserInputError(f"no held-out list beside {student_path} (manifest.json); give `data`", argument="data")
        dataset, note = AudioDataset([Path(f) for f in files], None, max_seconds), "held-out utterances"
    dataset = dataset.without_short_clips(teacher_src.family.min_samples(teacher_src.checkpoint))
    dev = torch.device(device)
    expert = build_teacher_expert(teacher_src).to(dev)
    wavs = [dataset[i][1] for i in range(len(dataset))]
    report = build_report(student.to(dev), expert, family, wavs, dev, repeats=repeats, audio_note=note)
    write_report(report, out_dir or Path(student_path).parent)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    from ..errors import UserInputError

    parser = argparse.ArgumentParser(prog="python -m s3prl_redundancy.distill.report", description=__doc__.splitlines()[0])
    parser.add_argument("--student", required=True, help="student.pt written by s3prl-redundancy distill")
    parser.add_argument("--teacher", help="teacher entry name (default: the one recorded in student.pt)")
    parser.add_argument("--ckpt", help="teacher checkpoint (default: the path recorded in student.pt)")
    parser.add_argument("--data", help="audio folder or list (default: the held-out files in manifest.json)")
    parser.add_argument("--out", help="folder for report.json / report.md (default: beside student.pt)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        report = report_for_checkpoint(args.student, args.teacher, args.ckpt, args.data, args.out, args.device, args.repeats)
    except UserInputError as e:
        print(f"report: error: {e.render()}", file=sys.stderr)
        return 2
    print(render_markdown(report))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
