"""Uncertainty of SUPERB task results, from the per-item files s3prl's experts write.

Why: on the small test sets this project runs, two upstreams a point apart may be the same model for all the
test set can tell. Every number here comes with a 95 % interval, and a compressed upstream is compared with
its reference on the *same* test items (a paired bootstrap), which is far tighter than two separate intervals.

Files read (s3prl 0.4.18):

* KS / SID / ER: ``{split}_predict.txt`` and ``{split}_truth.txt`` (ER: ``{split}_{fold}_predict.txt``), one
  ``<filename> <label>`` line per test item (``downstream/speech_commands``, ``voxceleb1``, ``emotion``
  ``expert.py``, ``log_records``). Predictions and truths are matched by filename.
* ASR: ``{split}-{noLM|LM}-hyp.ark`` and ``{split}-{noLM|LM}-ref.ark``, one ``<utt-id> <words>`` line per
  utterance (``downstream/asr/expert.py``). WER is corpus-level, as s3prl computes it: the sum of word edit
  distances (``editdistance``) over the sum of reference lengths.

Scores are in percent, as SUPERB reports them. Bootstrap intervals are percentile intervals over ``resamples``
resamples of the test items drawn with ``numpy.random.default_rng(seed)``, so a rebuild gives the same bounds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from s3prl_redundancy.errors import UserInputError

DEFAULT_RESAMPLES = 10_000
# Index matrices are drawn in chunks of at most this many entries (32 MB of int64), so 10,000 resamples of
# tens of thousands of items stay within memory. Chunking is part of the seeded draw (see _resample_indices).
_CHUNK_ENTRIES = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval, in the metric's units; ``method`` says how the bounds were found."""

    point: float
    low: float
    high: float
    level: float
    method: str

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict:
        return asdict(self)


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise UserInputError(f"must be between 0 and 1 (e.g. 0.95), got {level!r}", argument="level")
    return float(level)


def _check_counts(k: int, n: int) -> None:
    if n <= 0 or k < 0 or k > n:
        raise UserInputError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}", argument="n")


# --------------------------------------------------------------------------------------------------
# binomial intervals (accuracy from k correct out of n)
# --------------------------------------------------------------------------------------------------


