"""A fast linear probe of every layer of an s3prl upstream.

Each utterance is pooled over time in every hidden state (``upstream(wavs)["hidden_states"]``):
``pooling="mean"`` (the default) averages the frames; ``pooling="mean+std"`` concatenates the mean and
the standard deviation over time (statistics pooling, as in x-vector speaker embeddings), which keeps
the spread of each dimension over the utterance. A standardised logistic regression (scikit-learn) per
layer is trained on some groups and tested on the others, so test utterances come from groups (voices,
speakers, sentences) never seen by the probe.

Works with any s3prl upstream (an ``UpstreamExpert`` or anything returning ``{"hidden_states": [...]}``)
and a labelled list of ``(wav, label, group)``.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import UserInputError

Item = Tuple[Any, Hashable, Hashable]

POOLINGS = ("mean", "mean+std")


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise UserInputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def pooled_features(upstream, wavs: Sequence, batch_size: int = 16, device: str = "cpu",
                    pooling: str = "mean") -> List[np.ndarray]:
    """Per layer, an (N, D) float64 array of time-averaged hidden states (padding frames excluded);
    (N, 2 D) ``[mean, std]`` with ``pooling="mean+std"`` (population std over the frames)."""
    import torch

    from .families import module_min_samples

    _check_pooling(pooling)
    need = module_min_samples(upstream)
    short = [i for i, w in enumerate(wavs) if len(w) < need]
    if short:
        raise UserInputError(f"{len(short)} waveform(s) (e.g. number {short[0]}, {len(wavs[short[0]])} samples) are "
                             f"shorter than the {need} samples the model needs for one frame; drop or lengthen them",
                             argument="wavs")
    upstream.eval()
    per_layer: Optional[List[List[np.ndarray]]] = None
    with torch.no_grad():
        for start in range(0, len(wavs), batch_size):
            chunk = [torch.as_tensor(np.asarray(w, dtype=np.float32)).to(device) for w in wavs[start : start + batch_size]]
            hidden = upstream(chunk)["hidden_states"]
            if per_layer is None:
                per_layer = [[] for _ in hidden]
            elif len(hidden) != len(per_layer):
                raise RuntimeError(f"the upstream returned {len(hidden)} hidden states after {len(per_layer)} earlier")
            frames = hidden[0].size(1)
            longest = max(len(w) for w in chunk)
            for li, h in enumerate(hidden):
                h = h.float()
                for b, w in enumerate(chunk):
                    n = max(1, min(frames, int(round(frames * len(w) / longest))))  # drop padded frames
                    x = h[b, :n].double()
                    pooled = x.mean(0) if pooling == "mean" else torch.cat([x.mean(0), x.std(0, unbiased=False)])
                    per_layer[li].append(pooled.cpu().numpy())
    if per_layer is None:
        raise UserInputError("the probe needs at least one utterance")
    return [np.stack(layer) for layer in per_layer]


def group_split(groups: Sequence[Hashable], test_fraction: float = 0.3, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks with whole groups on one side; deterministic for ``seed``."""
    unique = sorted(set(groups), key=repr)
    if len(unique) < 2:
        raise UserInputError(f"a group split needs at least 2 groups (voices, speakers, sentences), got {len(unique)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    n_test = min(len(unique) - 1, max(1, int(round(test_fraction * len(unique)))))
    test_groups = {unique[i] for i in order[:n_test]}
    test = np.array([g in test_groups for g in groups])
    return ~test, test


def fit_predict(features: np.ndarray, labels: np.ndarray, train: np.ndarray, C: float = 1.0) -> np.ndarray:
    """Predicted labels of the test rows (``~train``) of the probe every measurement here uses: a standardised
    logistic regression fit on the ``train`` rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
    clf.fit(features[train], labels[train])
    return clf.predict(features[~train])


def probe_features(features: Sequence[np.ndarray], labels: Sequence[Hashable], groups: Sequence[Hashable],
                   test_fraction: float = 0.3, seed: int = 0, C: float = 1.0) -> Dict[str, Any]:
    """Train/test a logistic regression on each layer's pooled features; per-layer test accuracy."""
    labels = np.asarray([repr(l) if not isinstance(l, (int, np.integer, str)) else l for l in labels])
    train, test = group_split(list(groups), test_fraction, seed)
    classes = np.unique(labels[train])
    if len(classes) < 2:
        raise UserInputError("the probe's training split has fewer than 2 classes; use more groups or items")
    accs = []
    for X in features:
        if len(X) != len(labels):
            raise ValueError(f"{len(X)} feature rows for {len(labels)} labels")
        accs.append(float((fit_predict(X, labels, train, C) == labels[test]).mean()))
    _, counts = np.unique(labels[test], return_counts=True)
    return {"accuracy": accs, "best_layer": int(np.argmax(accs)), "chance": 1.0 / len(classes),
            "majority": float(counts.max() / counts.sum()), "n_train": int(train.sum()), "n_test": int(test.sum()),
            "n_classes": int(len(classes)), "test_groups": int(len(set(np.asarray(list(groups), dtype=object)[test].tolist())))}


def linear_probe(upstream, items: Sequence[Item], test_fraction: float = 0.3, seed: int = 0, batch_size: int = 16,
                 device: str = "cpu", C: float = 1.0, pooling: str = "mean") -> Dict[str, Any]:
    """Per-layer accuracy of a linear probe of ``upstream`` on ``items`` = ``[(wav, label, group)]``.

    Returns ``{"accuracy": [per hidden state], "best_layer", "chance", "majority", "n_train", "n_test", ...}``.
    """
    _check_pooling(pooling)
    if not items:
        raise UserInputError("the probe needs a non-empty list of (wav, label, group)")
    wavs, labels, groups = zip(*items)
    feats = pooled_features(upstream, list(wavs), batch_size=batch_size, device=device, pooling=pooling)
    return probe_features(feats, labels, groups, test_fraction, seed, C)
