"""Capacity versus layers removed: prune 0..N layers by each strategy and evaluate every pruned model.

One pass over the labelled data collects the statistics every requested strategy needs; each strategy
ranks the layers once, and the model with the first ``n`` layers of its removal order removed is built
for ``n = 0..max_drop`` (a selection two strategies share is evaluated once). Each model makes one
forward pass over the data, turned into :class:`ModelFeatures`, and every *evaluator* scores it:

* :class:`LinearProbeEvaluator` (built in): logistic regression on utterance-level mean-pooled features
  (the last hidden state, or the mean of all hidden states = an evenly weighted average) with a seeded,
  stratified held-out split; reports held-out accuracy;
* :class:`OutputSimilarityEvaluator` (built in): linear CKA and MSE between the pruned model's encoder
  output and the source model's, over all frames.

The evaluator interface is the hook for heavier evaluations (e.g. a SUPERB task through s3prl's
``run_downstream``): any object with ``name`` and ``evaluate(checkpoint, features) -> {metric: value}``
can be passed in ``evaluators=``; it receives the pruned checkpoint dict (loadable with
``structure.make_upstream`` or saved for ``-u compressed_<family> -k``) and may ignore ``features``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch

from ..errors import UserInputError
from ..families import FAMILIES
from .structure import family_of

CSV_NAME, PLOT_NAME, JSON_NAME = "sweep.csv", "sweep.png", "sweep.json"
OUTPUT_NAMES = (CSV_NAME, PLOT_NAME, JSON_NAME)


@dataclass
class ModelFeatures:
    """One forward pass of a model over the sweep's data."""

    pooled: np.ndarray  # (U, S, D): utterance mean of each hidden state (s3prl's hidden_states, trimmed)
    last_frames: torch.Tensor  # (N, D): encoder-output frames of all utterances, concatenated


class Evaluator(Protocol):
    name: str

    def evaluate(self, checkpoint: Mapping[str, Any], features: Optional[ModelFeatures]) -> Dict[str, float]:
        ...


def model_features(upstream, dataset, batch_size: int = 4) -> ModelFeatures:
    from .statistics import batches, frame_counts

    pooled, frames = [], []
    with torch.inference_mode():
        for _, _, wavs in batches(dataset, batch_size):
            hidden = upstream(wavs)["hidden_states"]
            counts = frame_counts([len(w) for w in wavs], hidden[0].shape[1])
            for b in range(len(wavs)):
                pooled.append(torch.stack([h[b, : counts[b]].float().mean(0) for h in hidden]).numpy())
                frames.append(hidden[-1][b, : counts[b]].float())
    return ModelFeatures(np.stack(pooled), torch.cat(frames))


def probe_split(labels: Sequence[str], test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Stratified train / held-out indices (every class in both)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise UserInputError(f"`test_fraction` must be strictly between 0 and 1, got {test_fraction}")
    labels = np.asarray(labels)
    counts = {c: int((labels == c).sum()) for c in set(labels.tolist())}
    small = {c: n for c, n in counts.items() if n < 2}
    if small:
        raise UserInputError(f"the linear probe needs at least 2 utterances per class (one to train, one held out); {small}")
    idx = np.arange(len(labels))
    n_test = max(len(counts), int(round(test_fraction * len(labels))))
    if len(labels) - n_test < len(counts):
        raise UserInputError(f"{len(labels)} utterances are too few for a stratified split over {len(counts)} classes")
    train, test = train_test_split(idx, test_size=n_test, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


@dataclass
class LinearProbeEvaluator:
    """Held-out accuracy of a logistic-regression probe on utterance-level mean-pooled features."""

    labels: Sequence[str]
    train: np.ndarray
    test: np.ndarray
    features: str = "mean"  # "last": last hidden state; "mean": mean of all hidden states
    name: str = "linear_probe"
    C: float = 1.0

    def evaluate(self, checkpoint, features: Optional[ModelFeatures]) -> Dict[str, float]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if features is None:
            raise ValueError("the linear probe needs the model's features")
        if self.features == "last":
            x = features.pooled[:, -1]
        elif self.features == "mean":
            x = features.pooled.mean(axis=1)
        else:
            raise UserInputError(f"`probe_features` must be last or mean, got {self.features!r}")
        y = np.asarray(self.labels)
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=5000))
        probe.fit(x[self.train], y[self.train])
        return {"probe_accuracy": float(probe.score(x[self.test], y[self.test]))}


