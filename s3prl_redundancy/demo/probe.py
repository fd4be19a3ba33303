"""The demo's measurement of capacity kept: a frozen-feature keyword probe on voices pretraining never heard.

Why a probe beside the s3prl runs: the demo's run_downstream stage trains each downstream for a few dozen steps
on a few dozen test clips, which checks the pipeline but cannot tell a compressed model from the original (its
intervals span tens of points). A linear probe needs no training of the upstream and no long downstream run, so
it can afford enough test clips for a 95 % interval on capacity kept no wider than +-5 points.

The set: the 10 Speech Commands words spoken by ``voices`` voices built only from the espeak-ng variants that
never occur in ``tiny_hubert``'s pretraining (:func:`..pretrain.data.ks_probe_set`), 1 s clips. Half of the voices
train the probe, the other half are the test items, the same clips for every upstream, so capacity kept is a
*paired* comparison (:func:`..superb.intervals.paired_capacity`).

The probe, identical for every upstream: each hidden state pooled over time (mean and standard deviation,
:func:`..probes.pooled_features`), then a standardised logistic regression, on two views (:data:`VIEWS`): the
average over all hidden states (the weights s3prl's featurizer starts from; the headline) and the last hidden
state alone (what the compressed stack itself keeps, without the front end's output that compression leaves
unchanged). Predictions are written as s3prl's KS expert writes them
(``test_predict.txt`` / ``test_truth.txt``), so the intervals come from the same reader as the leaderboard's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..io import atomic_write_json, atomic_write_text
from ..superb import intervals as iv

VOICES = 120
"""Voices of the full demo: 1,200 clips, 600 test clips (60 voices) for the intervals."""
QUICK_VOICES = 12
RESULT = "probe.json"
RESAMPLES = 2_000
WIDTH_GOAL = 0.05
"""The half-width of the 95 % capacity interval the demo promises (5 points of capacity)."""


VIEWS = {"all": "all hidden states, averaged (as SUPERB's weighted sum starts)",
         "last": "the last hidden state only (the transformer stack's output)"}
"""What the probe reads. ``all`` is the headline (SUPERB's featurizer sees every hidden state, the front end's
output included, which pruning and distillation keep unchanged); ``last`` shows what the compressed transformer
stack itself keeps."""


def probe_features(entry: str, ckpt: Optional[str], wavs: Sequence[np.ndarray], device: str = "cpu") -> Dict[str, np.ndarray]:
    """``{view: (clips, 2 D)}`` mean+std pooled hidden states of the upstream (:data:`VIEWS`)."""
    from ..probes import pooled_features
    from ..upstream_loading import load_upstream

    upstream = load_upstream(entry, ckpt, None, device=device)
    per_layer = pooled_features(upstream, list(wavs), batch_size=16, device=device, pooling="mean+std")
    return {"all": np.mean(per_layer, axis=0), "last": per_layer[-1]}


def _write_predictions(folder: Path, names: Sequence[str], truth: Sequence[str], predicted: Sequence[str]) -> Tuple[Path, Path]:
    """``test_predict.txt`` / ``test_truth.txt`` in s3prl's KS format (``<file> <label>`` lines)."""
    predict = atomic_write_text(folder / "test_predict.txt", "".join(f"{n} {p}\n" for n, p in zip(names, predicted)))
    truth_path = atomic_write_text(folder / "test_truth.txt", "".join(f"{n} {t}\n" for n, t in zip(names, truth)))
    return Path(predict), Path(truth_path)


def _view_rows(found: Mapping[str, iv.ItemScores], folders: Mapping[str, Path], reference: str,
               seed: int) -> Dict[str, Dict[str, Any]]:
    """Accuracy (Wilson) and, against ``reference``, paired capacity kept of every upstream in one view."""
    rows = {}
    for label, items_of in found.items():
        acc = iv.accuracy_interval(folders[label] / "test_predict.txt", folders[label] / "test_truth.txt")
        row: Dict[str, Any] = {"accuracy": acc.to_dict()}
        if label != reference:
            row["capacity"] = iv.paired_capacity(found[reference], items_of, RESAMPLES, seed).to_dict()
        rows[label] = row
    return rows


def _half_width(rows: Mapping[str, Mapping[str, Any]]) -> float:
    caps = [r["capacity"] for r in rows.values() if "capacity" in r]
    return max((max(c["point"] - c["low"], c["high"] - c["point"]) for c in caps), default=float("nan"))


def measure(upstreams: Mapping[str, Tuple[str, Optional[str]]], reference: str, out: Path,
            voices: int = VOICES, device: str = "cpu", seed: int = 0, workers: int = 2) -> Dict[str, Any]:
    """Probe every upstream (``{label: (hub entry, ckpt)}``) on the same clips, in both :data:`VIEWS`; write
    per-upstream prediction files (``out/<label>/`` for ``all``, ``out/<label>/last/``) and ``probe.json``
    (accuracy with its Wilson interval, capacity kept against ``reference`` with its paired bootstrap interval
    and verdict); return the record."""
    from ..pretrain.data import ks_probe_set
    from ..probes import fit_predict, group_split

    items = ks_probe_set(n_voices=voices, seed=1, workers=workers)
    wavs = [w for w, _, _ in items]
    labels = np.array([word for _, word, _ in items])
    groups = [voice for _, _, voice in items]
    train, _ = group_split(groups, test_fraction=0.5, seed=seed)
    names = [f"voice{voice:03d}_{word}.wav" for (_, word, voice), is_train in zip(items, train) if not is_train]
    found: Dict[str, Dict[str, iv.ItemScores]] = {view: {} for view in VIEWS}
    folders = {view: {label: out / label / ("" if view == "all" else view) for label in upstreams} for view in VIEWS}
    for label, (entry, ckpt) in upstreams.items():
        for view, features in probe_features(entry, ckpt, wavs, device).items():
            predicted = fit_predict(features, labels, train)
            files = _write_predictions(folders[view][label], names, labels[~train], predicted)
            found[view][label] = iv.accuracy_items(*files)
    rows = _view_rows(found["all"], folders["all"], reference, seed)
    last = _view_rows(found["last"], folders["last"], reference, seed)
    for label in rows:
        rows[label]["last_layer"] = last[label]
    widest = max(_half_width(rows), _half_width(last))
    record = {"task": "keyword spotting (10 words), frozen-feature linear probe", "reference": reference,
              "voices": voices, "train_clips": int(train.sum()), "test_clips": int((~train).sum()),
              "test_voices": len({g for g, t in zip(groups, train) if not t}), "chance": 0.1,
              "pooling": "mean+std over time", "views": VIEWS, "seed": seed, "level": 0.95,
              "widest_capacity_half_width": widest, "width_goal": WIDTH_GOAL,
              "meets_width_goal": bool(widest <= WIDTH_GOAL), "rows": rows}
    atomic_write_json(out / RESULT, record)
    return record


__all__ = ["VOICES", "QUICK_VOICES", "RESULT", "WIDTH_GOAL", "VIEWS", "probe_features", "measure"]
