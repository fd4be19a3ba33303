"""Keyword-spotting capacity of distilled students, with intervals, on held-out voices.

The probe is the project's (:mod:`s3prl_redundancy.probes`): each clip's hidden states are mean-pooled over
time, a standardised logistic regression is trained on some voices and tested on the others (voices the
probe never saw; with ``tiny_hubert`` they are also voices its pre-training never used,
:func:`s3prl_redundancy.pretrain.data.ks_probe_set`). Features: every hidden state, and the *uniform* layer
average (what s3prl's Featurizer computes before its weights are trained), chosen in advance so that nothing
is tuned to the result. Per upstream: accuracy with a Wilson interval; per upstream against a reference on
the same test clips: capacity kept (accuracy ratio) with a paired-bootstrap interval
(:func:`s3prl_redundancy.superb.intervals.paired_capacity`).

``python -m s3prl_redundancy.distill.quality --reference teacher_front/student.pt --student light/student.pt``
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

FEATURES = "layer_average"  # the feature the capacity is computed on (fixed in advance)


def upstream_features(upstream, wavs: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    """``{"layer<i>": (N, D)}`` mean-pooled per hidden state, plus their uniform average ``layer_average``."""
    from ..probes import pooled_features

    layers = pooled_features(upstream, list(wavs), batch_size=1)  # one clip at a time: no padding
    out = {f"layer{i}": x for i, x in enumerate(layers)}
    out[FEATURES] = np.mean(np.stack(layers), axis=0)
    return out


def ks_scores(upstreams: Mapping[str, Any], items, test_fraction: float = 0.3, seed: int = 0) -> Dict[str, Any]:
    """Per upstream and feature, the correctness of every test clip (``ItemScores``) and its accuracy."""
    from ..probes import fit_predict, group_split
    from ..superb.intervals import ItemScores

    wavs, labels, groups = zip(*items)
    labels = np.asarray(labels)
    train, test = group_split(list(groups), test_fraction, seed)
    names = tuple(f"clip{i}" for i in np.flatnonzero(test))
    scores: Dict[str, Dict[str, ItemScores]] = {}
    for name, upstream in upstreams.items():
        scores[name] = {}
        for feature, x in upstream_features(upstream, wavs).items():
            correct = (fit_predict(x, labels, train) == labels[test]).astype(np.float64)
            scores[name][feature] = ItemScores(names, correct, np.ones_like(correct), "acc")
    return {"scores": scores, "n_test": int(test.sum()), "test_voices": len(set(np.asarray(groups)[test].tolist())),
            "classes": int(len(set(labels.tolist())))}


def ks_capacity(upstreams: Mapping[str, Any], reference: str, voices: int = 40, seed: int = 0,
                resamples: int = 10_000) -> Dict[str, Any]:
    """KS accuracy (Wilson 95%) of every upstream per feature, and capacity kept against ``reference``
    (paired bootstrap 95%) on :data:`FEATURES`. ``upstreams``: ``{name: s3prl upstream}``."""
    from ..pretrain.data import ks_probe_set
    from ..superb.intervals import paired_capacity, wilson_interval

    measured = ks_scores(upstreams, ks_probe_set(voices), seed=seed)
    result: Dict[str, Any] = {k: v for k, v in measured.items() if k != "scores"}
    result.update(voices=voices, features=FEATURES, reference=reference, accuracy={}, capacity={})
    for name, per_feature in measured["scores"].items():
        result["accuracy"][name] = {
            feature: wilson_interval(int(s.numer.sum()), len(s)).to_dict() for feature, s in per_feature.items()}
        if name != reference:
            result["capacity"][name] = paired_capacity(measured["scores"][reference][FEATURES], per_feature[FEATURES],
                                                       resamples=resamples, seed=seed).to_dict()
    return result


def _load(path: str):
    from ..upstreams.distilled.expert import EXPERTS
    from .student import load_student

    _, saved = load_student(path)
    return EXPERTS[saved["teacher"]["family"]](ckpt=path).eval()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s3prl_redundancy.distill.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="student.pt the capacity is relative to")
    parser.add_argument("--student", action="append", required=True, help="student.pt to compare (repeatable)")
    parser.add_argument("--teacher", help="also probe this teacher entry (e.g. tiny_hubert), for context")
    parser.add_argument("--voices", type=int, default=40)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    upstreams = {"reference": _load(args.reference), **{f"student{i}": _load(p) for i, p in enumerate(args.student)}}
    if args.teacher:
        from ..upstream_loading import load_upstream

        upstreams["teacher"] = load_upstream(args.teacher)
    result = ks_capacity(upstreams, "reference", voices=args.voices)
    result["paths"] = {"reference": args.reference, **{f"student{i}": p for i, p in enumerate(args.student)}}
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        from ..io import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
