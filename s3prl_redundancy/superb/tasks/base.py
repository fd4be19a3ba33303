"""What a SUPERB task is, as one record: :class:`Task`. Each task module (``ks.py``, ...) defines one ``TASK``.

Also the helpers every layout check uses (:class:`LayoutError`, :func:`need_dir`, :func:`need_file`,
:func:`probe_audio`). Nothing here imports another module of :mod:`s3prl_redundancy.superb`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ...errors import UserInputError


PLACEHOLDER = "<SET_BY_RUNNER:{key}>"
"""Format of the data-path placeholders in the recipe files (one per data key)."""

_PLACEHOLDER_RE = re.compile(r"^<SET_BY_RUNNER:([A-Za-z0-9_\-]+)>$")


def is_placeholder(value: Any) -> bool:
    """True for an unfilled ``<SET_BY_RUNNER:key>`` value."""
    return isinstance(value, str) and bool(_PLACEHOLDER_RE.match(value))


class LayoutError(UserInputError):
    """A data root does not have the layout an s3prl expert reads; the message names the path and the fix."""

    def __init__(self, message: str, *, argument: Optional[str] = "root"):
        super().__init__(message, argument=argument)


@dataclass(frozen=True)
class Task:
    """One SUPERB task as s3prl's ``run_downstream.py`` runs it, and how its result is read and ranked."""

    name: str  # ks / sid / er / asr: the row's task name, the run folder name
    order: int  # position in tables (leaderboard columns, default task list)
    downstream: str  # s3prl's -d argument
    recipe: str  # file name in downstream_recipes/
    data_keys: Tuple[str, ...]  # datarc keys holding data paths (placeholders in the recipe); the first is the main one
    description: str
    source: str  # where the official config was copied from
    metric: str  # acc / wer: the name s3prl logs it under
    higher_is_better: bool
    unit: str  # fraction (logged 0..1) / percent
    evaluate_split: str  # the -t split SUPERB reports (-m evaluate -t <split>)
    dev_split: str  # the split s3prl selects <split>-best.ckpt on during training
    tensorboard_prefix: str  # the expert's TensorBoard tag prefix (ER: emotion-{fold})
    dataset_layout: Mapping[str, Tuple[str, ...]]  # data key -> candidate paths under a --data-root of real datasets
    check: Callable[[Mapping[str, Any]], Dict[str, Any]]  # the layout check of a datarc (raises LayoutError)
    folds: Tuple[str, ...] = ()  # cross-validation folds (ER: fold1..fold5); () for a single run
    # learning rates the learning-rate search tries by default (log scale around the official 1e-4; SUPERB tuned
    # the rate per upstream and task on a log scale, s3prl issues #268 / #498)
    lr_grid: Tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    aliases: Tuple[str, ...] = field(default=())  # other accepted names (s3prl's downstream name)

    @property
    def main_key(self) -> str:
        """The datarc key of the task's main data folder (what ``check_layout(task, root)`` takes)."""
        return self.data_keys[0]

    @property
    def score_column(self) -> str:
        """The leaderboard column of the test score (``ks_acc``, ``asr_wer``)."""
        return f"{self.name}_{self.metric}"

    def tensorboard_tag(self, split: str, fold: Optional[str] = None) -> str:
        """The TensorBoard tag the expert logs the task metric under (``speech_commands/dev-acc``, ...)."""
        prefix = self.tensorboard_prefix.format(fold=fold or (self.folds[0] if self.folds else ""))
        return f"{prefix}/{split}-{self.metric}"

    def prediction_files(self, split: str, fold: Optional[str] = None) -> Tuple[str, str]:
        """The per-utterance files the expert writes in ``expdir`` for ``split`` (``(predict, truth)`` for the
        accuracy tasks, ``(hyp, ref)`` for ASR)."""
        if self.metric == "wer":
            return f"{split}-noLM-hyp.ark", f"{split}-noLM-ref.ark"
        stem = f"{split}_{fold or self.folds[0]}" if self.folds else split
        return f"{stem}_predict.txt", f"{stem}_truth.txt"

    def percent(self, value: float) -> float:
        """A metric value in percent (accuracies are logged as fractions, WER already in percent)."""
        return float(value) * 100.0 if self.unit == "fraction" else float(value)


# --------------------------------------------------------------------------------------------------
# helpers of the layout checks
# --------------------------------------------------------------------------------------------------


def need_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise LayoutError(f"{what}: expected folder {path}, but it {state}. {fix}")
    return path


def need_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        state = "is a folder, not a file" if path.exists() else "does not exist"
        raise LayoutError(f"{what}: expected file {path}, but it {state}. {fix}")
    return path


def probe_audio(path: Path, need_rate: Optional[int] = None) -> None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise LayoutError(f"cannot read audio file {path} ({exc}); replace or remove it.") from exc
    if need_rate is not None and info.samplerate != need_rate:
        raise LayoutError(f"{path} is {info.samplerate} Hz but the expert needs {need_rate} Hz; resample the corpus.")
