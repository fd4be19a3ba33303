"""Read the test metric of a finished SUPERB run from what s3prl's experts write.

In ``-m evaluate`` mode s3prl's runner logs to a throw-away TensorBoard folder, so the metric is taken
from the files and lines the experts themselves write (s3prl 0.4.18):

=====  ==========================  =============================================================
task   metric (as s3prl logs it)   where
=====  ==========================  =============================================================
ks     accuracy, fraction 0..1     ``<expdir>/log.log``: ``test at step 0: <acc>`` (one line per
sid    accuracy, fraction 0..1     evaluation; ``-m evaluate`` uses step 0), checked against
er     accuracy, fraction 0..1     ``test_predict.txt`` / ``test_truth.txt`` (ER:
                                   ``test_<fold>_predict.txt`` / ``test_<fold>_truth.txt``)
asr    WER, percent 0..100+        stdout of the evaluation: ``test-clean wer: <wer>``, checked
                                   against ``test-clean-noLM-hyp.ark`` / ``-ref.ark``
=====  ==========================  =============================================================

The cross-check recomputes the metric from the per-utterance files exactly as the expert does
(mean of ``predict == truth``; for ASR the summed word edit distance over the summed reference words,
in percent) and raises :class:`ResultError` when the two disagree. The best dev score during training
comes from the training TensorBoard scalars (``s3prl_redundancy.tfevents``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from .tasks import Task, get_task

PathLike = Union[str, Path]

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
_LOG_LINE = re.compile(r"^(?P<split>\S+) at step (?P<step>\d+): " + _NUMBER + r"\s*$")
_TOLERANCE = 1e-6


class ResultError(RuntimeError):
    """A finished s3prl run did not leave the metric where its expert writes it, or the sources disagree."""


def evaluate_split(task: str) -> str:
    return get_task(task).evaluate_split


# --------------------------------------------------------------------------------------------------
# parsers of the expert formats
# --------------------------------------------------------------------------------------------------


def parse_log_accuracies(text: str, split: str = "test") -> List[Tuple[int, float]]:
    """``[(step, acc)]`` of the ``<split> at step <N>: <acc>`` lines the KS / SID / ER experts append to
    ``log.log`` (``New best on ...`` lines are not counted)."""
    out = []
    for line in text.splitlines():
        match = _LOG_LINE.match(line.strip())
        if match and match.group("split") == split:
            out.append((int(match.group("step")), float(match.group(3))))
    return out


def parse_stdout_metric(text: str, split: str, metric: str) -> List[float]:
    """Every value of the ``<split> <metric>: <value>`` lines the experts print (``test acc: 0.5``,
    ``test-clean wer: 87.5``), in order. Carriage-return progress bars on the same line are tolerated."""
    pattern = re.compile(r"(?<![\w\-])" + re.escape(split) + r" " + re.escape(metric) + r": " + _NUMBER + r"(?=\s|$)")
    return [float(m.group(1)) for m in pattern.finditer(text)]


def _read_label_file(path: Path) -> List[Tuple[str, str]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(" ", 1)
        if len(parts) != 2:
            raise ResultError(f"{path}:{lineno}: expected '<utterance> <label>', got {line!r}")
        rows.append((parts[0], parts[1]))
    return rows


def accuracy_from_files(predict: PathLike, truth: PathLike) -> Tuple[float, int]:
    """``(accuracy, utterances)`` from an expert's ``*_predict.txt`` and ``*_truth.txt`` (lines
    ``<utterance> <label>`` in the same order)."""
    predict, truth = Path(predict), Path(truth)
    pred_rows, true_rows = _read_label_file(predict), _read_label_file(truth)
    if len(pred_rows) != len(true_rows):
        raise ResultError(f"{predict} has {len(pred_rows)} lines but {truth} has {len(true_rows)}")
    if not pred_rows:
        raise ResultError(f"{predict} is empty: the evaluation saw no utterance")
    correct = 0
    for (name_p, label_p), (name_t, label_t) in zip(pred_rows, true_rows):
        if name_p != name_t:
            raise ResultError(f"{predict} and {truth} list utterances in a different order ({name_p} vs {name_t})")
        correct += label_p == label_t
    return correct / len(pred_rows), len(pred_rows)


def _read_ark(path: Path) -> List[Tuple[str, List[str]]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        name, _, words = line.partition(" ")
        rows.append((name, words.split()))
    return rows


def wer_from_arks(hyp: PathLike, ref: PathLike) -> Tuple[float, int]:
    """``(WER in percent, reference words)`` from the ASR expert's ``<split>-noLM-hyp.ark`` / ``-ref.ark``,
    computed as the expert does: summed word edit distance / summed reference words x 100."""
    import editdistance

    hyp, ref = Path(hyp), Path(ref)
    hyp_rows, ref_rows = _read_ark(hyp), _read_ark(ref)
    if len(hyp_rows) != len(ref_rows):
        raise ResultError(f"{hyp} has {len(hyp_rows)} utterances but {ref} has {len(ref_rows)}")
    errors = words = 0
    for (name_h, words_h), (name_r, words_r) in zip(hyp_rows, ref_rows):
        if name_h != name_r:
            raise ResultError(f"{hyp} and {ref} list utterances in a different order ({name_h} vs {name_r})")
        errors += editdistance.eval(words_h, words_r)
        words += len(words_r)
    if words == 0:
        return 100.0, 0  # the expert's value when there is no reference word
    return 100.0 * errors / words, words


# --------------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------------


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _TOLERANCE * max(1.0, abs(a), abs(b))


def read_test_result(
    task: str,
    expdir: PathLike,
    *,
    test_log: Optional[str] = None,
    log_offset: int = 0,
    fold: Optional[str] = None,
) -> Dict:
    """The test metric of an s3prl run whose ``-m evaluate`` has finished.

    task: ks / sid / er / asr. expdir: the ``-p`` folder. test_log: the captured stdout+stderr of the
    evaluation (needed for ASR, whose WER is only printed; for the others it is a second source).
    log_offset: byte offset in ``log.log`` where the evaluation started (lines before it come from
    training). fold: ER only, the ``test_fold`` (names the prediction files).

    Returns ``{"task", "metric", "split", "value", "unit", "higher_is_better", "source", "checked_with",
    "utterances"}`` (ER adds ``fold``). Raises :class:`ResultError` when the metric is missing or the
    per-utterance files disagree with it.
    """
    spec = get_task(task)
    expdir = Path(expdir)
    result = {"task": spec.name, "metric": spec.metric, "split": spec.evaluate_split, "unit": spec.unit,
              "higher_is_better": spec.higher_is_better}
    if spec.folds:
        result["fold"] = fold = fold or spec.folds[0]
    if spec.metric == "wer":
        result.update(_read_wer(spec, expdir, test_log))
    else:
        result.update(_read_accuracy(spec, expdir, test_log, log_offset, fold))
    return result


def _read_accuracy(spec: Task, expdir: Path, test_log: Optional[str], log_offset: int, fold: Optional[str]) -> Dict:
    """The accuracy the expert appended to ``log.log`` (else printed), checked against its prediction files."""
    split, metric = spec.evaluate_split, spec.metric
    log_path = expdir / "log.log"
    if not log_path.is_file():
        raise ResultError(f"{log_path} does not exist: the {spec.downstream} expert writes its accuracies there")
    with open(log_path, "rb") as fh:
        fh.seek(max(0, int(log_offset)))
        text = fh.read().decode("utf-8", errors="replace")
    values = [v for step, v in parse_log_accuracies(text, split) if step == 0]
    if not values:
        printed = parse_stdout_metric(test_log or "", split, metric)
        if not printed:
            raise ResultError(
                f"no '{split} at step 0: <acc>' line was added to {log_path} by the evaluation (and none printed); "
                "the evaluation did not finish"
            )
        value, source = printed[-1], "stdout"
    else:
        value, source = values[-1], f"{log_path.name}"
    predict, truth = (expdir / name for name in spec.prediction_files(split, fold))
    out: Dict = {"value": float(value), "source": source, "checked_with": None}
    if predict.is_file() and truth.is_file():
        acc, n = accuracy_from_files(predict, truth)
        if not _close(acc, value):
            raise ResultError(
                f"{source} says {split} accuracy {value} but {predict.name}/{truth.name} give {acc} over {n} "
                "utterances; the files belong to another evaluation"
            )
        out.update(checked_with=[predict.name, truth.name], utterances=n)
    return out


def _read_wer(spec: Task, expdir: Path, test_log: Optional[str]) -> Dict:
    """The WER the ASR expert printed (else recomputed from its arks), checked against its hyp / ref arks."""
    split = spec.evaluate_split
    printed = parse_stdout_metric(test_log or "", split, spec.metric)
    hyp, ref = (expdir / name for name in spec.prediction_files(split))
    have_arks = hyp.is_file() and ref.is_file()
    if not printed and not have_arks:
        raise ResultError(
            f"the ASR evaluation printed no '{split} wer: <wer>' line and wrote no {hyp.name}/{ref.name} in {expdir}; "
            "it did not finish"
        )
    out: Dict = {}
    checked = None
    if have_arks:
        wer, words = wer_from_arks(hyp, ref)
        out["reference_words"] = words
        if printed and not _close(wer, printed[-1]):
            raise ResultError(
                f"the evaluation printed {split} WER {printed[-1]} but {hyp.name}/{ref.name} give {wer}; "
                "the files belong to another evaluation"
            )
        checked = [hyp.name, ref.name]
    if printed:
        value, source = printed[-1], "stdout"
    else:
        value, source, checked = wer, f"{hyp.name}+{ref.name}", None
    out.update(value=float(value), source=source, checked_with=checked)
    return out


def best_dev(task: str, expdir: PathLike, fold: Optional[str] = None) -> Optional[Dict]:
    """The best dev score logged during training (``{"split", "metric", "value", "step"}``), from the
    training TensorBoard files in ``expdir``; None when there is none."""
    from ..tfevents import read_dir_scalars

    spec = get_task(task)
    split, metric = spec.dev_split, spec.metric
    try:
        scalars = read_dir_scalars(expdir)
    except Exception:  # a truncated or foreign event file: the dev score is informative only
        return None
    values = scalars.get(spec.tensorboard_tag(split, fold))
    if not values:
        return None
    pick = max if spec.higher_is_better else min
    step, value = pick(values, key=lambda sv: sv[1])
    if isinstance(value, float) and math.isnan(value):
        return None
    return {"split": split, "metric": metric, "value": float(value), "step": int(step)}


def percent(metric: Dict) -> float:
    """A result's value in percent (accuracies are logged as fractions, WER already in percent)."""
    value = float(metric["value"])
    return value * 100.0 if metric.get("unit") == "fraction" else value  # the unit recorded with the run


__all__ = [
    "ResultError", "evaluate_split", "parse_log_accuracies", "parse_stdout_metric", "accuracy_from_files", "wer_from_arks",
    "read_test_result", "best_dev", "percent",
]
