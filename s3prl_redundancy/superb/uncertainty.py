"""Intervals and the SUPERB score of leaderboard rows, from the per-item files in each run's ``expdir``.

The leaderboard (:mod:`.leaderboard`) gives every number it shows a 95 % interval; this module computes them
from what s3prl's experts already wrote during the test (``test_predict.txt`` / ``test_truth.txt``, ER per fold,
ASR ``test-clean-noLM-hyp.ark`` / ``-ref.ark``; :meth:`.tasks.Task.prediction_files`). Nothing is evaluated
again. The maths is in :mod:`.intervals`; the SUPERB formula in :mod:`.score`.

* task score: Wilson interval of the accuracy (KS, SID, one ER fold); ER over several folds and ASR: percentile
  bootstrap (ER: the mean of the fold accuracies, :func:`.intervals.pooled_folds`);
* capacity kept: paired bootstrap against the reference on the same test items (:func:`.intervals.paired_samples`),
  with the verdict "indistinguishable" when the interval of the score difference contains 0;
* average capacity kept and the SUPERB score: the mean over tasks of each task's resamples (tasks resampled
  independently, each with its own seed).

Every bootstrap is seeded (``seed`` + the task's table position), so a rebuilt leaderboard is byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ..errors import UserInputError
from . import intervals as iv
from .runs import EXPDIR_NAME
from .score import REFERENCE_POINTS, superb_score
from .tasks import TASKS

LEVEL = 0.95
RESAMPLES = 2_000
"""Resamples per bootstrap: the percentile bounds move by well under 0.5 points between seeds at this size, and a
leaderboard of a few upstreams x four tasks builds in seconds."""
SEED = 0


def run_items(task: str, record: Mapping[str, Any]) -> Optional[iv.ItemScores]:
    """The per-item scores of one finished run (``record`` from ``run.json`` with its ``_run_dir``); None when
    the expert's files are not there (a run folder copied without its ``expdir``, or an old record)."""
    spec = TASKS[task]
    expdir = Path(record.get("_run_dir", "")) / EXPDIR_NAME
    first, second = (expdir / name for name in spec.prediction_files(spec.evaluate_split, record.get("fold")))
    if not (first.is_file() and second.is_file()):
        return None
    try:
        return iv.wer_items(first, second) if spec.metric == "wer" else iv.accuracy_items(first, second)
    except UserInputError:  # files that do not pair up: the score stands, its interval is unknown
        return None


def task_items(task: str, records: Sequence[Mapping[str, Any]]) -> Optional[iv.ItemScores]:
    """The items behind a task's leaderboard score: one run's items, or the folds pooled so the corpus score is
    the mean of the fold scores; None when any run's files are missing."""
    found = {}
    for record in records:
        items = run_items(task, record)
        if items is None:
            return None
        found[record.get("fold") or ""] = items
    if not found:
        return None
    return next(iter(found.values())) if len(found) == 1 else iv.pooled_folds(found)


def _seed(task: str, seed: int) -> int:
    return int(seed) + TASKS[task].order


def score_interval(task: str, items: iv.ItemScores, seed: int = SEED, resamples: int = RESAMPLES) -> iv.Interval:
    """The task score in percent with its 95 % interval (Wilson for one set of accuracy items, else bootstrap)."""
    if items.metric == "acc" and np.all(items.denom == 1.0):  # one set of unweighted items (not pooled folds)
        frac = iv.wilson_interval(int(items.numer.sum()), len(items), LEVEL)
        return iv.Interval(100 * frac.point, 100 * frac.low, 100 * frac.high, LEVEL, "wilson")
    return iv.bootstrap_interval(items, resamples, _seed(task, seed), LEVEL)


@dataclass
class RowUncertainty:
    """One row's intervals: per task score and capacity, the averaged capacity and the SUPERB score."""

    scores: Dict[str, iv.Interval] = field(default_factory=dict)
    capacity: Dict[str, iv.CapacityInterval] = field(default_factory=dict)
    capacity_avg: Optional[iv.Interval] = None
    superb: Optional[Dict[str, Any]] = None
    folds: Optional[iv.FoldSummary] = None
    n_items: Dict[str, int] = field(default_factory=dict)

    def verdict(self) -> str:
        """``indistinguishable`` when no task's paired difference excludes 0; else which tasks differ."""
        if not self.capacity:
            return ""
        apart = [f"{t.upper()} {'better' if c.difference.point > 0 else 'worse'}"
                 for t, c in self.capacity.items() if c.verdict != "indistinguishable"]
        return "distinguishable: " + ", ".join(apart) if apart else "indistinguishable"

    def to_dict(self) -> Dict[str, Any]:
        return {"scores": {t: v.to_dict() for t, v in self.scores.items()},
                "capacity": {t: v.to_dict() for t, v in self.capacity.items()},
                "capacity_avg": self.capacity_avg.to_dict() if self.capacity_avg else None,
                "superb_score": self.superb, "er_folds": self.folds.to_dict() if self.folds else None,
                "test_items": dict(self.n_items), "verdict": self.verdict()}


