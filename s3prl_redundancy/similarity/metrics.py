"""Streaming layer-by-layer similarity metrics.

Every metric follows the same torchmetrics-like life cycle::

    metric = LinearCKA()
    for batch in loader:
        hidden = upstream(batch)                       # L tensors (B, T, D)
        frames = [h[mask] for h in hidden]             # L tensors (N, D), padding removed
        metric.update(frames, keys=frame_ids)          # keys optional
    metric.sync()                                      # no-op unless torch.distributed is up
    matrix = metric.compute()                          # (L, L) float64

All statistics are accumulated in float64 on the device of the first input, whatever
the input dtype (float32, bfloat16, ...).  Per-batch products are computed in the inputs'
precision (float64 inputs: float64; float32 and narrower: float32, the precision the hidden
states have anyway) and summed into the float64 state; see :func:`product_dtype`.
``merge`` combines two instances as if one had seen both streams, ``sync`` does the same
across ``torch.distributed`` ranks, and ``state_dict`` / ``load_state_dict`` let a long run
checkpoint and resume.

The metrics (see ``docs/similarity.md`` for the definitions):

* ``cosine`` -- mean over frames of the cosine between the two layers' frame vectors;
* ``cka`` -- linear CKA with frames as examples, exact, from streamed feature-space sums;
* ``debiased_cka`` -- the same with the unbiased HSIC estimator of Song et al. (2012);
* ``mknn`` -- mutual k-nearest-neighbour alignment (Huh et al., 2024) on a seeded,
  batching-independent sample of frames;
* ``block_influence`` -- ``1 - cos(h_l, h_{l+1})`` per transformer layer (Men et al., 2024,
  as used for pruning by Dorszewski et al., 2024); an ``(L-1,)`` vector.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union

import torch

from .functional import (check_frames_for_cka, hsic_debiased, knn_indices, mutual_knn_overlap, normalise_hsic, product_dtype,
                         raise_non_finite, row_cosine_sum, unit_rows)

__all__ = [
    "LayerSimilarityMetric",
    "CosineSimilarity",
    "BlockInfluence",
    "LinearCKA",
    "DebiasedLinearCKA",
    "MutualKNN",
    "BUILTIN_METRICS",
    "parse_metric_names",
    "constructor_options",
    "hash_keys",
    "block_influence_from_cosine",
    "product_dtype",
]

_F64 = torch.float64
_STATE_VERSION = 1


# --------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------
class LayerSimilarityMetric(abc.ABC):
    """Streaming similarity between all pairs of layers of one model.

    Subclasses implement ``_init_state``, ``_update`` and ``_compute``; the default
    ``merge`` / ``sync`` sum every tensor of ``self._state`` (sufficient statistics that
    are plain sums), subclasses with other statistics override ``_merge_state`` and
    ``_sync_state``.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "matrix"  # "matrix": (L, L); "vector": (L - 1,)
    higher_is_more_similar: ClassVar[bool] = True
    min_layers: ClassVar[int] = 1

    def __init__(self) -> None:
        self._layer_dims: Optional[Tuple[int, ...]] = None
        self._state: Dict[str, torch.Tensor] = {}
        self._frames_seen = 0
        self._synced = False

    # ---- public API -------------------------------------------------------------------
    def config(self) -> Dict[str, Any]:
        """Options that change the result; two instances can only be merged if equal."""
        return {}

    @property
    def layer_dims(self) -> Optional[Tuple[int, ...]]:
        """Width of every layer, known after the first non-empty ``update``."""
        return self._layer_dims

    @property
    def num_layers(self) -> Optional[int]:
        return None if self._layer_dims is None else len(self._layer_dims)

    @property
    def device(self) -> Optional[torch.device]:
        tensors = self._tensors()
        return tensors[0].device if tensors else None

    @property
    def frames_seen(self) -> int:
        """Number of frames passed to ``update`` on this instance (merges included)."""
        return self._frames_seen

    def update(self, layers: Sequence[torch.Tensor], keys: Optional[torch.Tensor] = None) -> None:
        """Add one batch of frames.

        Args:
            layers: L tensors of shape ``(N, D_l)``; row ``t`` of every tensor is the same
                frame (padding removed by the caller).
            keys: optional ``(N,)`` int64 stable frame identifiers.  Only sampling metrics
                (``mknn``) use them; without keys a running frame counter is used, which is
                independent of the batching but not of the sharding across ranks.
        """
        if self._synced:
            raise RuntimeError(
                f"{type(self).__name__}: update() after sync(); the statistics are already "
                "global. Call reset() to start a new measurement."
            )
        layers = self._check_layers(layers)
        n = layers[0].shape[0]
        if keys is None:
            keys = torch.arange(
                self._frames_seen, self._frames_seen + n, dtype=torch.int64, device=layers[0].device
            )
        else:
            keys = self._check_keys(keys, n, layers[0].device)
        self._frames_seen += n
        if n == 0:
            return
        if self._layer_dims is None:
            self._layer_dims = tuple(int(h.shape[1]) for h in layers)
            self._init_state(self._layer_dims, layers[0].device)
        elif self.device != layers[0].device:
            with torch.no_grad():
                self._flush()
            self._move_to(layers[0].device)
        with torch.no_grad():
            self._update(layers, keys)

    def compute(self) -> torch.Tensor:
        """The similarity matrix ``(L, L)`` (or vector ``(L-1,)``), float64."""
        if self._layer_dims is None:
            raise RuntimeError(f"{type(self).__name__}: no frames seen; call update() before compute()")
        with torch.no_grad():
            self._flush()
            return self._compute()

    def reset(self) -> None:
        """Forget every statistic (the configuration is kept)."""
        self._layer_dims = None
        self._state = {}
        self._frames_seen = 0
        self._synced = False

    def merge(self, other: "LayerSimilarityMetric") -> "LayerSimilarityMetric":
        """Add the statistics of ``other`` to ``self`` as if ``self`` had seen both streams."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        if other.config() != self.config():
            raise ValueError(
                f"cannot merge {type(self).__name__} instances with different options: "
                f"{self.config()} vs {other.config()}"
            )
        if other._layer_dims is not None:
            with torch.no_grad():
                self._flush()
                other._flush()
            if self._layer_dims is None:
                self._layer_dims = other._layer_dims
                self._init_state(self._layer_dims, other.device)
            elif self._layer_dims != other._layer_dims:
                raise ValueError(
                    f"cannot merge statistics of layers {list(other._layer_dims)} into "
                    f"layers {list(self._layer_dims)}"
                )
            with torch.no_grad():
                self._merge_state(other)
        self._frames_seen += other._frames_seen
        return self

    def sync(self, group: Any = None) -> None:
        """Replace the local statistics by the global ones on every rank.

        A no-op when ``torch.distributed`` is not initialised (or has one rank).  Call it
        once, after the last ``update``, on every rank of ``group``; a second call is a
        no-op and ``update`` afterwards raises.  Use a backend that supports the device
        of the statistics (gloo for CPU, nccl for CUDA).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_world_size(group) == 1 or self._synced:
            return
        with torch.no_grad():
            self._flush()
            if self._sync_layout(group):
                self._sync_state(group)
        self._synced = True

    def state_dict(self) -> Dict[str, Any]:
        """Plain tensors (cloned) and numbers; ``torch.save``-able."""
        return {
            "metric": self.name,
            "version": _STATE_VERSION,
            "config": dict(self.config()),
            "layer_dims": None if self._layer_dims is None else list(self._layer_dims),
            "frames_seen": int(self._frames_seen),
            "synced": bool(self._synced),
            "state": {} if self._layer_dims is None else self._export_state(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a ``state_dict``; the tensors stay on the device they were loaded to."""
        if state.get("metric") != self.name:
            raise ValueError(f"state of metric {state.get('metric')!r} cannot be loaded into {self.name!r}")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r} (expected {_STATE_VERSION})")
        if state["config"] != self.config():
            raise ValueError(f"state was saved with options {state['config']}, this metric has {self.config()}")
        self.reset()
        self._frames_seen = int(state["frames_seen"])
        self._synced = bool(state.get("synced", False))
        if state["layer_dims"] is not None:
            self._layer_dims = tuple(int(d) for d in state["layer_dims"])
            tensors = state["state"]
            device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
            self._init_state(self._layer_dims, device)
            self._import_state(tensors)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({opts})"

    # ---- hooks --------------------------------------------------------------------------
    def _check_dims(self, dims: Tuple[int, ...]) -> None:
        """Raise ``ValueError`` if the metric cannot handle these layer widths."""

    @abc.abstractmethod
    def _init_state(self, dims: Tuple[int, ...], device: torch.device) -> None: ...

    @abc.abstractmethod
    def _update(self, layers: List[torch.Tensor], keys: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def _compute(self) -> torch.Tensor: ...

    def _flush(self) -> None:
        """Fold work deferred by ``_update`` (buffered frames) into ``self._state``.

        Called before anything reads the state: ``compute``, ``merge`` (both sides), ``sync``
        and a move to another device.  ``state_dict`` exports deferred work as it is instead,
        so that a resumed run groups its work exactly like an uninterrupted one.
        """

    def _tensors(self) -> List[torch.Tensor]:
        return list(self._state.values())

    def _move_to(self, device: torch.device) -> None:
        self._state = {k: v.to(device) for k, v in self._state.items()}

    def _merge_state(self, other: "LayerSimilarityMetric") -> None:
        device = self.device
        for key, value in self._state.items():
            value += other._state[key].to(device)

    def _sync_state(self, group: Any) -> None:
        import torch.distributed as dist

        for key in sorted(self._state):
            dist.all_reduce(self._state[key], op=dist.ReduceOp.SUM, group=group)

    def _export_state(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._state.items()}

    def _import_state(self, tensors: Dict[str, torch.Tensor]) -> None:
        expected = self._state
        if set(tensors) != set(expected):
            raise ValueError(f"state tensors {sorted(tensors)} do not match the expected {sorted(expected)}")
        for key, value in tensors.items():
            if value.shape != expected[key].shape or value.dtype != expected[key].dtype:
                raise ValueError(
                    f"state tensor {key!r}: got {tuple(value.shape)} {value.dtype}, expected "
                    f"{tuple(expected[key].shape)} {expected[key].dtype}"
                )
        self._state = {k: v.detach().clone().to(expected[k].device) for k, v in tensors.items()}

    # ---- helpers ------------------------------------------------------------------------
    def _n(self) -> int:
        return int(self._state["n"].item())

    def _check_layers(self, layers: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if isinstance(layers, torch.Tensor):
            if layers.dim() != 3:
                raise ValueError(
                    f"expected a sequence of (N, D) tensors or an (L, N, D) tensor, got shape {tuple(layers.shape)}"
                )
            layers = list(layers.unbind(0))
        layers = list(layers)
        if len(layers) < self.min_layers:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_layers} layers, got {len(layers)}")
        for i, h in enumerate(layers):
            if not isinstance(h, torch.Tensor) or h.dim() != 2:
                shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
                raise ValueError(f"layer {i}: expected an (N, D) tensor of frames, got {shape}")
            if not (h.is_floating_point()):
                raise ValueError(f"layer {i}: expected floating point features, got {h.dtype}")
        n = layers[0].shape[0]
        if any(h.shape[0] != n for h in layers):
            raise ValueError(f"all layers must have the same number of frames, got {[h.shape[0] for h in layers]}")
        device = layers[0].device
        if any(h.device != device for h in layers):
            raise ValueError("all layers must be on the same device")
        dims = tuple(int(h.shape[1]) for h in layers)
        if self._layer_dims is not None and dims != self._layer_dims:
            raise ValueError(f"layer widths changed: expected {list(self._layer_dims)}, got {list(dims)}")
        self._check_dims(dims)
        return layers

    @staticmethod
    def _check_keys(keys: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        if not isinstance(keys, torch.Tensor) or keys.dim() != 1 or keys.shape[0] != n:
            shape = tuple(keys.shape) if isinstance(keys, torch.Tensor) else type(keys).__name__
            raise ValueError(f"keys must be an ({n},) int64 tensor, got {shape}")
        if keys.dtype != torch.int64:
            if keys.is_floating_point() or keys.is_complex() or keys.dtype == torch.bool:
                raise ValueError(f"keys must be integers, got {keys.dtype}")
            keys = keys.to(torch.int64)
        return keys.to(device)

    def _comm_device(self, group: Any) -> torch.device:
        import torch.distributed as dist

        if self.device is not None:
            return self.device
        if dist.get_backend(group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _sync_layout(self, group: Any) -> bool:
        """Agree on the layer widths across ranks; ranks without data get empty state.

        Returns False when no rank has seen any frame.
        """
        import torch.distributed as dist

        world = dist.get_world_size(group)
        device = self._comm_device(group)
        num_local = 0 if self._layer_dims is None else len(self._layer_dims)
        local_l = torch.tensor([num_local], dtype=torch.int64, device=device)
        counts = [torch.zeros_like(local_l) for _ in range(world)]
        dist.all_gather(counts, local_l, group=group)
        nums = [int(c.item()) for c in counts]
        present = sorted({c for c in nums if c})
        if not present:
            return False
        if len(present) > 1:
            raise RuntimeError(f"{type(self).__name__}.sync(): ranks disagree on the number of layers: {nums}")
        num_layers = present[0]
        local = torch.tensor(list(self._layer_dims or (0,) * num_layers), dtype=torch.int64, device=device)
        gathered = [torch.zeros_like(local) for _ in range(world)]
        dist.all_gather(gathered, local, group=group)
        dims_per_rank = [tuple(int(x) for x in g.tolist()) for g in gathered]
        reference = next(d for d in dims_per_rank if any(d))
        if any(any(d) and d != reference for d in dims_per_rank):
            raise RuntimeError(f"{type(self).__name__}.sync(): ranks disagree on the layer widths: {dims_per_rank}")
        if self._layer_dims is None:
            self._layer_dims = reference
            self._init_state(reference, device)
        return True


# --------------------------------------------------------------------------------------
# Cosine similarity and block influence
# --------------------------------------------------------------------------------------
class _SameWidthMixin:
    def _check_dims(self, dims: Tuple[int, ...]) -> None:
        if len(set(dims)) > 1:
            raise ValueError(
                f"{type(self).__name__} compares frame vectors of different layers directly and "
                f"needs all layers to have the same width, got {list(dims)}"
            )


class CosineSimilarity(_SameWidthMixin, LayerSimilarityMetric):
    """``S_ij = mean_t cos(h_i[t], h_j[t])``; an all-zero frame vector has cosine 0.

    Statistics: ``n`` and the ``(L, L)`` sum of cosines.  Per batch one ``(L, N*D)`` float64
    matmul of the unit rows (normalised in the product dtype).
    """

    name = "cosine"

    def _init_state(self, dims: Tuple[int, ...], device: torch.device) -> None:
        num_layers = len(dims)
        self._state = {
            "n": torch.zeros((), dtype=torch.int64, device=device),
            "cos_sum": torch.zeros(num_layers, num_layers, dtype=_F64, device=device),
        }

    def _update(self, layers: List[torch.Tensor], keys: torch.Tensor) -> None:
        # unit rows in the product dtype, then one (L, N*D) x (N*D, L) GEMM in float64: cheap (L^2 N D
        # multiply-adds) and free of float32 accumulation over N*D terms
        flat = torch.stack(unit_rows(layers)).flatten(1).to(_F64)  # (L, N*D)
        self._state["cos_sum"].addmm_(flat, flat.T)
        self._state["n"] += layers[0].shape[0]

    def _compute(self) -> torch.Tensor:
        return (self._state["cos_sum"] / self._n()).clamp_(-1.0, 1.0)


class BlockInfluence(_SameWidthMixin, LayerSimilarityMetric):
    """Block influence of transformer layer ``l``: ``BI_l = 1 - mean_t cos(h_l[t], h_{l+1}[t])``.

    Hidden state 0 is the transformer input, so entry ``l`` scores the layer that maps
    hidden state ``l`` to ``l + 1``.  Higher = the layer changes its input more (less
    redundant).  Equals ``1 - diag(CosineSimilarity, offset=1)``, see
    :func:`block_influence_from_cosine`; this class only keeps the ``L - 1`` sums it needs.
    """

    name = "block_influence"
    kind = "vector"
    higher_is_more_similar = False
    min_layers = 2

    def _init_state(self, dims: Tuple[int, ...], device: torch.device) -> None:
        self._state = {
            "n": torch.zeros((), dtype=torch.int64, device=device),
            "cos_sum": torch.zeros(len(dims) - 1, dtype=_F64, device=device),
        }

    def _update(self, layers: List[torch.Tensor], keys: torch.Tensor) -> None:
        unit = unit_rows(layers)
        sums = torch.stack([row_cosine_sum(a, b) for a, b in zip(unit[:-1], unit[1:])])
        self._state["cos_sum"] += sums
        self._state["n"] += layers[0].shape[0]

    def _compute(self) -> torch.Tensor:
        return 1.0 - (self._state["cos_sum"] / self._n()).clamp(-1.0, 1.0)


def block_influence_from_cosine(cosine: torch.Tensor) -> torch.Tensor:
    """Block influence ``1 - cos(h_l, h_{l+1})`` from a ``CosineSimilarity`` matrix."""
    if cosine.dim() != 2 or cosine.shape[0] != cosine.shape[1] or cosine.shape[0] < 2:
        raise ValueError(f"expected an (L, L) cosine matrix with L >= 2, got {tuple(cosine.shape)}")
    return 1.0 - cosine.diagonal(offset=1)


# --------------------------------------------------------------------------------------
# Linear CKA (biased and debiased), exact and streaming
# --------------------------------------------------------------------------------------
# Cost.  The CKA statistics need the upper block triangle of X^T X: N * L(L+1)/2 * D^2
# multiply-adds per batch of N frames (HuBERT Base, 13 hidden states: 54 M per frame, about
# 38% of the 141 M multiply-adds per frame of the forward pass).  That count is the floor of
# any exact feature-space method; the implementation's job is to run it at the machine's
# GEMM peak: products in float32 for float32 inputs (2x float64's peak on CPUs), frames
# buffered to ``buffer_frames`` rows per GEMM (a few hundred rows per call ran at 70% of
# peak on the 2-core AVX-512 machine, 2,000+ rows at 90-95%), and the float64 state
# (L(L+1)/2 D^2 values, 430 MB for Base) read and written once per buffer, not once per
# batch.  Measured there with the buffer: 0.36 s per 600 frames of Base (float32 GEMMs),
# against 0.67 s for per-batch float64 GEMMs.  docs/similarity.md has the side-by-side numbers.
class _LinearKernelStatistics(LayerSimilarityMetric):
    """Feature-space sufficient statistics of all layers, concatenated to ``Dt = sum D_l``.

    With ``x_a`` the concatenated frame ``a`` minus a fixed reference ``c`` (the mean of the
    first batch, which keeps the sums well conditioned: products of shifted features do not
    cancel) the state is

    * ``n``; ``sum = sum_a x_a`` (Dt);
    * ``cross.i = sum_a x_a[i] x_a[j>=i]^T``: the upper block triangle of ``X^T X``
      stored as L row strips, ``(L(L+1)/2) D^2`` float64 in all;
    * debiased only, with ``q_a[l] = ||x_a[l]||^2``: ``weighted_sum = sum_a x_a q_a^T``
      (Dt, L) and ``sqnorm_cross = sum_a q_a q_a^T`` (L, L).

    The shifted frames are rounded once to the product dtype (:func:`product_dtype`); every
    statistic is computed from those same values, so the centred second moment stays
    positive semi-definite.  ``sum`` and the quartic terms are added per batch; the
    ``X^T X`` products wait until ``buffer_frames`` frames are buffered (at most
    ``(buffer_frames + N) * Dt`` values in the product dtype) and are folded in before
    anything reads the state.  Moving the reference (to merge, sync or centre) is exact
    algebra on these sums.

    Args:
        products: ``"auto"`` or ``"float64"``, see :func:`product_dtype`.
        buffer_frames: frames per ``X^T X`` GEMM (memory / speed trade-off; results are
            the same up to float rounding for any value >= 1).
    """

    _quartic: ClassVar[bool] = False

    def __init__(self, products: str = "auto", buffer_frames: int = 2048) -> None:
        super().__init__()
        product_dtype(torch.float32, products)  # validates
        if int(buffer_frames) < 1:
            raise ValueError(f"buffer_frames must be >= 1, got {buffer_frames}")
        self.products = products
        self.buffer_frames = int(buffer_frames)
        self._pending: List[torch.Tensor] = []
        self._pending_rows = 0

    def config(self) -> Dict[str, Any]:
        return {"products": self.products}

    def reset(self) -> None:
        super().reset()
        self._pending, self._pending_rows = [], 0

    # ---- layout ---------------------------------------------------------------------
    def _init_state(self, dims: Tuple[int, ...], device: torch.device) -> None:
        self._pending, self._pending_rows = [], 0
        self._offsets = [0]
        for d in dims:
            self._offsets.append(self._offsets[-1] + d)
        total = self._offsets[-1]
        state = {
            "n": torch.zeros((), dtype=torch.int64, device=device),
            "shift": torch.zeros(total, dtype=_F64, device=device),
            "sum": torch.zeros(total, dtype=_F64, device=device),
        }
        for i, d in enumerate(dims):
            state[f"cross.{i}"] = torch.zeros(d, total - self._offsets[i], dtype=_F64, device=device)
        if self._quartic:
            state["weighted_sum"] = torch.zeros(total, len(dims), dtype=_F64, device=device)
            state["sqnorm_cross"] = torch.zeros(len(dims), len(dims), dtype=_F64, device=device)
        self._state = state

    def _slice(self, i: int) -> slice:
        return slice(self._offsets[i], self._offsets[i + 1])

    def _block(self, i: int, j: int) -> torch.Tensor:
        """Block ``(i, j)`` of the (shifted) second moment ``X^T X`` (a view)."""
        if i > j:
            return self._block(j, i).T
        start = self._offsets[j] - self._offsets[i]
        return self._state[f"cross.{i}"][:, start : start + self._layer_dims[j]]

    # ---- accumulation -----------------------------------------------------------------
    def _update(self, layers: List[torch.Tensor], keys: torch.Tensor) -> None:
        st = self._state
        x = torch.cat(layers, dim=1)  # (N, Dt)
        col_sums = x.sum(0, dtype=_F64)  # NaN/inf anywhere in a layer makes its column sums non-finite
        if not bool(torch.isfinite(col_sums).all()):
            finite = [bool(torch.isfinite(col_sums[self._slice(i)]).all()) for i in range(len(layers))]
            raise_non_finite([i for i, ok in enumerate(finite) if not ok])
        pdt = product_dtype(x.dtype, self.products)
        if self._n() == 0:
            # the reference is representable in the product dtype, so x - c is one correctly rounded
            # subtraction in that dtype; every statistic below uses the same rounded values
            st["shift"].copy_((col_sums / x.shape[0]).to(pdt))
        xs = x.to(pdt) - st["shift"].to(pdt)
        st["sum"] += xs.sum(0, dtype=_F64)
        if self._quartic:
            q = torch.stack([xs[:, self._slice(i)].square().sum(1, dtype=_F64) for i in range(len(layers))], dim=1)
            st["weighted_sum"] += xs.T @ q.to(pdt)
            st["sqnorm_cross"].addmm_(q.T, q)
        st["n"] += x.shape[0]
        self._pending.append(xs)
        self._pending_rows += xs.shape[0]
        if self._pending_rows >= self.buffer_frames:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        x = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending)
        self._pending, self._pending_rows = [], 0
        st = self._state
        for i in range(len(self._layer_dims)):
            # one GEMM per row strip: only the i <= j blocks are computed
            strip = st[f"cross.{i}"]
            if x.dtype == _F64:
                strip.addmm_(x[:, self._slice(i)].T, x[:, self._offsets[i] :])
            else:
                strip += torch.mm(x[:, self._slice(i)].T, x[:, self._offsets[i] :])

    # ---- moving the reference point ---------------------------------------------------
    def _shift_terms(self, d: torch.Tensor, with_md: bool) -> Dict[str, torch.Tensor]:
        """Quantities of the current statistics needed to re-express them around ``c + d``.

        ``md[:, l] = M[:, l-block] d_l`` (only if ``with_md``), ``dmd[i, j] = d_i^T M_ij d_j``,
        ``trace[l] = tr M_ll`` (sums of squared norms around the current reference).
        """
        num_layers = len(self._layer_dims)
        dev = d.device
        dmd = torch.zeros(num_layers, num_layers, dtype=_F64, device=dev)
        trace = torch.zeros(num_layers, dtype=_F64, device=dev)
        md = torch.zeros(self._offsets[-1], num_layers, dtype=_F64, device=dev) if with_md else None
        for i in range(num_layers):
            di = d[self._slice(i)]
            for j in range(i, num_layers):
                block = self._block(i, j)
                dj = d[self._slice(j)]
                b_dj = block @ dj
                dmd[i, j] = dmd[j, i] = di @ b_dj
                if md is not None:
                    md[self._slice(i), j] = b_dj
                    if i != j:
                        md[self._slice(j), i] = block.T @ di
                if i == j:
                    trace[i] = block.diagonal().sum()
        out = {"dmd": dmd, "trace": trace}
        if md is not None:
            out["md"] = md
        return out

    def _layer_sums(self, v: torch.Tensor) -> torch.Tensor:
        """Per-layer sums of a (Dt, ...) tensor -> (L, ...)."""
        return torch.stack([v[self._slice(i)].sum(0) for i in range(len(self._layer_dims))])

    def _shifted_quartic(
        self, d: torch.Tensor, terms: Dict[str, torch.Tensor]
    ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """``weighted_sum`` (if ``md`` in terms) and ``sqnorm_cross`` around ``c + d``."""
        st = self._state
        n = float(self._n())
        s, w, r = st["sum"], st["weighted_sum"], st["sqnorm_cross"]
        trace, dmd = terms["trace"], terms["dmd"]
        e = self._layer_sums(d.square())  # |d_l|^2
        us = self._layer_sums(d * s)  # d_l . s_l
        wtd = self._layer_sums(w * d[:, None]).T  # [a, b] = d_b . W[b-block, a]
        r_new = (
            r
            - 2.0 * (wtd + wtd.T)
            + torch.outer(trace, e)
            + torch.outer(e, trace)
            + 4.0 * dmd
            - 2.0 * (torch.outer(us, e) + torch.outer(e, us))
            + n * torch.outer(e, e)
        )
        w_new = None
        if "md" in terms:
            w_new = (
                w
                - 2.0 * terms["md"]
                + torch.outer(s, e)
                - torch.outer(d, trace)
                + 2.0 * torch.outer(d, us)
                - n * torch.outer(d, e)
            )
        return w_new, r_new

    def _reshift_(self, new_shift: torch.Tensor) -> None:
        """Re-express the statistics in place around the reference ``new_shift``."""
        st = self._state
        d = new_shift.to(st["shift"].device, _F64) - st["shift"]
        n = float(self._n())
        if n == 0:
            st["shift"].copy_(new_shift)
            return
        if self._quartic:
            terms = self._shift_terms(d, with_md=True)
            w_new, r_new = self._shifted_quartic(d, terms)
            st["weighted_sum"].copy_(w_new)
            st["sqnorm_cross"].copy_(r_new)
        s = st["sum"]
        for i in range(len(self._layer_dims)):
            tail = slice(self._offsets[i], None)
            strip = st[f"cross.{i}"]
            strip -= torch.outer(s[self._slice(i)], d[tail])
            strip -= torch.outer(d[self._slice(i)], s[tail])
            strip += n * torch.outer(d[self._slice(i)], d[tail])
        s -= n * d
        st["shift"] += d

    def _export_state(self) -> Dict[str, torch.Tensor]:
        out = super()._export_state()
        if self._pending:
            out["pending"] = torch.cat(self._pending)  # a new tensor
        return out

    def _import_state(self, tensors: Dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        pending = tensors.pop("pending", None)
        super()._import_state(tensors)
        if pending is not None:
            if pending.dim() != 2 or pending.shape[1] != self._offsets[-1] or not pending.is_floating_point():
                raise ValueError(
                    f"state tensor 'pending': got {tuple(pending.shape)} {pending.dtype}, expected "
                    f"(frames, {self._offsets[-1]}) floating point"
                )
            self._pending = [pending.clone().to(self._state["sum"].device)]
            self._pending_rows = pending.shape[0]

    def _merge_state(self, other: LayerSimilarityMetric) -> None:
        assert isinstance(other, _LinearKernelStatistics)
        if other._n() == 0:
            return
        device = self.device
        if self._n() == 0:
            self._state = {k: v.detach().clone().to(device) for k, v in other._state.items()}
            return
        self._reshift_(other._state["shift"].to(device))
        for key, value in self._state.items():
            if key != "shift":
                value += other._state[key].to(device)

    def _sync_state(self, group: Any) -> None:
        import torch.distributed as dist

        world = dist.get_world_size(group)
        st = self._state
        # common reference: the shift of the lowest rank that has data
        header = torch.cat([st["n"].to(_F64).reshape(1), st["shift"]])
        gathered = [torch.zeros_like(header) for _ in range(world)]
        dist.all_gather(gathered, header, group=group)
        reference = next((g[1:] for g in gathered if g[0] > 0), None)
        if reference is None:
            return
        self._reshift_(reference)
        for key in sorted(st):
            if key != "shift":
                dist.all_reduce(st[key], op=dist.ReduceOp.SUM, group=group)

    # ---- centred summary ----------------------------------------------------------
    def _centred_summary(self, quartic: bool) -> Dict[str, torch.Tensor]:
        """Statistics of the mean-centred frames, computed block by block (no copy of M).

        ``frob[i, j] = ||Xc_i^T Xc_j||_F^2``, ``trace[l] = sum_a ||xc_a[l]||^2`` and, if
        ``quartic``, ``sqn[i, j] = sum_a ||xc_a[i]||^2 ||xc_a[j]||^2``.
        """
        st = self._state
        n = float(self._n())
        s = st["sum"]
        num_layers = len(self._layer_dims)
        dev = s.device
        frob = torch.zeros(num_layers, num_layers, dtype=_F64, device=dev)
        trace_c = torch.zeros(num_layers, dtype=_F64, device=dev)
        for i in range(num_layers):
            si = s[self._slice(i)]
            for j in range(i, num_layers):
                centred = self._block(i, j) - torch.outer(si, s[self._slice(j)]) / n
                frob[i, j] = frob[j, i] = centred.square().sum()
                if i == j:
                    trace_c[i] = centred.diagonal().sum()
        out = {"frob": frob, "trace": trace_c.clamp(min=0.0)}
        if quartic:
            d = s / n
            _, sqn = self._shifted_quartic(d, self._shift_terms(d, with_md=False))
            out["sqn"] = sqn
        return out

    def _linear_cka(self, summary: Dict[str, torch.Tensor]) -> torch.Tensor:
        return normalise_hsic(summary["frob"], self.name)


class LinearCKA(_LinearKernelStatistics):
    """Linear CKA with frames as examples, exact over every frame seen.

    ``CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with ``Xc`` the
    mean-centred frames.  Memory ``(L(L+1)/2) D^2`` float64, independent of the frame
    count; per batch ``L`` GEMMs of ``N (L(L+1)/2) D^2`` multiply-adds in all.
    """

    name = "cka"

    def _compute(self) -> torch.Tensor:
        check_frames_for_cka(self._n())
        return self._linear_cka(self._centred_summary(quartic=False))


class DebiasedLinearCKA(_LinearKernelStatistics):
    """Linear CKA with the unbiased HSIC estimator of Song et al. (2012), exact and streaming.

    With ``K = Xc Xc^T``, ``L = Yc Yc^T`` (frames centred first: the estimator is invariant
    to shifting the features, centring only improves the conditioning) and ``K~``, ``L~``
    the Gram matrices with zeroed diagonals,

    ``HSIC = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``,

    which in feature space, for centred features, is
    ``[||Xc^T Yc||^2 - n/(n-2) sum_a ||x_a||^2 ||y_a||^2 + tr(Xc^T Xc) tr(Yc^T Yc)/((n-1)(n-2))] / (n(n-3))``.
    Debiased CKA ``= HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``.  Needs ``n >= 4``.
    """

    name = "debiased_cka"
    _quartic = True

    def _compute(self) -> torch.Tensor:
        n = self._n()
        check_frames_for_cka(n, debiased=True)
        summary = self._centred_summary(quartic=True)
        return normalise_hsic(hsic_debiased(summary["frob"], summary["trace"], summary["sqn"], n), self.name)

    def compute_biased(self) -> torch.Tensor:
        """Biased linear CKA from the same statistics (equals ``LinearCKA`` on the stream)."""
        if self._layer_dims is None:
            raise RuntimeError("DebiasedLinearCKA: no frames seen; call update() before compute_biased()")
        check_frames_for_cka(self._n())
        with torch.no_grad():
            self._flush()
            return self._linear_cka(self._centred_summary(quartic=False))


# --------------------------------------------------------------------------------------
# Mutual k-nearest neighbours on a bottom-k sample
# --------------------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


def _to_signed(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= (1 << 63) else value


_GOLDEN = _to_signed(0x9E3779B97F4A7C15)
_MIX1 = _to_signed(0xBF58476D1CE4E5B9)
_MIX2 = _to_signed(0x94D049BB133111EB)


def _splitmix64_int(value: int) -> int:
    """splitmix64 finaliser on a Python int (mod 2^64)."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _srl(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 tensors (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def hash_keys(keys: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Seeded splitmix64 hash of int64 frame keys, as non-negative int64 (63 bits).

    Pure integer arithmetic (wrapping int64), identical on every device and for every
    batching.  The frames with the smallest hashes form the ``mknn`` sample.
    """
    seed_mix = _to_signed(_splitmix64_int(int(seed) & _MASK64))
    z = keys.to(torch.int64) ^ seed_mix
    z = z + _GOLDEN
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    z = z ^ _srl(z, 31)
    return z & ((1 << 63) - 1)


class MutualKNN(LayerSimilarityMetric):
    """Mutual k-NN alignment (Huh et al., 2024) of every pair of layers.

    On a sample of frames (the same frames for every layer, features L2-normalised),
    ``S_ij = mean_t |N_i(t) ∩ N_j(t)| / k`` with ``N_l(t)`` the ``k`` nearest other sampled
    frames of ``t`` in layer ``l`` (cosine similarity = Euclidean distance on the sphere).

    The sample is bottom-k ("priority") sampling: the ``max_frames`` frames with the
    smallest ``hash_keys(key, seed)``, so it does not depend on the batching, the order of
    the frames, or the sharding across ranks (merge = union, keep the smallest).  The
    neighbour search works on ``chunk_size x m`` blocks of the similarity matrix.  Sampled
    features are stored in ``dtype`` (float32: ``max_frames * sum(D_l) * 4`` bytes).
    """

    name = "mknn"

    def __init__(
        self,
        k: int = 10,
        max_frames: int = 4096,
        seed: int = 0,
        chunk_size: int = 1024,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if int(max_frames) <= int(k):
            raise ValueError(f"max_frames must be larger than k={k}, got {max_frames}")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
        self.k = int(k)
        self.max_frames = int(max_frames)
        self.seed = int(seed)
        self.chunk_size = int(chunk_size)
        self.dtype = dtype
        self._reset_sample()

    def config(self) -> Dict[str, Any]:
        return {"k": self.k, "max_frames": self.max_frames, "seed": self.seed, "dtype": str(self.dtype)}

    def reset(self) -> None:
        super().reset()
        self._reset_sample()

    # ---- sample storage -------------------------------------------------------------
    def _reset_sample(self) -> None:
        self._size = 0
        self._keys = torch.zeros(0, dtype=torch.int64)
        self._hashes = torch.zeros(0, dtype=torch.int64)
        self._feats: List[torch.Tensor] = []

    def _init_state(self, dims: Tuple[int, ...], device: torch.device) -> None:
        self._size = 0
        self._keys = torch.zeros(0, dtype=torch.int64, device=device)
        self._hashes = torch.zeros(0, dtype=torch.int64, device=device)
        self._feats = [torch.zeros(0, d, dtype=self.dtype, device=device) for d in dims]

    def _tensors(self) -> List[torch.Tensor]:
        return [] if self._layer_dims is None else [self._keys, self._hashes, *self._feats]

    def _move_to(self, device: torch.device) -> None:
        self._keys = self._keys.to(device)
        self._hashes = self._hashes.to(device)
        self._feats = [f.to(device) for f in self._feats]

    def _ensure_capacity(self, needed: int) -> None:
        capacity = self._keys.shape[0]
        if needed <= capacity:
            return
        new_cap = min(self.max_frames, max(needed, 2 * capacity, 64))

        def grow(t: torch.Tensor) -> torch.Tensor:
            out = torch.zeros((new_cap,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
            out[: self._size] = t[: self._size]
            return out

        self._keys, self._hashes = grow(self._keys), grow(self._hashes)
        self._feats = [grow(f) for f in self._feats]

    def _insert(self, keys: torch.Tensor, hashes: torch.Tensor, feats: List[torch.Tensor]) -> None:
        """Union of the sample with candidate frames, keeping the smallest hashes."""
        m, c = self._size, keys.shape[0]
        if c == 0:
            return
        if m + c <= self.max_frames:
            self._ensure_capacity(m + c)
            slots = torch.arange(m, m + c, device=keys.device)
            chosen = torch.arange(c, device=keys.device)
            self._size = m + c
        else:
            all_hashes = torch.cat([self._hashes[:m], hashes])
            order = torch.sort(all_hashes, stable=True).indices[: self.max_frames]
            keep = torch.zeros(m + c, dtype=torch.bool, device=keys.device)
            keep[order] = True
            chosen = keep[m:].nonzero().flatten()
            self._ensure_capacity(self.max_frames)
            slots = torch.cat([torch.arange(m, self.max_frames, device=keys.device), (~keep[:m]).nonzero().flatten()])
            self._size = self.max_frames
        self._keys[slots] = keys[chosen]
        self._hashes[slots] = hashes[chosen]
        for buf, f in zip(self._feats, feats):
            buf[slots] = f[chosen].to(buf.dtype)

    def _update(self, layers: List[torch.Tensor], keys: torch.Tensor) -> None:
        unit = unit_rows(layers)  # validates every frame, sampled or not
        hashes = hash_keys(keys, self.seed)
        if self._size == self.max_frames:
            # only frames that beat the current largest sampled hash can enter
            cand = (hashes < self._hashes[: self._size].max()).nonzero().flatten()
            if cand.numel() == 0:
                return
            keys, hashes, unit = keys[cand], hashes[cand], [u[cand] for u in unit]
        self._insert(keys, hashes, [u.to(self.dtype) for u in unit])

    def sample(self) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """The sampled ``(keys, hashes, unit-norm features per layer)``, sorted by hash then key."""
        if self._layer_dims is None:
            raise RuntimeError("MutualKNN: no frames seen; call update() first")
        m = self._size
        keys, hashes = self._keys[:m], self._hashes[:m]
        order = torch.sort(keys, stable=True).indices
        order = order[torch.sort(hashes[order], stable=True).indices]
        return keys[order], hashes[order], [f[:m][order] for f in self._feats]

    def _merge_state(self, other: LayerSimilarityMetric) -> None:
        assert isinstance(other, MutualKNN)
        device = self.device
        m = other._size
        self._insert(other._keys[:m].to(device), other._hashes[:m].to(device), [f[:m].to(device) for f in other._feats])

    def _sync_state(self, group: Any) -> None:
        import torch.distributed as dist

        world = dist.get_world_size(group)
        device = self.device
        size = torch.tensor([self._size], dtype=torch.int64, device=device)
        sizes_t = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes_t, size, group=group)
        sizes = [int(s.item()) for s in sizes_t]
        longest = max(sizes)
        if longest == 0:
            return
        m = self._size
        total = sum(self._layer_dims)
        keys = torch.zeros(longest, dtype=torch.int64, device=device)
        hashes = torch.zeros(longest, dtype=torch.int64, device=device)
        feats = torch.zeros(longest, total, dtype=self.dtype, device=device)
        keys[:m], hashes[:m] = self._keys[:m], self._hashes[:m]
        if m:
            feats[:m] = torch.cat([f[:m] for f in self._feats], dim=1)
        all_keys = [torch.zeros_like(keys) for _ in range(world)]
        all_hashes = [torch.zeros_like(hashes) for _ in range(world)]
        all_feats = [torch.zeros_like(feats) for _ in range(world)]
        dist.all_gather(all_keys, keys, group=group)
        dist.all_gather(all_hashes, hashes, group=group)
        dist.all_gather(all_feats, feats, group=group)
        self._init_state(self._layer_dims, device)
        for r in range(world):
            m_r = sizes[r]
            per_layer = list(all_feats[r][:m_r].split(list(self._layer_dims), dim=1))
            self._insert(all_keys[r][:m_r], all_hashes[r][:m_r], per_layer)

    def _export_state(self) -> Dict[str, torch.Tensor]:
        m = self._size
        out = {"keys": self._keys[:m].clone(), "hashes": self._hashes[:m].clone()}
        for i, f in enumerate(self._feats):
            out[f"feat.{i}"] = f[:m].clone()
        return out

    def _import_state(self, tensors: Dict[str, torch.Tensor]) -> None:
        expected = {"keys", "hashes"} | {f"feat.{i}" for i in range(len(self._layer_dims))}
        if set(tensors) != expected:
            raise ValueError(f"state tensors {sorted(tensors)} do not match the expected {sorted(expected)}")
        m = tensors["keys"].shape[0]
        if m > self.max_frames or tensors["hashes"].shape != (m,):
            raise ValueError(f"invalid mknn sample of {m} frames (max_frames={self.max_frames})")
        if not torch.equal(tensors["hashes"], hash_keys(tensors["keys"], self.seed)):
            raise ValueError("mknn state: the stored hashes do not match the keys and seed")
        for i, d in enumerate(self._layer_dims):
            f = tensors[f"feat.{i}"]
            if f.shape != (m, d) or f.dtype != self.dtype:
                raise ValueError(
                    f"state tensor 'feat.{i}': got {tuple(f.shape)} {f.dtype}, expected ({m}, {d}) {self.dtype}"
                )
        self._size = m
        self._keys = tensors["keys"].clone()
        self._hashes = tensors["hashes"].clone()
        self._feats = [tensors[f"feat.{i}"].clone() for i in range(len(self._layer_dims))]

    def _compute(self) -> torch.Tensor:
        _, _, feats = self.sample()
        m = feats[0].shape[0]
        if m <= self.k:
            raise ValueError(f"mutual k-NN with k={self.k} needs at least k+1={self.k + 1} sampled frames; got {m}")
        nbrs = [knn_indices(f, self.k, self.chunk_size) for f in feats]
        num_layers = len(nbrs)
        out = torch.ones(num_layers, num_layers, dtype=_F64, device=feats[0].device)
        for i in range(num_layers):
            for j in range(i + 1, num_layers):
                out[i, j] = out[j, i] = mutual_knn_overlap(nbrs[i], nbrs[j], self.k, self.chunk_size)
        return out


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------
BUILTIN_METRICS: Dict[str, Type[LayerSimilarityMetric]] = {
    "cosine": CosineSimilarity,
    "cka": LinearCKA,
    "debiased_cka": DebiasedLinearCKA,
    "mknn": MutualKNN,
    "block_influence": BlockInfluence,
}


def parse_metric_names(names: Union[str, Iterable[str]], registry: Dict[str, type], argument: str = "names") -> List[str]:
    """Requested metric names (a list or a comma-separated string), de-duplicated in order and checked against
    ``registry``; ``argument`` is the caller's name for them, for the error."""
    from ..errors import UserInputError

    if isinstance(names, str):
        names = names.split(",")
    names = list(dict.fromkeys(n for n in (str(x).strip() for x in names) if n))
    known = ", ".join(sorted(registry))
    if not names:
        raise UserInputError(f"no similarity metric requested; known metrics: {known}", argument=argument)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise UserInputError(
            f"unknown similarity metric(s) {', '.join(map(repr, unknown))}; known metrics: {known} "
            "(plugins add more through the s3prl_redundancy_similarity_metrics hook)", argument=argument
        )
    return names


def constructor_options(cls: type) -> List[str]:
    """The keyword options a metric class takes (its constructor's parameters)."""
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
