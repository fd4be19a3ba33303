"""The SUPERB score and Score-P, computed the way the SUPERB website computes them.

Source: the website's code, repository ``superbbenchmark/website-react``, files
``frontend/src/overall_metrics.js`` (the formula) and ``frontend/src/Data.js`` (``reference_points``); the
per-upstream numbers the site starts from are in ``backend/utils.py`` (``get_leaderboard_default``).
Read at the repository's latest commit ``cacb90e`` (2024-04-27); ``reference_points`` last changed in
``70d0ef2`` (2022-10-05, "bugfix: update public ref points format").

What the site does, step by step (``overall_metric_adder``):

1. ``interpolation``: every metric becomes ``1000 * (value - baseline) / (topline - baseline)``. Error rates
   (WER, PER, EER, DER, CER) are kept as they are and their reference points are error rates too, so the
   baseline is the *larger* number and the formula still grows as the error falls. (Older versions of the
   site turned error rates into ``100 - value`` first and stored reference points as ``100 - error``; the
   result is identical.) The baseline is FBANK features; the topline is the best published upstream per metric
   in the SUPERB paper's set (e.g. KS: wav2vec 2.0 Large 96.66, ER/ASR: HuBERT Large).
2. ``task_aggregate``: metrics of one task (the part of the column name before the first ``_``) are averaged,
   then tasks are averaged with equal weight.
3. Score-P (``parameter_panelize``): each *metric's* interpolated score ``s`` becomes
   ``s / max(P + 1e-12, 1)`` when ``s > 0`` and stays ``s`` otherwise, with ``P = paramShared / 1e6`` (shared
   upstream parameters, in millions); then the same averaging. So an upstream under one million parameters is
   not rewarded beyond dividing by 1, and a score at or below the baseline is not divided at all.
4. Display: Score is ``Math.round``-ed, Score-P shown with two decimals. We return the unrounded numbers.

The site adds ``1e-12`` to the denominator ``topline - baseline``; we leave it out (it changes a score by
about 1e-11). The site's leaderboard views average over different task subsets ("Paper" has 10 tasks with
KS; "Public Set" has no KS), so a score over our four tasks is comparable only with a score over the same four
tasks: :class:`SuperbScore` always says which tasks it covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from s3prl_redundancy.errors import UserInputError

SOURCE = ("superbbenchmark/website-react: frontend/src/overall_metrics.js (formula), "
          "frontend/src/Data.js reference_points (public set)")


@dataclass(frozen=True)
class ReferencePoint:
    """One metric's reference points on the SUPERB site: ``baseline`` (FBANK) and ``topline``, in percent."""

    task: str
    metric: str
    baseline: float
    topline: float
    site_key: str

    def normalize(self, value):
        """``1000 * (value - baseline) / (topline - baseline)``; ``value`` a number or a numpy array (resamples)."""
        return 1000.0 * (value - self.baseline) / (self.topline - self.baseline)

    @property
    def higher_better(self) -> bool:
        """Accuracy-like metrics grow, error rates fall; the formula needs no flag, people reading a table do."""
        return self.topline > self.baseline


# frontend/src/Data.js, ``reference_points`` (public set), values copied as written there.
REFERENCE_POINTS: Dict[str, ReferencePoint] = {
    "KS": ReferencePoint("KS", "acc", 41.3826674, 96.66, "KS_acc_public"),
    "SID": ReferencePoint("SID", "acc", 20.058174, 90.3, "SID_acc_public"),
    "ER": ReferencePoint("ER", "acc", 48.23672168, 67.62, "ER_acc_public"),
    "ASR": ReferencePoint("ASR", "wer", 23.18, 3.62, "ASR_wer_public"),
}

TASK_ORDER: Tuple[str, ...] = ("KS", "SID", "ER", "ASR")


def reference_point(task: str) -> ReferencePoint:
    """The reference points of ``task`` (any case: ``"asr"`` or ``"ASR"``)."""
    key = str(task).upper()
    if key not in REFERENCE_POINTS:
        raise UserInputError(f"no SUPERB reference points for task {task!r}; known tasks: "
                             f"{', '.join(TASK_ORDER)}", argument="task")
    return REFERENCE_POINTS[key]


