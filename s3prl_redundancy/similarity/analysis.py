"""Layer-similarity analysis of an s3prl upstream: one pass, every metric, blocks, block influence, report files.

::

    from s3prl_redundancy.similarity.analysis import analyze

    report = analyze("hubert_local", "audio_dir/", ckpt="hubert.pt", metrics=("cosine", "cka", "debiased_cka", "mknn"))
    report.metrics["cka"]          # (L, L) numpy array, L = number of hidden states (0 = transformer input)
    report.blocks["cka"]           # find_blocks(...).to_dict()
    report.block_influence         # 1 - cos(h_l, h_{l+1}), l = 0..L-2, from the same pass
    report.write("out/")           # similarity.json, <metric>.csv / .png, similarity_all.png, block_influence.png

One forward pass (:class:`~.collector.HiddenStateCollector`) feeds all metrics; statistics that two
outputs share are computed once (``cka`` comes from the ``debiased_cka`` statistics when both are
asked for, block influence from the ``cosine`` sums). Metric classes come from the one registry,
:func:`s3prl_redundancy.plugins.similarity_metrics` (the built-ins and every plugin's
``s3prl_redundancy_similarity_metrics``).

Report files follow the output-folder policy of every command (:class:`s3prl_redundancy.io.OutputDir`,
command name ``similarity``): :func:`check_output_dir` validates the folder before any work, every file
(and the checkpoint folder :data:`PARTIAL_DIR`) is recorded as this command's, and ``force`` replaces only those.

Under ``torch.distributed`` (e.g. torchrun, see :mod:`s3prl_redundancy.distributed`) call
:func:`analyze` on every rank with the whole dataset: each rank processes its shard
(``AudioDataset.shard``), the statistics are all-reduced with ``metric.sync()``, and every rank
returns the report of the whole dataset.

Long runs checkpoint: with ``checkpoint_dir`` and ``checkpoint_every=N`` the metrics' ``state_dict``s
and the position are written atomically (``rank<r>.pt``) at the end of the batch that completes
every ``N`` utterances and after the last batch; ``resume=True`` continues from there with the same
batch boundaries, so the result is identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import distributed as dist_utils
from ..errors import UserInputError
from ..io import OutputDir, atomic_torch_save, dumps_matrix_json, json_ready
from .collector import CollectionStats, HiddenStateCollector, HiddenStatesBatch

__all__ = [
    "DEFAULT_METRICS",
    "RESULT_JSON",
    "ALL_FIGURE",
    "BLOCK_INFLUENCE_FIGURE",
    "PARTIAL_DIR",
    "metric_registry",
    "MetricSet",
    "SimilarityReport",
    "analyze",
    "existing_results",
    "result_names",
    "check_output_dir",
    "COMMAND",
    "clear_checkpoints",
]

DEFAULT_METRICS: Tuple[str, ...] = ("cosine", "cka", "debiased_cka", "mknn")
RESULT_JSON = "similarity.json"
ALL_FIGURE = "similarity_all.png"
BLOCK_INFLUENCE_FIGURE = "block_influence.png"
PARTIAL_DIR = ".partial"
COMMAND = "similarity"
"""The command name under which :class:`~s3prl_redundancy.io.OutputDir` records what an analysis wrote."""
_PARTIAL_FORMAT = "s3prl_redundancy.similarity.partial"
_PARTIAL_VERSION = 1


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------
def metric_registry() -> Dict[str, type]:
    """``{name: metric class}``: the registered metrics (built-ins and plugins), from the one registry."""
    from ..plugins import similarity_metrics

    return similarity_metrics()


class MetricSet:
    """The stateful metric instances of one analysis and how each output is read from them.

    ``outputs`` maps every output name (the requested metrics plus ``block_influence``) to
    ``(instance name, how)`` with ``how`` one of ``"compute"``, ``"compute_biased"`` (biased CKA from a
    ``DebiasedLinearCKA``) or ``"block_influence_from_cosine"``. The set is a collector consumer.
    """

    def __init__(self, names: Union[str, Iterable[str]] = DEFAULT_METRICS, options: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 registry: Optional[Mapping[str, type]] = None) -> None:
        from .metrics import (BlockInfluence, CosineSimilarity, DebiasedLinearCKA, LinearCKA, constructor_options,
                              parse_metric_names)

        registry = dict(metric_registry() if registry is None else registry)
        registry.setdefault("block_influence", BlockInfluence)
        self.names = parse_metric_names(names, registry, argument="metrics")
        options = {} if options is None else options
        if not isinstance(options, Mapping) or any(not isinstance(v, Mapping) for v in options.values()):
            raise UserInputError("must map metric names to option dicts, e.g. {'mknn': {'k': 10}}",
                                 argument="metric_options")
        stray = sorted(set(options) - set(registry))
        if stray:
            raise UserInputError(f"given for unknown metric(s) {stray}; known metrics: {', '.join(sorted(registry))}",
                                 argument="metric_options")
        options = {name: opts for name, opts in options.items() if name in self.names or name == "block_influence"}
        for name, opts in options.items():
            accepted = constructor_options(registry[name])
            bad = sorted(set(opts) - set(accepted))
            if bad:
                raise UserInputError(f"metric {name!r} does not take option(s) {bad}; it accepts: "
                                     f"{', '.join(accepted) or 'none'}", argument="metric_options")

        wanted = list(self.names)
        if "block_influence" not in wanted:
            wanted.append("block_influence")
        self.instances: Dict[str, Any] = {}
        self.outputs: Dict[str, Tuple[str, str]] = {}
        share_cka = (
            "cka" in wanted and "debiased_cka" in wanted and registry["cka"] is LinearCKA
            and registry["debiased_cka"] is DebiasedLinearCKA and not options.get("cka") and not options.get("debiased_cka")
        )
        bi_from_cosine = (
            "cosine" in wanted and registry["cosine"] is CosineSimilarity and registry["block_influence"] is BlockInfluence
            and not options.get("cosine") and not options.get("block_influence")
        )
        for name in wanted:
            if name == "cka" and share_cka:
                self.outputs[name] = ("debiased_cka", "compute_biased")
                continue
            if name == "block_influence" and bi_from_cosine:
                self.outputs[name] = ("cosine", "block_influence_from_cosine")
                continue
            try:
                self.instances[name] = registry[name](**dict(options.get(name, {})))
            except (TypeError, ValueError) as e:
                raise UserInputError(f"invalid options for metric {name!r}: {e}", argument="metric_options") from None
            self.outputs[name] = (name, "compute")

    # ---- consumer ----------------------------------------------------------------------
    def update(self, layers: Sequence[torch.Tensor], keys: Optional[torch.Tensor] = None) -> None:
        """Feed every instance the same frames (each metric computes its products in the frames' precision and
        accumulates in float64, see ``metrics.product_dtype``)."""
        for metric in self.instances.values():
            metric.update(layers, keys=keys)

    def __call__(self, batch: HiddenStatesBatch) -> None:
        self.update(batch.frames, batch.keys)

    # ---- life cycle ----------------------------------------------------------------------
    def sync(self, group: Any = None) -> None:
        for name in sorted(self.instances):  # same order on every rank
            self.instances[name].sync(group)

    def kind(self, name: str) -> str:
        source, how = self.outputs[name]
        if how != "compute":
            return "vector" if how == "block_influence_from_cosine" else "matrix"
        return getattr(self.instances[source], "kind", "matrix")

    def compute(self) -> Dict[str, torch.Tensor]:
        """Every output (requested metrics and ``block_influence``), float64 on the statistics' device."""
        from .metrics import block_influence_from_cosine

        cache: Dict[str, torch.Tensor] = {}
        out: Dict[str, torch.Tensor] = {}
        for name, (source, how) in self.outputs.items():
            metric = self.instances[source]
            try:
                if how == "compute_biased":
                    out[name] = metric.compute_biased()
                    continue
                if source not in cache:
                    cache[source] = metric.compute()
                value = cache[source]
                out[name] = block_influence_from_cosine(value) if how == "block_influence_from_cosine" else value
            except (ValueError, RuntimeError) as e:
                raise UserInputError(
                    f"cannot compute {name!r} from {metric.frames_seen if hasattr(metric, 'frames_seen') else '?'} frames: {e}. "
                    "Use more or longer audio in `dataset` or relax the metric's options (`metric_options`).",
                    argument="dataset",
                ) from None
        return out

    def config(self) -> Dict[str, Any]:
        """What makes two runs' statistics compatible (part of the checkpoint fingerprint)."""
        return {
            name: {"class": f"{type(m).__module__}.{type(m).__qualname__}", "config": json_ready(m.config())}
            for name, m in sorted(self.instances.items())
        }

    def options(self) -> Dict[str, Dict[str, Any]]:
        """The options of every output, as reported in ``similarity.json``."""
        result = {}
        for name, (source, how) in self.outputs.items():
            result[name] = dict(json_ready(self.instances[source].config()))
            if how != "compute":
                result[name]["from"] = f"{source}.{how}" if how == "compute_biased" else f"{source} (1 - super-diagonal)"
        return result

    def state_dict(self) -> Dict[str, Any]:
        return {name: m.state_dict() for name, m in self.instances.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != set(self.instances):
            raise ValueError(f"checkpoint holds metrics {sorted(state)}, this run has {sorted(self.instances)}")
        for name, metric in self.instances.items():
            metric.load_state_dict(state[name])


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def _matrix_list(m: Any) -> List[List[Optional[float]]]:
    return json_ready(np.asarray(m, dtype=np.float64))


def _vector_list(v: Any) -> List[Optional[float]]:
    return json_ready(np.asarray(v, dtype=np.float64).ravel())


def result_names(metric_names: Iterable[str]) -> List[str]:
    """The files :meth:`SimilarityReport.write` writes for these metrics."""
    names = [RESULT_JSON, ALL_FIGURE, BLOCK_INFLUENCE_FIGURE]
    for name in metric_names:
        names += [f"{name}.csv", f"{name}.png"]
    return names


def existing_results(out_dir: Union[str, os.PathLike], metric_names: Optional[Iterable[str]] = None) -> List[str]:
    """Result files that a similarity analysis wrote into ``out_dir`` and that are still there (those of
    ``metric_names`` only, if given); the checkpoint folder is not a result."""
    found = [n for n in OutputDir(out_dir, COMMAND).previous_outputs() if n != PARTIAL_DIR]
    if metric_names is not None:
        wanted = set(result_names(metric_names))
        found = [n for n in found if n in wanted]
    return sorted(found, key=lambda n: n != RESULT_JSON)  # the main result first, as messages list it


def check_output_dir(out_dir: Union[str, os.PathLike], force: bool = False, resume: bool = False,
                     outputs: Iterable[str] = ()) -> OutputDir:
    """The output folder of an analysis, checked before any work (see :class:`~s3prl_redundancy.io.OutputDir`).

    Results of a previous analysis are refused unless ``force``; an interrupted run's checkpoint
    (:data:`PARTIAL_DIR`) needs ``resume`` (continue it) or ``force`` (discard it). ``outputs`` are the names
    this run will write, refused by name if someone else's files are there.
    """
    path = Path(out_dir)
    found = existing_results(path)
    if found and not force:
        shown = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
        raise UserInputError(f"{path} already holds similarity results ({shown}); pass `force=True` to overwrite them "
                             "or choose another folder", argument="out_dir")
    partial = path / PARTIAL_DIR
    if partial.is_dir() and any(partial.iterdir()) and not (resume or force):
        raise UserInputError(
            f"{path} holds the checkpoint of an interrupted run ({partial}); pass `resume=True` to continue it "
            "(same data and options) or `force=True` to discard it and start over", argument="out_dir")
    # what remains of a previous run is accepted now: with force (and no resume) prepare() deletes all of it,
    # with resume the checkpoint is kept and the results are replaced one by one
    out = OutputDir(path, COMMAND, force=force and not resume, resume=resume or not force, argument="out_dir")
    return out.check(outputs)
def clear_checkpoints(checkpoint_dir: Union[str, os.PathLike]) -> None:
    """Remove a checkpoint folder written by :func:`analyze` (after the results are safely written)."""
    path = Path(checkpoint_dir)
    if path.is_dir():
        shutil.rmtree(path)


@dataclass
class SimilarityReport:
    """Result of :func:`analyze`.

    ``layers`` are the hidden-state indices ``0..L-1`` (0 = transformer input, as in s3prl);
    ``metrics`` maps each matrix metric to an ``(L, L)`` float64 array; ``blocks`` each matrix metric
    to :meth:`~.blocks.BlockStructure.to_dict` (``None`` if the matrix has NaN); ``block_influence``
    is ``1 - cos(h_l, h_{l+1})`` for ``l = 0..L-2``; ``vectors`` holds other vector-valued plugin metrics.
    ``timings`` (seconds: ``pass``, ``compute``, ``blocks``) are informational and not written.
    """

    upstream: str
    num_utterances: int
    num_frames: int
    layers: List[int]
    metrics: Dict[str, np.ndarray]
    blocks: Dict[str, Optional[Dict[str, Any]]]
    block_influence: List[Optional[float]]
    vectors: Dict[str, List[Optional[float]]] = field(default_factory=dict)
    metric_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict, compare=False)
    """Seconds spent by this process: ``pass`` (forward + metric updates), ``compute`` (sync + compute), ``blocks``;
    not written to ``similarity.json`` (which stays identical for identical inputs)."""

    def to_dict(self) -> Dict[str, Any]:
        """The content of ``similarity.json`` (NaN / inf become ``null``)."""
        out = {
            "upstream": self.upstream,
            "num_utterances": int(self.num_utterances),
            "num_frames": int(self.num_frames),
            "layers": [int(i) for i in self.layers],
            "metrics": {name: _matrix_list(m) for name, m in self.metrics.items()},
            "blocks": {name: json_ready(b) for name, b in self.blocks.items()},
            "block_influence": _vector_list(self.block_influence),
        }
        if self.vectors:
            out["vectors"] = {name: _vector_list(v) for name, v in self.vectors.items()}
        if self.metric_options:
            out["metric_options"] = json_ready(self.metric_options)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SimilarityReport":
        def arr(m):
            return np.array([[np.nan if v is None else v for v in row] for row in m], dtype=np.float64)

        return cls(
            upstream=data["upstream"],
            num_utterances=int(data["num_utterances"]),
            num_frames=int(data["num_frames"]),
            layers=list(data["layers"]),
            metrics={k: arr(v) for k, v in data["metrics"].items()},
            blocks=dict(data["blocks"]),
            block_influence=list(data["block_influence"]),
            vectors=dict(data.get("vectors", {})),
            metric_options=dict(data.get("metric_options", {})),
        )

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "SimilarityReport":
        """Read ``similarity.json`` (a file or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / RESULT_JSON
        return cls.from_dict(json.loads(path.read_text()))

    def dataframe(self, metric: str):
        """The matrix of ``metric`` as a pandas DataFrame with layer labels."""
        import pandas as pd

        frame = pd.DataFrame(np.asarray(self.metrics[metric], dtype=np.float64), index=self.layers, columns=self.layers)
        frame.index.name = "layer"
        return frame

    def write(self, out_dir: Union[str, os.PathLike, OutputDir], force: bool = False, dpi: int = 120) -> Dict[str, Path]:
        """Write ``similarity.json``, ``<metric>.csv`` and ``<metric>.png`` per matrix metric, ``similarity_all.png``
        and ``block_influence.png``; every file atomically, ``similarity.json`` last.

        An ``out_dir`` that already holds similarity results is refused unless ``force``; with ``force``
        result files of metrics this report does not have are removed, so the folder is one consistent result.
        ``out_dir`` may be the :class:`~s3prl_redundancy.io.OutputDir` that :func:`check_output_dir` returned.
        """
        from .plots import plot_all, plot_block_influence, plot_heatmap

        if isinstance(out_dir, OutputDir):
            out = out_dir
        else:  # a resumed run's .partial is expected here
            out = check_output_dir(out_dir, force=force, resume=True, outputs=result_names(self.metrics))
        out.prepare()
        mine = set(result_names(self.metrics))
        for stale in existing_results(out.path):
            if stale not in mine:
                out.remove(stale)
        written: Dict[str, Path] = {}
        blocks = {name: [tuple(b) for b in spec["blocks"]] for name, spec in self.blocks.items() if spec}
        for name, matrix in self.metrics.items():
            written[f"{name}.csv"] = out.write_bytes(f"{name}.csv", self.dataframe(name).to_csv().encode())
            title = f"{name}: {self.upstream}\n{self.num_utterances} utterances, {self.num_frames} frames"
            written[f"{name}.png"] = Path(plot_heatmap(matrix, title, out.file(f"{name}.png"), blocks=blocks.get(name), dpi=dpi))
        panels: Dict[str, Any] = dict(self.metrics)
        bi = np.array([np.nan if v is None else v for v in self.block_influence], dtype=np.float64)
        if bi.size:
            panels["block_influence"] = bi
            written[BLOCK_INFLUENCE_FIGURE] = Path(plot_block_influence(
                bi, out.file(BLOCK_INFLUENCE_FIGURE), title=f"block influence: {self.upstream}", dpi=dpi))
        written[ALL_FIGURE] = Path(plot_all(panels, out.file(ALL_FIGURE), blocks=blocks, dpi=dpi))
        written[RESULT_JSON] = out.write_text(RESULT_JSON, dumps_matrix_json(self.to_dict()) + "\n")
        return written


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
def _checkpoint_path(checkpoint_dir: Path, rank: int) -> Path:
    return checkpoint_dir / f"rank{rank}.pt"


def _dataset_fingerprint(dataset: Any) -> Dict[str, Any]:
    info: Dict[str, Any] = {"items": len(dataset)}
    if hasattr(dataset, "utterance_id"):
        digest = hashlib.sha256()
        for i in range(len(dataset)):
            digest.update(dataset.utterance_id(i).encode() + b"\0")
        info["utterance_ids_sha256"] = digest.hexdigest()
    if getattr(dataset, "max_seconds", None):
        info["max_seconds"] = float(dataset.max_seconds)
    return info


def _source_id(path: Optional[Union[str, os.PathLike]]) -> Optional[str]:
    """A path as an absolute path (URLs as given), so that a resumed run may spell it differently."""
    if path is None:
        return None
    text = str(path)
    return text if text.startswith(("http://", "https://")) else str(Path(text).resolve())


def _run_fingerprint(upstream_name: str, ckpt: Any, model_config: Any, metric_set: "MetricSet", batch_size: int,
                     ctx: Any, local_data: Any) -> Dict[str, Any]:
    """What a checkpoint must match to be resumed: the same model, metrics, batching, sharding and data."""
    return {
        "upstream": upstream_name,
        "ckpt": _source_id(ckpt),
        "ckpt_bytes": Path(ckpt).stat().st_size if ckpt is not None and Path(ckpt).is_file() else None,
        "model_config": _source_id(model_config),
        "metrics": metric_set.config(),
        "batch_size": int(batch_size),
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "data": _dataset_fingerprint(local_data),
    }


def _load_partial(path: Path, fingerprint: Mapping[str, Any], device: torch.device) -> Dict[str, Any]:
    from ..checkpoints import load_checkpoint

    state = load_checkpoint(path, what="similarity checkpoint")  # torch.load(weights_only=True)
    if not isinstance(state, dict) or state.get("format") != _PARTIAL_FORMAT or state.get("version") != _PARTIAL_VERSION:
        raise UserInputError(f"{path} is not a similarity checkpoint of this version; pass `force=True` and run it "
                             "`resume=False` to start over", argument="resume")
    if state["fingerprint"] != fingerprint:
        diff = sorted(k for k in set(fingerprint) | set(state["fingerprint"]) if fingerprint.get(k) != state["fingerprint"].get(k))
        raise UserInputError(
            f"the checkpoint {path} belongs to a different run (differs in: {', '.join(diff)}); resume with the same "
            "upstream, checkpoint, data, metrics, options, batch size and number of processes, or pass `force=True` "
            "and run it `resume=False` to start over", argument="resume"
        )
    for metric_state in state["metrics"].values():
        metric_state["state"] = {k: v.to(device) for k, v in metric_state["state"].items()}
    return state


# --------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------
def analyze(
    upstream: Any,
    dataset: Any,
    metrics: Union[str, Sequence[str]] = DEFAULT_METRICS,
    batch_size: int = 8,
    device: Any = "cpu",
    metric_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    progress: bool = True,
    *,
    upstream_name: Optional[str] = None,
    ckpt: Optional[Union[str, os.PathLike]] = None,
    model_config: Optional[Union[str, os.PathLike]] = None,
    consumers: Iterable[Any] = (),
    plugin_manager: Any = None,
    checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: Optional[int] = None,
    resume: bool = False,
    shard: bool = True,
    num_workers: int = 0,
) -> SimilarityReport:
    """Layer similarity of ``upstream``'s hidden states over ``dataset`` in one pass.

    Args:
        upstream: an s3prl upstream module (hub entry, ``S3PRLUpstream``, or any module with that contract)
            or an ``s3prl.hub`` name (then built from ``ckpt`` / ``model_config``).
        dataset: an :class:`~s3prl_redundancy.audio.AudioDataset`, any map-style dataset of
            ``(utterance_id, waveform)`` or waveforms, or a folder / file list for ``AudioDataset.from_data``.
        metrics: names (or a comma-separated string); ``block_influence`` is always computed.
        batch_size: utterances per forward.
        device: where the upstream runs and the statistics live.
        metric_options: ``{metric: {option: value}}``, e.g. ``{"mknn": {"k": 10, "max_frames": 4096, "seed": 0}}``.
        progress: tqdm bar over utterances (on rank 0 only).
        upstream_name: the name in the report (default: the hub name or the class).
        consumers: extra collector consumers fed from the same pass.
        plugin_manager: whose ``s3prl_redundancy_on_hidden_states`` hook is called per batch (default the
            project's; ``False`` for none).
        checkpoint_dir / checkpoint_every / resume: see the module docstring. The caller removes
            ``checkpoint_dir`` (:func:`clear_checkpoints`) once the results are saved.
        shard: under an initialised ``torch.distributed`` group, process only this rank's shard and sync.
        num_workers: DataLoader workers for reading audio (0: in this process).
    """
    ctx = dist_utils.current() if shard else dist_utils.DistContext()
    dev, metric_set, dataset = _validate(device, ctx, metrics, metric_options, checkpoint_every, dataset)
    upstream, upstream_name = _prepare_upstream(upstream, upstream_name, ckpt, model_config, dev)
    dataset = _long_enough(dataset, upstream)
    if ctx.distributed:
        local_data, indices = dist_utils.shard_dataset(dataset, ctx.rank, ctx.world_size)
    else:
        local_data, indices = dataset, list(range(len(dataset)))

    checkpoints = None
    if checkpoint_dir is not None:
        fingerprint = _run_fingerprint(upstream_name, ckpt, model_config, metric_set, batch_size, ctx, local_data)
        checkpoints = _Checkpoints(Path(checkpoint_dir), checkpoint_every, fingerprint, ctx, len(local_data))
        if resume:
            checkpoints.resume(metric_set, dev)

    collector = HiddenStateCollector(upstream, [metric_set, *consumers], device=dev, plugin_manager=plugin_manager)
    started = time.perf_counter()
    stats = collector.run(
        local_data, batch_size=batch_size, indices=indices, start=checkpoints.position if checkpoints else 0,
        progress=progress and ctx.is_main, num_workers=num_workers, description=f"similarity {upstream_name}",
        on_batch_end=(lambda pos, st: checkpoints.maybe_save(pos, st, metric_set)) if checkpoints else None,
    )
    timings = {"pass": time.perf_counter() - started}
    started = time.perf_counter()
    carried = checkpoints.carried if checkpoints else CollectionStats()
    num_utterances, num_frames = dist_utils.all_reduce_sum(
        [carried.num_utterances + stats.num_utterances, carried.num_frames + stats.num_frames]
    )
    with torch.no_grad():
        if ctx.distributed:
            metric_set.sync()
        if num_frames == 0:
            raise UserInputError(
                f"no frames to analyse: {num_utterances} utterance(s) gave 0 frames (each needs at least half a frame, "
                f"{(collector.rate or 320) // 2} samples at 16 kHz); check the audio of `dataset` and its length limit",
                argument="dataset",
            )
        values = metric_set.compute()
    timings["compute"] = time.perf_counter() - started
    started = time.perf_counter()
    report = _build_report(metric_set, values, upstream_name, num_utterances, num_frames)
    timings["blocks"] = time.perf_counter() - started
    report.timings.update(timings)
    return report


def _validate(device: Any, ctx: Any, metrics: Any, metric_options: Any, checkpoint_every: Optional[int],
              dataset: Any) -> Tuple[torch.device, MetricSet, Any]:
    """Every cheap check of :func:`analyze`, before any model is loaded: the device, metric names and options,
    ``checkpoint_every`` and the dataset (a path becomes an ``AudioDataset``)."""
    from ..audio import AudioDataset
    from ..upstream_loading import resolve_device

    dev = resolve_device(device, local_rank=ctx.local_rank if ctx.distributed else None)
    metric_set = MetricSet(metrics, metric_options)
    if checkpoint_every is not None and int(checkpoint_every) < 1:
        raise UserInputError(f"must be >= 1 utterance, got {checkpoint_every}", argument="checkpoint_every")
    if isinstance(dataset, (str, os.PathLike)):
        dataset = AudioDataset.from_data(dataset)
    return dev, metric_set, dataset


def _long_enough(dataset: Any, upstream: Any) -> Any:
    """An audio dataset without the clips too short for ``upstream``'s CNN front end (every rank drops the same)."""
    from ..audio import AudioDataset
    from ..families import module_min_samples

    if not isinstance(dataset, AudioDataset):
        return dataset
    return dataset.without_short_clips(module_min_samples(upstream))


def _prepare_upstream(upstream: Any, upstream_name: Optional[str], ckpt: Any, model_config: Any,
                      dev: torch.device) -> Tuple[Any, str]:
    """The upstream module in eval mode on ``dev`` (built from a hub name if one is given) and its report name."""
    from ..upstream_loading import load_upstream
    from ..upstream_loading import upstream_name as name_of

    if isinstance(upstream, str):
        upstream_name = upstream_name or upstream
        upstream = load_upstream(upstream, ckpt=ckpt, model_config=model_config, device=dev)
    else:
        upstream = upstream.to(dev)
        upstream.eval()
    return upstream, upstream_name or name_of(upstream)


class _Checkpoints:
    """The resume file of one rank (``rank<r>.pt`` in ``folder``): loading it and saving it during the pass.

    ``position`` (the next utterance of this rank's shard) and ``carried`` (the counts of the utterances
    before it) come from the loaded checkpoint; they are 0 for a fresh run.
    """

    def __init__(self, folder: Path, every: Optional[int], fingerprint: Dict[str, Any], ctx: Any, total: int) -> None:
        self.folder, self.every, self.fingerprint, self.ctx, self.total = folder, every, fingerprint, ctx, total
        self.path = _checkpoint_path(folder, ctx.rank)
        self.position, self.carried = 0, CollectionStats()
        self.last_saved = 0

    def resume(self, metric_set: MetricSet, device: torch.device) -> None:
        """Load this rank's checkpoint into ``metric_set`` (all ranks agree that they could, or all raise)."""
        error: Optional[UserInputError] = None
        try:
            if self.path.is_file():
                state = _load_partial(self.path, self.fingerprint, device)
                metric_set.load_state_dict(state["metrics"])
                self.position = self.last_saved = int(state["position"])
                self.carried = CollectionStats(int(state["num_utterances"]), int(state["num_frames"]),
                                               int(state["num_batches"]))
            elif self.folder.is_dir() and any(self.folder.glob("rank*.pt")):
                raise UserInputError(
                    f"{self.folder} has no checkpoint for rank {self.ctx.rank} of {self.ctx.world_size}; resume with the "
                    "number of processes that wrote it, or pass `force=True` and run it `resume=False` to start over",
                    argument="resume")
        except UserInputError as e:
            error = e
        if not dist_utils.all_ok(error is None):
            raise error or UserInputError("another rank could not resume its checkpoint (see its message); nothing "
                                          "was computed", argument="resume")
        if self.position == 0 and self.ctx.is_main and not self.path.is_file():
            print(f"no checkpoint in {self.folder}: starting from the first utterance", flush=True)

    def maybe_save(self, pos: int, stats: CollectionStats, metric_set: MetricSet) -> None:
        """After a batch: save when ``every`` utterances have passed since the last save, and after the last batch."""
        if not self.every or not (pos - self.last_saved >= int(self.every) or pos == self.total):
            return
        atomic_torch_save(
            {
                "format": _PARTIAL_FORMAT,
                "version": _PARTIAL_VERSION,
                "fingerprint": self.fingerprint,
                "position": pos,
                "num_utterances": self.carried.num_utterances + stats.num_utterances,
                "num_frames": self.carried.num_frames + stats.num_frames,
                "num_batches": self.carried.num_batches + stats.num_batches,
                "metrics": metric_set.state_dict(),
            },
            self.path,
        )
        self.last_saved = pos


def _build_report(metric_set: MetricSet, values: Mapping[str, torch.Tensor], upstream_name: str,
                  num_utterances: int, num_frames: int) -> SimilarityReport:
    from .blocks import find_blocks

    matrices: Dict[str, np.ndarray] = {}
    vectors: Dict[str, List[Optional[float]]] = {}
    for name, value in values.items():
        array = value.detach().to("cpu", torch.float64).numpy()
        if name == "block_influence":
            continue
        if metric_set.kind(name) == "vector" or array.ndim == 1:
            vectors[name] = _vector_list(array)
        else:
            matrices[name] = array
    num_layers = next(iter(matrices.values())).shape[0] if matrices else int(values["block_influence"].numel()) + 1
    blocks: Dict[str, Optional[Dict[str, Any]]] = {}
    for name, matrix in matrices.items():
        if not np.isfinite(matrix).all():
            warnings.warn(f"{name}: the matrix has NaN entries (a layer without variance); no blocks computed", RuntimeWarning)
            blocks[name] = None
            continue
        blocks[name] = find_blocks(matrix).to_dict()
    return SimilarityReport(
        upstream=upstream_name,
        num_utterances=int(num_utterances),
        num_frames=int(num_frames),
        layers=list(range(num_layers)),
        metrics=matrices,
        blocks=blocks,
        block_influence=_vector_list(values["block_influence"].detach().cpu()),
        vectors=vectors,
        metric_options={k: v for k, v in metric_set.options().items()},
    )
