"""The forward pass over ``--data`` that data-driven strategies need, and the labels of labelled data.

The pass is the shared one, :class:`s3prl_redundancy.similarity.collector.HiddenStateCollector` (valid
frames ``min(round(samples / 320), T)`` per utterance, so padding never enters a statistic; stable frame
keys; NaN/inf stop the pass), run on a thin wrapper of the upstream whose ``hidden_states`` are the
*boundary states* of the transformer stack: ``L + 1`` tensors where entry ``l < L`` is the input of layer
``l`` and entry ``L`` the raw output of the last layer. They are s3prl's ``hidden_states`` except for
models that apply a final layer norm after the stack (``layer_norm_first``, the "large" models), where
s3prl's last hidden state is the normalised encoder output; block influence of the last layer is defined
on the layer's own output, so that entry comes from a hook on the last layer. Because of that difference
the pluggy ``s3prl_redundancy_on_hidden_states`` hook is not called from this pass.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..audio import AudioDataset
from ..errors import UserInputError

DOWNSAMPLE = 320  # samples per frame of every family handled here
STATISTICS = ("block_influence", "knn", "similarity", "pooled")


def frame_counts(num_samples: Sequence[int], num_frames: int) -> List[int]:
    """True frame count of each utterance: ``round(samples / 320)`` capped at the padded length ``T``."""
    return [max(1, min(int(round(n / DOWNSAMPLE)), int(num_frames))) for n in num_samples]


def batches(dataset: AudioDataset, batch_size: int) -> Iterator[Tuple[List[int], List[str], List[torch.Tensor]]]:
    """``(indices, utterance_ids, waveforms)`` in dataset order."""
    if batch_size < 1:
        raise UserInputError(f"`batch_size` must be at least 1, got {batch_size}")
    for start in range(0, len(dataset), batch_size):
        idx = list(range(start, min(len(dataset), start + batch_size)))
        items = [dataset[i] for i in idx]
        yield idx, [u for u, _ in items], [w for _, w in items]


def encoder_of(upstream) -> Any:
    model = getattr(upstream, "model", None)
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "layers"):
        raise UserInputError(
            f"upstream {type(upstream).__name__} has no model.encoder.layers; only s3prl's HuBERT / wav2vec 2.0 / "
            "WavLM experts (and this project's pruned / compressed entries) are supported"
        )
    return encoder


def boundary_states(upstream, wavs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """The ``L + 1`` boundary states ``(B, T, D)`` of one batch (see the module docstring)."""
    encoder = encoder_of(upstream)
    captured: List[torch.Tensor] = []
    handle = None
    if getattr(encoder, "layer_norm_first", False) and len(encoder.layers) > 0:
        handle = encoder.layers[-1].register_forward_hook(lambda m, i, o: captured.append(o[0].transpose(0, 1)))
    try:
        with torch.no_grad():
            hidden = list(upstream(list(wavs))["hidden_states"])
    finally:
        if handle is not None:
            handle.remove()
    if captured:
        hidden[-1] = captured[-1][:, : hidden[-1].shape[1]]
    return hidden


class BoundaryStateUpstream(torch.nn.Module):
    """``upstream`` whose ``hidden_states`` are the boundary states (for the shared collector)."""

    def __init__(self, upstream) -> None:
        super().__init__()
        self.upstream = upstream

    def get_downsample_rates(self, key: str) -> int:
        getter = getattr(self.upstream, "get_downsample_rates", None)
        return getter(key) if getter is not None else DOWNSAMPLE

    def forward(self, wavs):
        return {"hidden_states": boundary_states(self.upstream, wavs)}


def run_pass(upstream, dataset: AudioDataset, consumers: Sequence[Any], batch_size: int = 4, progress: bool = False,
             description: str = "forward pass"):
    """One shared-collector pass of ``upstream`` over ``dataset``; ``consumers`` get every batch's boundary
    states (``HiddenStatesBatch``: ``frames``/``keys``/``utterance_frames(i)``, padding removed)."""
    from ..similarity.collector import HiddenStateCollector

    if batch_size < 1:
        raise UserInputError(f"`batch_size` must be at least 1, got {batch_size}")
    collector = HiddenStateCollector(BoundaryStateUpstream(upstream), consumers, plugin_manager=False)
    return collector.run(dataset, batch_size=batch_size, progress=progress, description=description)


@dataclass
class LayerStatistics:
    """What one pass over the data measured; ``L`` = number of transformer layers of the model.

    * ``block_influence``: ``(L,)``, ``1 - mean cos(input, output)`` of each layer;
    * ``knn_block_influence``: ``(L,)``, ``1 - mutual k-NN alignment(input, output)``;
    * ``similarity``: ``(L + 1, L + 1)`` similarity of the boundary states (linear CKA or cosine);
    * ``pooled``: ``(U, L + 1, D)`` utterance-level mean of every boundary state.
    """

    num_layers: int
    utterance_ids: List[str]
    frames: int
    block_influence: Optional[np.ndarray] = None
    knn_block_influence: Optional[np.ndarray] = None
    similarity: Optional[np.ndarray] = None
    similarity_metric: Optional[str] = None
    pooled: Optional[np.ndarray] = None
    labels: Optional[List[str]] = None
    options: Dict[str, Any] = field(default_factory=dict)

    def require(self, what: str, strategy: str) -> Any:
        value = getattr(self, what)
        if value is None:
            raise UserInputError(f"strategy {strategy!r} needs {what} statistics that this pass did not collect")
        return value


def collect_statistics(
    upstream,
    dataset: AudioDataset,
    needs: Iterable[str],
    batch_size: int = 4,
    device: str = "cpu",
    knn_k: int = 10,
    knn_frames: int = 4096,
    similarity_metric: str = "cka",
    seed: int = 0,
    progress: bool = False,
) -> LayerStatistics:
    """Run ``upstream`` over ``dataset`` once and accumulate the statistics named in ``needs``."""
    from ..similarity.metrics import BlockInfluence, CosineSimilarity, LinearCKA, MutualKNN

    needs = set(needs)
    unknown = needs - set(STATISTICS)
    if unknown:
        raise ValueError(f"unknown statistics {sorted(unknown)}; known: {', '.join(STATISTICS)}")
    if similarity_metric not in ("cka", "cosine"):
        raise UserInputError(f"`similarity_metric` {similarity_metric!r}: use cka or cosine")
    metrics: Dict[str, Any] = {}
    if "block_influence" in needs:
        metrics["block_influence"] = BlockInfluence()
    if "knn" in needs:
        metrics["knn"] = MutualKNN(k=knn_k, max_frames=knn_frames, seed=seed)
    if "similarity" in needs:
        metrics["similarity"] = LinearCKA() if similarity_metric == "cka" else CosineSimilarity()
    pooled: List[np.ndarray] = []
    ids_all: List[str] = []
    num_layers = len(encoder_of(upstream).layers)

    def pool(batch) -> None:
        ids_all.extend(batch.utterance_ids)
        if "pooled" in needs:
            for i in range(batch.batch_size):
                pooled.append(torch.stack([h.float().mean(0) for h in batch.utterance_frames(i)]).cpu().numpy())

    run = run_pass(upstream, dataset, [*metrics.values(), pool], batch_size, progress, "statistics")
    frames = run.num_frames
    stats = LayerStatistics(num_layers=num_layers, utterance_ids=ids_all, frames=frames)
    if "block_influence" in metrics:
        stats.block_influence = metrics["block_influence"].compute().numpy()
    if "knn" in metrics:
        if metrics["knn"].frames_seen <= knn_k:
            raise UserInputError(
                f"`data` gives {metrics['knn'].frames_seen} frames; k-NN alignment with k={knn_k} needs more than "
                f"{knn_k} (add audio or lower `knn_k`)"
            )
        knn = metrics["knn"].compute().numpy()
        stats.knn_block_influence = 1.0 - np.diagonal(knn, offset=1).copy()
    if "similarity" in metrics:
        stats.similarity = metrics["similarity"].compute().numpy()
        stats.similarity_metric = similarity_metric
    if "pooled" in needs:
        stats.pooled = np.stack(pooled).astype(np.float32)
    stats.options = {"knn_k": knn_k, "knn_frames": knn_frames, "similarity_metric": similarity_metric,
                     "utterances": len(ids_all), "frames": frames, "batch_size": batch_size}
    return stats


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------
def _read_label_csv(path: Path) -> List[Tuple[str, str]]:
    if not path.is_file():
        raise UserInputError(f"`labels` {path} does not exist; give a CSV with rows path,label")
    rows = []
    with path.open(newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            cells = [c.strip() for c in row]
            if not cells or all(not c for c in cells) or cells[0].startswith("#"):
                continue
            if line_no == 1 and [c.lower() for c in cells[:2]] == ["path", "label"]:
                continue
            if len(cells) != 2 or not cells[0] or not cells[1]:
                raise UserInputError(f"`labels` {path} line {line_no}: expected 'path,label', got {','.join(row)!r}")
            rows.append((cells[0], cells[1]))
    if not rows:
        raise UserInputError(f"`labels` {path} has no rows; write one 'path,label' per audio file")
    return rows


def load_labels(dataset: AudioDataset, labels_csv=None) -> List[str]:
    """One class label per file of ``dataset`` (same order).

    With ``labels_csv``: rows ``path,label`` (optional header ``path,label``); a relative path is looked up
    under the data folder, then beside the CSV. Without it: the data folder must hold one sub-folder per
    class. Every audio file needs a label and there must be at least two classes.
    """
    files = [Path(f).resolve() for f in dataset.files]
    root = Path(dataset.root).resolve() if dataset.root is not None else None
    if labels_csv is not None:
        csv_path = Path(labels_csv)
        table: Dict[Path, str] = {}
        missing_rows = []
        for raw, label in _read_label_csv(csv_path):
            p = Path(raw)
            candidates = [p] if p.is_absolute() else [c for c in ((root / p) if root else None, csv_path.parent / p) if c is not None]
            found = next((c.resolve() for c in candidates if c.is_file()), None)
            if found is None:
                missing_rows.append(raw)
                continue
            if found in table and table[found] != label:
                raise UserInputError(f"`labels` {csv_path}: {raw} is labelled both {table[found]!r} and {label!r}")
            table[found] = label
        if missing_rows:
            raise UserInputError(
                f"`labels` {csv_path} names {len(missing_rows)} file(s) that do not exist under `data` or beside the "
                f"CSV, e.g. {missing_rows[0]!r}; the labels do not match the audio"
            )
        unlabelled = [dataset.utterance_id(i) for i, f in enumerate(files) if f not in table]
        if unlabelled:
            raise UserInputError(
                f"{len(unlabelled)} of {len(files)} audio files in `data` have no label in {csv_path}, e.g. "
                f"{unlabelled[0]!r}; the labels do not match the audio (label every file or point `data` at the "
                "labelled files only)"
            )
        labels = [table[f] for f in files]
    else:
        if root is None:
            raise UserInputError("`data` is a file list; give class labels with `labels` CSV (rows path,label)")
        labels = []
        for i in range(len(files)):
            parts = Path(dataset.utterance_id(i)).parts
            if len(parts) < 2:
                raise UserInputError(
                    f"`data` {root}: {parts[0]!r} is not inside a class sub-folder; put each class in its own "
                    "sub-folder (DATA/CLASS/*.wav) or pass `labels` CSV with rows path,label"
                )
            labels.append(parts[0])
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise UserInputError(
            f"the labels name only one class ({classes[0]!r}); convexity and probes need at least two classes"
        )
    return labels