@dataclass
class OutputSimilarityEvaluator:
    """Linear CKA and MSE of the encoder output to the source model's (frames of all utterances)."""

    reference: torch.Tensor
    name: str = "output_similarity"

    def evaluate(self, checkpoint, features: Optional[ModelFeatures]) -> Dict[str, float]:
        from .bridges import compare_outputs

        r = compare_outputs(self.reference, {"m": features.last_frames})["m"]
        return {"cka_to_source": r["cka"], "mse_to_source": r["mse"]}


@dataclass
class SweepResult:
    rows: List[Dict[str, Any]]
    rankings: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)


def run_sweep(
    ckpt: Mapping[str, Any],
    strategies: Sequence[str],
    dataset,
    labels: Sequence[str],
    max_drop: int,
    *,
    source: str = "",
    strategy_options: Optional[Mapping[str, Any]] = None,
    evaluators: Optional[Sequence[Evaluator]] = None,
    probe_features: str = "mean",
    test_fraction: float = 0.3,
    bridge: Optional[str] = None,
    bridge_ridge: float = 1e-4,
    batch_size: int = 4,
    knn_k: int = 10,
    knn_frames: int = 4096,
    similarity_metric: str = "cka",
    seed: int = 0,
    progress: bool = False,
) -> SweepResult:
    """Evaluate every strategy's model with ``0..max_drop`` layers removed (plus bridged variants)."""
    from .statistics import collect_statistics
    from .structure import make_upstream

    num_layers = FAMILIES[family_of(ckpt)].num_layers(ckpt)
    built = _build_strategies(strategies, strategy_options, num_layers, max_drop, labels, dataset)
    needs = set().union(*(s.needs for s in built.values()))
    source_up = make_upstream(ckpt)
    stats = None
    if needs:
        stats = collect_statistics(source_up, dataset, needs, batch_size=batch_size, knn_k=knn_k, knn_frames=knn_frames,
                                   similarity_metric=similarity_metric, seed=seed, progress=progress)
        stats.labels = list(labels)
    train, test = probe_split(labels, test_fraction, seed)
    source_features = model_features(source_up, dataset, batch_size)
    if evaluators is None:
        evaluators = [LinearProbeEvaluator(labels, train, test, probe_features),
                      OutputSimilarityEvaluator(source_features.last_frames)]
    fit_data = dataset.subset([dataset.files[i] for i in train]) if bridge else None
    models = _SweepModels(ckpt, source, source_up, source_features, dataset, evaluators, fit_data, bridge_ridge, batch_size)
    rows, rankings = _sweep_rows(built, models, num_layers, max_drop, stats, bridge == "linear")
    return SweepResult(rows, rankings, {"strategies": list(built), "max_drop": max_drop, "num_layers": num_layers,
                                        "probe_features": probe_features, "test_fraction": test_fraction,
                                        "train_utterances": int(len(train)), "test_utterances": int(len(test)),
                                        "bridge": bridge, "seed": seed, "evaluations": len(models.cache),
                                        "statistics": None if stats is None else stats.options})


def _build_strategies(names: Sequence[str], options, num_layers: int, max_drop: int, labels, dataset) -> Dict[str, Any]:
    """Check the sweep's inputs and build each named strategy once (in the order given)."""
    from ..plugins import build_strategy
    from .strategies import ExplicitStrategy

    if not names:
        raise UserInputError("`strategies` is empty; give e.g. backward,block-influence")
    if not 1 <= max_drop < num_layers:
        raise UserInputError(f"`max_drop` must be between 1 and {num_layers - 1} (the model has {num_layers} layers), got {max_drop}")
    if len(labels) != len(dataset):
        raise UserInputError(f"{len(labels)} labels for {len(dataset)} audio files")
    built = {name: build_strategy(name, **(options or {})) for name in dict.fromkeys(names)}
    if any(isinstance(s, ExplicitStrategy) for s in built.values()):
        raise UserInputError("strategy 'explicit' has no ranking to sweep; use `keep_layers` with `prune` instead")
    return built