def _check_value(value: float, argument: str, what: str) -> float:
    """A metric value in percent; reject non-numbers early so one bad entry does not turn the score into NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"{what} must be a number in percent, got {value!r}", argument=argument) from None
    if not math.isfinite(number):
        raise UserInputError(f"{what} must be a finite number in percent, got {value!r}", argument=argument)
    return number


def normalized_task_score(task: str, value: float) -> float:
    """``1000 * (value - baseline) / (topline - baseline)``: 0 at FBANK, 1000 at the topline.

    ``value`` is the task's metric in percent as SUPERB reports it (accuracy for KS/SID/ER, WER for ASR), not a
    fraction. Values beyond the topline give more than 1000 and values below FBANK give negative scores, as on
    the site.
    """
    ref = reference_point(task)
    return ref.normalize(_check_value(value, "value", f"the {ref.task} {ref.metric}"))


def parameter_penalized(score: float, params_millions: float) -> float:
    """Score-P of one metric score: divided by the parameters in millions (at least 1) when above the baseline.

    As the site's ``parameter_panelize(score, 0, P)``: a score at or below 0 is returned as is, since dividing
    a negative score by a large model would make it look better.
    """
    if score <= 0:
        return score
    return score / max(params_millions + 1e-12, 1.0)


@dataclass(frozen=True)
class SuperbScore:
    """A SUPERB score over the tasks given, with the per-task normalised scores and optional Score-P."""

    score: float
    tasks: Tuple[str, ...]
    task_scores: Dict[str, float] = field(default_factory=dict)
    score_p: Optional[float] = None
    params_millions: Optional[float] = None

    @property
    def label(self) -> str:
        """What the number is: ``"SUPERB score over KS, SID, ER, ASR"``, so partial scores are never mistaken."""
        return f"SUPERB score over {', '.join(self.tasks)}"

    @property
    def complete(self) -> bool:
        """True when all four tasks this project runs are in the score."""
        return set(self.tasks) == set(TASK_ORDER)

    def to_dict(self) -> dict:
        """A JSON-ready record (the label included, so a reader of the file knows the task subset)."""
        return {"label": self.label, "score": self.score, "tasks": list(self.tasks),
                "task_scores": dict(self.task_scores), "score_p": self.score_p,
                "params_millions": self.params_millions, "source": SOURCE}


def _ordered_tasks(results: Mapping[str, float]) -> Tuple[str, ...]:
    """Canonical task names in the site's order; one validation for the whole mapping before any arithmetic."""
    if not results:
        raise UserInputError("give at least one task result, e.g. {'KS': 96.3}", argument="results")
    names = [str(t).upper() for t in results]
    unknown = [t for t in results if str(t).upper() not in REFERENCE_POINTS]
    if unknown:
        raise UserInputError(f"no SUPERB reference points for {', '.join(map(repr, unknown))}; known tasks: "
                             f"{', '.join(TASK_ORDER)}", argument="results")
    if len(set(names)) != len(names):
        raise UserInputError("a task is given twice (names are case-insensitive)", argument="results")
    return tuple(t for t in TASK_ORDER if t in names)


def superb_score(results: Mapping[str, float], params_millions: Optional[float] = None) -> SuperbScore:
    """The SUPERB score of ``results`` (``{task: metric in percent}``) over exactly the tasks given.

    Each task has one metric on the site (KS/SID/ER accuracy, ASR WER), so the task score is the normalised
    metric and the overall score is their plain mean. ``params_millions``: shared upstream parameters in
    millions; when given, Score-P is the mean of the penalised task scores.
    """
    tasks = _ordered_tasks(results)
    values = {str(t).upper(): v for t, v in results.items()}
    task_scores = {}
    for task in tasks:
        _check_value(values[task], "results", f"results[{task!r}]")
        task_scores[task] = normalized_task_score(task, values[task])
    score = sum(task_scores.values()) / len(tasks)
    score_p = None
    if params_millions is not None:
        params = _check_value(params_millions, "params_millions", "the parameter count in millions")
        if params < 0:
            raise UserInputError(f"must be >= 0, got {params_millions!r}", argument="params_millions")
        score_p = sum(parameter_penalized(s, params) for s in task_scores.values()) / len(tasks)
        params_millions = params
    return SuperbScore(score, tasks, task_scores, score_p, params_millions)
