"""The distillation output folder: what a run writes there, refusing to overwrite another run, the
``train_log.csv`` (kept consistent with the checkpoint on resume), ``manifest.json`` and the loss-curve PNG."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence

from ..io import atomic_write_text
from ..errors import UserInputError

STUDENT = "student.pt"
STATE = "checkpoint.pt"
LOG = "train_log.csv"
MANIFEST = "manifest.json"
CURVE = "loss_curve.png"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CACHE_DIR = "teacher_cache"
RUN_FILES = (STUDENT, STATE, LOG, MANIFEST, CURVE, REPORT_JSON, REPORT_MD, CACHE_DIR)


def existing_run_files(out: Path) -> List[str]:
    return [name for name in RUN_FILES if (out / name).exists()]


def check_output_dir(out, resume: bool, force: bool) -> List[str]:
    """Validate ``--out`` against ``--resume`` / ``--force``; returns the run files that exist (read-only)."""
    out = Path(out)
    if resume and force:
        raise UserInputError("--resume and --force contradict each other: --resume continues the run in --out, "
                             "--force deletes it and starts over; pass one")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file, not a folder; give a folder path")
    existing = existing_run_files(out) if out.is_dir() else []
    if resume:
        if STATE not in existing:
            raise UserInputError(f"--resume: --out {out} holds no {STATE} to resume from; run without --resume to "
                                 "start a new distillation")
    elif existing and not force:
        raise UserInputError(f"--out {out} already holds a distillation run ({', '.join(existing)}); pass --resume "
                             "to continue it, --force to delete it and start over, or choose another folder")
    return existing


def clear_run_files(out: Path) -> None:
    """Delete this tool's files from ``out`` (``--force``); other files in the folder are left alone."""
    for name in RUN_FILES:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def log_columns(targets: Sequence[int]) -> List[str]:
    return ["step", "loss", *[f"loss_layer{t}" for t in targets], "seconds"]


class TrainLog:
    """``train_log.csv``: one row per optimizer step, appended and flushed as training goes."""

    def __init__(self, path: Path, targets: Sequence[int]):
        self.path = Path(path)
        self.columns = log_columns(targets)

    def start(self, resume_step: int) -> None:
        """New log, or (on resume) keep only rows up to the checkpoint's step (later rows were never saved)."""
        rows = [r for r in self.read() if int(r["step"]) <= resume_step] if resume_step and self.path.exists() else []
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())

    def append(self, step: int, loss: float, per_target: Iterable[float], seconds: float) -> None:
        values = [step, repr(float(loss)), *[repr(float(x)) for x in per_target], f"{seconds:.3f}"]
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow(values)
            handle.flush()

    def read(self) -> List[Dict[str, str]]:
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))


def read_losses(path) -> List[float]:
    with open(path, newline="") as handle:
        return [float(r["loss"]) for r in csv.DictReader(handle)]


def write_manifest(out: Path, manifest: Mapping[str, Any]) -> Path:
    return atomic_write_text(Path(out) / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def plot_loss_curve(log_path, png_path, title: str = "distillation loss") -> Path:
    """The loss (and per-target losses) against the step, log scale, written with matplotlib's Agg backend."""
    import os

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with open(log_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    fig, ax = plt.subplots(figsize=(7, 4))
    if rows:
        steps = [int(r["step"]) for r in rows]
        for column in [c for c in rows[0] if c.startswith("loss_layer")]:
            ax.plot(steps, [float(r[column]) for r in rows], lw=0.8, alpha=0.5, label=column[len("loss_"):])
        ax.plot(steps, [float(r["loss"]) for r in rows], color="black", lw=1.6, label="total")
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (sum of per-layer MSEs)")
    ax.set_title(title)
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