class _SweepModels:
    """Builds and evaluates the model of a layer selection, once per selection (cached); a removed run's
    bridge is fitted once, whichever strategy removes it."""

    def __init__(self, ckpt, source, source_up, source_features, dataset, evaluators, fit_data, bridge_ridge, batch_size):
        self.ckpt, self.source, self.source_up, self.source_features = ckpt, source, source_up, source_features
        self.dataset, self.evaluators, self.fit_data = dataset, evaluators, fit_data
        self.bridge_ridge, self.batch_size = bridge_ridge, batch_size
        self.num_layers = FAMILIES[family_of(ckpt)].num_layers(ckpt)
        self.cache: Dict[Tuple, Dict[str, Any]] = {}
        self.bridge_fits: Dict[Tuple[int, int], Dict[str, Any]] = {}

    def metrics(self, keep: Tuple[int, ...], bridged: bool, plan=None) -> Dict[str, Any]:
        key = (keep, bridged)
        if key not in self.cache:
            checkpoint, features = self._model(keep, bridged, plan)
            metrics: Dict[str, Any] = {}
            for ev in self.evaluators:
                metrics.update(ev.evaluate(checkpoint, features))
            from .cost import parameter_counts

            metrics["parameters"] = parameter_counts(FAMILIES[family_of(checkpoint)].weights(checkpoint))["inference"]
            self.cache[key] = metrics
        return self.cache[key]

    def _model(self, keep, bridged, plan):
        """``(checkpoint, features)`` of the selection ``keep`` (the source model when nothing is removed)."""
        from .compress import compress
        from .structure import make_upstream

        if len(keep) == self.num_layers:
            return self.ckpt, self.source_features
        if bridged:
            from .bridges import collect_run_statistics, fit_bridges, removed_runs

            missing = [r for r in removed_runs(plan.keep, self.num_layers) if r not in self.bridge_fits]
            if missing:
                stats = collect_run_statistics(self.source_up, self.fit_data, missing, self.batch_size)
                self.bridge_fits.update(fit_bridges(stats, self.bridge_ridge))
        result = compress(self.ckpt, source=self.source, plan=plan, bridge="linear" if bridged else None,
                          bridge_ridge=self.bridge_ridge, bridge_data=self.fit_data, bridge_fits=self.bridge_fits,
                          batch_size=self.batch_size)
        return result.checkpoint, model_features(make_upstream(result.checkpoint), self.dataset, self.batch_size)


def _sweep_rows(built, models: _SweepModels, num_layers: int, max_drop: int, stats, with_bridges: bool):
    """One row per strategy, count removed (and bridged variant); each strategy's first plan as its ranking."""
    from .strategies import Target, plan_layers

    rows: List[Dict[str, Any]] = []
    rankings: Dict[str, Dict[str, Any]] = {}
    variants = [False] + ([True] if with_bridges else [])
    for name, strategy in built.items():
        first_plan = None
        for n in range(0, max_drop + 1):
            plan = None if n == 0 else plan_layers(strategy, num_layers, Target("drop", n), stats)
            if plan is not None and first_plan is None:
                first_plan = plan
            keep = tuple(range(num_layers)) if plan is None else tuple(plan.keep)
            for bridged in variants:  # with n = 0 the bridged curve starts at the source model
                metrics = models.metrics(keep, bridged and n > 0, plan)
                rows.append({"strategy": name + ("+bridge" if bridged else ""), "layers_removed": n,
                             "kept_layers": " ".join(map(str, keep)),
                             "removed_layers": " ".join(map(str, sorted(set(range(num_layers)) - set(keep)))), **metrics})
        rankings[name] = first_plan.to_dict() if first_plan is not None else {}
    return rows, rankings


def write_sweep(result: SweepResult, out_dir, force: bool = False, metric: str = "probe_accuracy") -> Path:
    """``sweep.csv`` (one row per strategy and count), ``sweep.png`` (one line per strategy), ``sweep.json``."""
    from ..io import atomic_write_text
    from ..similarity.plots import save_figure_atomic
    from .compress import new_figure, output_dir
    from .strategies import _jsonable

    folder = output_dir(out_dir, force, command="sweep", names=OUTPUT_NAMES)
    folder.prepare()
    folder.record(*OUTPUT_NAMES)
    out = folder.path
    columns = list(dict.fromkeys(k for row in result.rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(result.rows)
    atomic_write_text(out / CSV_NAME, buffer.getvalue())

    metrics = [m for m in (metric, "cka_to_source") if any(m in r for r in result.rows)]
    fig = new_figure(6.0 * max(1, len(metrics)), 4.2)
    axes = fig.subplots(1, max(1, len(metrics)), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        for name in dict.fromkeys(r["strategy"] for r in result.rows):
            pts = [(r["layers_removed"], r[m]) for r in result.rows if r["strategy"] == name and m in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name,
                    linestyle="--" if name.endswith("+bridge") else "-")
        ax.set_xlabel("transformer layers removed")
        ax.set_ylabel(m.replace("_", " "))
        ax.set_xticks(range(result.options.get("max_drop", 0) + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"{m.replace('_', ' ')} vs layers removed")
    save_figure_atomic(fig, out / PLOT_NAME)
    atomic_write_text(out / JSON_NAME, json.dumps(_jsonable({"options": result.options, "rankings": result.rankings,
                                                             "rows": result.rows}), indent=2) + "\n")
    return out / CSV_NAME