def _er_folds(records: Sequence[Mapping[str, Any]]) -> Optional[iv.FoldSummary]:
    """ER's per-fold Wilson intervals and the spread of the fold accuracies (None for one fold or no files)."""
    if len(records) < 2:
        return None
    folds = {}
    for record in records:
        items = run_items("er", record)
        if items is None:
            return None
        frac = iv.wilson_interval(int(items.numer.sum()), len(items), LEVEL)
        folds[record["fold"]] = iv.Interval(100 * frac.point, 100 * frac.low, 100 * frac.high, LEVEL, "wilson")
    return iv.FoldSummary(folds, *iv.fold_spread([v.point for v in folds.values()]))


def superb_with_interval(values: Mapping[str, float], items: Mapping[str, iv.ItemScores],
                         params_millions: Optional[float], seed: int = SEED,
                         resamples: int = RESAMPLES) -> Optional[Dict[str, Any]]:
    """The SUPERB score over the tasks in ``values`` (``{task: percent}``), its label, per-task normalised
    scores, Score-P and, when every task has items, the 95 % bootstrap interval of the score."""
    if not values:
        return None
    result = superb_score({t.upper(): v for t, v in values.items()}, params_millions)
    record = result.to_dict()
    record["interval"] = None
    if all(t in items for t in values):
        per_task = [REFERENCE_POINTS[t.upper()].normalize(iv.bootstrap_samples(items[t], resamples, _seed(t, seed)))
                    for t in values]
        samples = np.mean(per_task, axis=0)
        record["interval"] = iv.percentile_interval(result.score, samples, LEVEL,
                                                    f"bootstrap({resamples}, seed={seed}+task)").to_dict()
        if params_millions is not None:
            # parameter_penalized, element-wise: only scores above the baseline are divided
            penalised = np.mean([np.where(s > 0, s / max(params_millions + 1e-12, 1.0), s) for s in per_task], axis=0)
            record["score_p_interval"] = iv.percentile_interval(
                result.score_p, penalised, LEVEL, f"bootstrap({resamples}, seed={seed}+task)").to_dict()
    return record


def row_uncertainty(records: Mapping[str, Sequence[Mapping[str, Any]]], values: Mapping[str, float],
                    reference_items: Mapping[str, iv.ItemScores], params_millions: Optional[float],
                    is_reference: bool, seed: int = SEED, resamples: int = RESAMPLES) -> RowUncertainty:
    """The intervals of one row. ``records``: ``{task: finished run records}``; ``values``: ``{task: score in
    percent}`` of the finished tasks; ``reference_items``: the reference row's items per task."""
    out = RowUncertainty()
    items = {}
    for task, recs in records.items():
        found = task_items(task, recs)
        if found is None:
            continue
        items[task] = found
        out.scores[task] = score_interval(task, found, seed, resamples)
        out.n_items[task] = len(found)
        ref = reference_items.get(task)
        if ref is not None and not is_reference and set(ref.names) == set(found.names):
            out.capacity[task] = iv.paired_capacity(ref, found, resamples, _seed(task, seed), LEVEL)
    out.folds = _er_folds(records.get("er", []))
    if all(t in items for t in values):  # else the leaderboard's average covers a task without an interval
        out.capacity_avg = _capacity_avg(items, reference_items, out.capacity, seed, resamples)
    out.superb = superb_with_interval(values, items, params_millions, seed, resamples)
    return out


def _capacity_avg(items: Mapping[str, iv.ItemScores], reference_items: Mapping[str, iv.ItemScores],
                  capacity: Mapping[str, iv.CapacityInterval], seed: int, resamples: int) -> Optional[iv.Interval]:
    """Mean over the tasks where capacity kept is defined (as the leaderboard's ``capacity_avg``) of the paired
    capacity resamples (the same resamples as each task's interval); None when it is defined on no task."""
    defined = [t for t in items if t in capacity and capacity[t].point == capacity[t].point]
    if not defined:
        return None
    ratios = [iv.paired_samples(reference_items[t], items[t], resamples, _seed(t, seed))[0] for t in defined]
    point = float(np.mean([capacity[t].point for t in defined]))
    return iv.percentile_interval(point, np.mean(ratios, axis=0), LEVEL,
                                  f"paired bootstrap({resamples}, seed={seed}+task), mean over tasks")


__all__ = ["LEVEL", "RESAMPLES", "SEED", "run_items", "task_items", "score_interval", "RowUncertainty",
           "superb_with_interval", "row_uncertainty"]
