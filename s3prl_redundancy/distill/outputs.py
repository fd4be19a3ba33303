"""The distillation output folder: the names a run writes there (the folder itself follows
:class:`s3prl_redundancy.io.OutputDir`, command ``distill``), the ``train_log.csv`` (kept consistent with the
checkpoint on resume) and the loss-curve PNG."""

from __future__ import annotations

import csv
from io import StringIO
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

from ..io import atomic_write_text, save_figure

STUDENT = "student.pt"
STATE = "checkpoint.pt"
LOG = "train_log.csv"
MANIFEST = "manifest.json"
CURVE = "loss_curve.png"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CACHE_DIR = "teacher_cache"
RUN_FILES = (STUDENT, STATE, LOG, MANIFEST, CURVE, REPORT_JSON, REPORT_MD, CACHE_DIR)


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
        buffer = StringIO()
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


def plot_loss_curve(log_path, png_path, title: str = "distillation loss") -> Path:
    """The loss (and per-target losses) against the step, log scale, written with matplotlib's Agg backend."""
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
    return save_figure(fig, png_path, dpi=110)