def wilson_interval(k: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval of the proportion ``k / n`` (as a fraction).

    Why Wilson: unlike the normal ("Wald") interval it stays inside [0, 1] and keeps its coverage near 0 and 1,
    where small test sets with a near-perfect or near-chance model live.
    """
    from scipy.stats import norm

    _check_counts(k, n)
    z = float(norm.ppf(0.5 + _check_level(level) / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the bound is exactly 0 at k = 0 (1 at k = n); the subtraction leaves a rounding residue like 3e-15
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, low, high, level, "wilson")


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> Interval:
    """Exact (Clopper-Pearson) interval of ``k / n`` (as a fraction), via ``scipy.stats.binomtest``.

    Conservative (coverage at least ``level``); use it when a guarantee matters more than width.
    """
    from scipy.stats import binomtest

    _check_counts(k, n)
    ci = binomtest(k, n).proportion_ci(confidence_level=_check_level(level), method="exact")
    return Interval(k / n, float(ci.low), float(ci.high), level, "clopper-pearson")


BINOMIAL_METHODS: Dict[str, Callable[[int, int, float], Interval]] = {
    "wilson": wilson_interval, "exact": clopper_pearson_interval}


# --------------------------------------------------------------------------------------------------
# per-item files
# --------------------------------------------------------------------------------------------------


def _read_keyed_lines(path, argument: str, split_line: Callable[[str], Tuple[str, str]]) -> Dict[str, str]:
    """``{key: rest}`` of a ``<key> <rest>`` file; a missing file or a repeated key is the user's to fix."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{p} is not a file", argument=argument)
    table: Dict[str, str] = {}
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, rest = split_line(line)
        if key in table:
            raise UserInputError(f"{p} line {number}: item {key!r} appears twice", argument=argument)
        table[key] = rest
    return table


def read_labels(path, argument: str = "predict_path") -> Dict[str, str]:
    """``{filename: label}`` of an s3prl ``*_predict.txt`` / ``*_truth.txt`` file.

    The label is the last field: labels (class names, speaker ids, emotions) hold no spaces, filenames might.
    """
    def split_line(line: str) -> Tuple[str, str]:
        parts = line.rstrip().rsplit(maxsplit=1)
        if len(parts) != 2:
            raise UserInputError(f"{path}: line {line!r} is not '<filename> <label>'", argument=argument)
        return parts[0], parts[1]

    return _read_keyed_lines(path, argument, split_line)


def read_transcripts(path, argument: str = "hyp_path") -> Dict[str, str]:
    """``{utt_id: text}`` of an s3prl ASR ``*-hyp.ark`` / ``*-ref.ark`` file (an empty hypothesis is valid)."""
    def split_line(line: str) -> Tuple[str, str]:
        parts = line.strip().split(maxsplit=1)
        return parts[0], (parts[1] if len(parts) == 2 else "")

    return _read_keyed_lines(path, argument, split_line)


def _check_same_items(given: Sequence[str], expected: Sequence[str], argument: str, what: str) -> None:
    """Items in one file and not the other mean the runs did not see the same test set: refuse to compare."""
    missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    if missing or extra:
        def show(items):
            return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
        parts = ([f"{len(missing)} missing ({show(missing)})"] if missing else []) + \
                ([f"{len(extra)} extra ({show(extra)})"] if extra else [])
        raise UserInputError(f"items differ from {what}: {'; '.join(parts)}", argument=argument)


def s3prl_label_files(expdir, split: str = "test", fold: Optional[str] = None) -> Tuple[Path, Path]:
    """``(predict, truth)`` paths s3prl writes in ``expdir``; ``fold`` (e.g. ``"fold1"``) for ER."""
    stem = f"{split}_{fold}" if fold else split
    return Path(expdir) / f"{stem}_predict.txt", Path(expdir) / f"{stem}_truth.txt"


def s3prl_transcript_files(expdir, split: str = "test-clean", lm: str = "noLM") -> Tuple[Path, Path]:
    """``(hyp, ref)`` paths s3prl's ASR expert writes in ``expdir``."""
    return Path(expdir) / f"{split}-{lm}-hyp.ark", Path(expdir) / f"{split}-{lm}-ref.ark"


# --------------------------------------------------------------------------------------------------
# per-item scores
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemScores:
    """Per-item contributions to a corpus score: ``100 * sum(numer) / sum(denom)``.

    Accuracy: ``numer`` = 1 when correct, ``denom`` = 1. WER: ``numer`` = word edits, ``denom`` = reference
    words. Keeping both lets a resample recompute the corpus score exactly as s3prl does.
    """

    names: Tuple[str, ...]
    numer: np.ndarray
    denom: np.ndarray
    metric: str  # "acc" or "wer"

    def __len__(self) -> int:
        return len(self.names)

    def value(self) -> float:
        """The metric in percent on all items (accuracy, or WER)."""
        return float(100.0 * self.numer.sum() / self.denom.sum())

    def aligned_to(self, names: Sequence[str], argument: str) -> "ItemScores":
        """The same scores in the order of ``names``; the item sets must be equal."""
        _check_same_items(self.names, names, argument, "the reference items")
        order = {n: i for i, n in enumerate(self.names)}
        idx = np.array([order[n] for n in names], dtype=np.int64)
        return ItemScores(tuple(names), self.numer[idx], self.denom[idx], self.metric)


def accuracy_items(predict_path, truth_path) -> ItemScores:
    """Correct / wrong per test item, predictions matched to truths by filename."""
    predict = read_labels(predict_path, "predict_path")
    truth = read_labels(truth_path, "truth_path")
    if not truth:
        raise UserInputError(f"{truth_path} lists no items", argument="truth_path")
    _check_same_items(list(predict), list(truth), "predict_path", f"the truth file {truth_path}")
    names = tuple(sorted(truth))
    correct = np.array([predict[n] == truth[n] for n in names], dtype=np.float64)
    return ItemScores(names, correct, np.ones(len(names)), "acc")


def wer_items(hyp_path, ref_path) -> ItemScores:
    """Word edits and reference lengths per utterance, matched by utterance id (``editdistance``, as s3prl)."""
    import editdistance

    hyp = read_transcripts(hyp_path, "hyp_path")
    ref = read_transcripts(ref_path, "ref_path")
    _check_same_items(list(hyp), list(ref), "hyp_path", f"the reference file {ref_path}")
    names = tuple(sorted(ref))
    edits = np.array([editdistance.eval(hyp[n].split(), ref[n].split()) for n in names], dtype=np.float64)
    lengths = np.array([len(ref[n].split()) for n in names], dtype=np.float64)
    if lengths.sum() == 0:
        raise UserInputError(f"{ref_path} holds no reference words", argument="ref_path")
    return ItemScores(names, edits, lengths, "wer")


# --------------------------------------------------------------------------------------------------
# intervals of one result
# --------------------------------------------------------------------------------------------------


def accuracy_interval(predict_path, truth_path, level: float = 0.95, method: str = "wilson") -> Interval:
    """Accuracy in percent with its binomial interval (``method``: ``"wilson"`` or ``"exact"``)."""
    if method not in BINOMIAL_METHODS:
        raise UserInputError(f"unknown method {method!r}; use one of {', '.join(BINOMIAL_METHODS)}",
                             argument="method")
    items = accuracy_items(predict_path, truth_path)
    frac = BINOMIAL_METHODS[method](int(items.numer.sum()), len(items), level)
    return Interval(100 * frac.point, 100 * frac.low, 100 * frac.high, level, method)


def _resample_indices(n: int, resamples: int, seed: int):
    """Yield index matrices (rows = resamples) from one seeded generator, chunk by chunk.

    Each chunk is ``rng.integers(0, n, size=(rows, n))`` with ``rows = max(1, _CHUNK_ENTRIES // n)``; with
    fewer resamples than ``rows`` this is a single draw, which tests reproduce directly.
    """
    if int(resamples) < 1:
        raise UserInputError(f"must be >= 1, got {resamples!r}", argument="resamples")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ENTRIES // max(n, 1))
    done = 0
    while done < resamples:
        take = min(rows, resamples - done)
        yield rng.integers(0, n, size=(take, n))
        done += take


def _resampled_values(items: ItemScores, idx: np.ndarray) -> np.ndarray:
    """The metric in percent on each resample (row of ``idx``); vectorised over resamples."""
    denom = items.denom[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * items.numer[idx].sum(axis=1) / denom


def _percentile_bounds(samples: np.ndarray, level: float) -> Tuple[float, float]:
    alpha = 1.0 - level
    low, high = np.nanquantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_samples(items: ItemScores, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """The corpus metric in percent on each of ``resamples`` seeded resamples of the items.

    Kept separate from :func:`bootstrap_interval` so scores built from several tasks (the SUPERB score) can
    combine the tasks' resamples before taking percentiles.
    """
    return np.concatenate([_resampled_values(items, idx) for idx in _resample_indices(len(items), resamples, seed)])


def percentile_interval(point: float, samples: np.ndarray, level: float, method: str) -> Interval:
    """``point`` with the percentile bounds of ``samples`` (NaN bounds when no sample is finite)."""
    level = _check_level(level)
    samples = np.asarray(samples, dtype=np.float64)
    low, high = _percentile_bounds(samples, level) if np.isfinite(samples).any() else (math.nan, math.nan)
    return Interval(float(point), low, high, level, method)


def bootstrap_interval(items: ItemScores, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of the corpus metric over resampled items (utterances for WER)."""
    level = _check_level(level)
    samples = bootstrap_samples(items, resamples, seed)
    return percentile_interval(items.value(), samples, level, f"bootstrap({resamples}, seed={seed})")


def pooled_folds(folds: Mapping[str, ItemScores]) -> ItemScores:
    """One item set for several folds whose corpus score is the *mean of the fold scores* (SUPERB's ER score).

    Each fold's items are weighted by ``1 / len(fold)`` (numerator and denominator alike), so
    ``100 * sum(numer) / sum(denom)`` is the plain mean of the fold accuracies while every item stays a unit a
    bootstrap can resample (and pair with the same item of another upstream). Item names get a ``fold/`` prefix.
    """
    if not folds:
        raise UserInputError("give at least one fold", argument="folds")
    metrics = {items.metric for items in folds.values()}
    if len(metrics) != 1:
        raise UserInputError(f"folds mix metrics {sorted(metrics)}", argument="folds")
    names, numer, denom = [], [], []
    for fold, items in folds.items():
        weight = 1.0 / len(items)
        names += [f"{fold}/{name}" for name in items.names]
        numer.append(items.numer * weight)
        denom.append(items.denom * weight)
    return ItemScores(tuple(names), np.concatenate(numer), np.concatenate(denom), metrics.pop())


def wer_interval(hyp_path, ref_path, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> Interval:
    """Corpus WER in percent with a seeded bootstrap interval over utterances."""
    return bootstrap_interval(wer_items(hyp_path, ref_path), resamples, seed, level)


@dataclass(frozen=True)
class FoldSummary:
    """ER's five folds: each fold's accuracy interval and the spread of the fold accuracies (percent)."""

    folds: Dict[str, Interval]
    mean: float
    std: float
    min: float
    max: float

    def to_dict(self) -> dict:
        return {"folds": {k: v.to_dict() for k, v in self.folds.items()}, "mean": self.mean, "std": self.std,
                "min": self.min, "max": self.max}


def fold_spread(accuracies: Sequence[float]) -> Tuple[float, float, float, float]:
    """``(mean, std, min, max)`` of fold accuracies. SUPERB's ER score is the plain mean over folds; ``std`` is
    the sample standard deviation (``ddof=1``; 0 for a single fold), how much the score moves with the fold."""
    a = np.asarray(accuracies, dtype=np.float64)
    if a.size == 0:
        raise UserInputError("give at least one fold", argument="accuracies")
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return float(a.mean()), std, float(a.min()), float(a.max())


def er_fold_summary(fold_files: Mapping[str, Tuple[object, object]], level: float = 0.95,
                    method: str = "wilson") -> FoldSummary:
    """``fold_files``: ``{fold: (predict_path, truth_path)}`` (see :func:`s3prl_label_files`)."""
    if not fold_files:
        raise UserInputError("give at least one fold", argument="fold_files")
    folds = {fold: accuracy_interval(p, t, level, method) for fold, (p, t) in fold_files.items()}
    return FoldSummary(folds, *fold_spread([iv.point for iv in folds.values()]))


# --------------------------------------------------------------------------------------------------
# paired comparison: capacity kept
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityInterval:
    """Capacity kept = score(compressed) / score(reference), with paired-bootstrap bounds.

    ``difference``: score(compressed) - score(reference) in accuracy-like points, same resamples. ``verdict``:
    ``"indistinguishable"`` when the difference interval contains 0, else ``"distinguishable"``.
    """

    point: float
    low: float
    high: float
    difference: Interval
    verdict: str
    n_items: int
    level: float
    method: str

    def to_dict(self) -> dict:
        record = asdict(self)
        record["difference"] = self.difference.to_dict()
        return record


def _accuracy_like(values: np.ndarray, metric: str) -> np.ndarray:
    """Accuracy as is; WER as word accuracy ``max(0, 100 - WER)``, clipped since WER can exceed 100 %.

    Same definition as the leaderboard's capacity kept, so the point estimate here equals the one it shows.
    """
    return np.maximum(0.0, 100.0 - values) if metric == "wer" else values


def _ratio(compressed: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """compressed / reference; NaN where the reference scores 0 (capacity is undefined there)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(reference > 0, compressed / np.where(reference > 0, reference, 1.0), np.nan)


def paired_samples(reference: ItemScores, compressed: ItemScores, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(ratios, differences)`` of the accuracy-like scores of ``compressed`` against ``reference`` on each
    seeded resample of their common items (the same items for both: a paired bootstrap).

    Separate from :func:`paired_capacity` so a capacity averaged over tasks can average the tasks' resamples.
    """
    if compressed.metric != reference.metric:
        raise UserInputError(f"metric {compressed.metric!r} differs from the reference's {reference.metric!r}",
                             argument="compressed")
    compressed = compressed.aligned_to(reference.names, "compressed")
    ratios, diffs = [], []
    for idx in _resample_indices(len(reference), resamples, seed):
        ref = _accuracy_like(_resampled_values(reference, idx), reference.metric)
        com = _accuracy_like(_resampled_values(compressed, idx), reference.metric)
        ratios.append(_ratio(com, ref))
        diffs.append(com - ref)
    return np.concatenate(ratios), np.concatenate(diffs)


def paired_capacity(reference: ItemScores, compressed: ItemScores, resamples: int = DEFAULT_RESAMPLES,
                    seed: int = 0, level: float = 0.95) -> CapacityInterval:
    """Capacity kept by ``compressed`` relative to ``reference`` on the same test items, paired bootstrap.

    Each resample draws item indices once and scores both upstreams on them, so item difficulty cancels out.
    Rule: the upstreams are "indistinguishable" at ``level`` when the percentile interval of the score
    difference contains 0. Identical predictions give capacity 1 with a zero-width interval.
    """
    level = _check_level(level)
    ratios, diffs = paired_samples(reference, compressed, resamples, seed)
    ref_point = float(_accuracy_like(np.array(reference.value()), reference.metric))
    com_point = float(_accuracy_like(np.array(compressed.value()), reference.metric))
    method = f"paired bootstrap({resamples}, seed={seed})"
    difference = Interval(com_point - ref_point, *_percentile_bounds(diffs, level), level, method)
    point = float(_ratio(np.array(com_point), np.array(ref_point)))
    low, high = _percentile_bounds(ratios, level) if np.isfinite(ratios).any() else (math.nan, math.nan)
    verdict = "indistinguishable" if difference.contains(0.0) else "distinguishable"
    return CapacityInterval(point, low, high, difference, verdict, len(reference), level, method)
