"""Training-free linear bridges over removed runs of layers.

When a contiguous run of layers ``a..b`` is removed, the kept model feeds boundary state ``a`` (the run's
input) to the layer that used to receive state ``b + 1`` (its output). A bridge puts a linear map
``y = W x + c`` in the run's place, fitted in closed form on the *source* model's states over ``--data``:

    minimise  sum_t || y_t - W x_t - c ||^2 + lambda ||W||_F^2,      x = state a, y = state b + 1

From streamed float64 sums ``n, sum x, sum y, X^T X, X^T Y`` (no frame is kept in memory):
``C_xx = X^T X / n - mx mx^T``, ``C_xy = X^T Y / n - mx my^T``, ``W^T = (C_xx + lambda I)^{-1} C_xy``,
``c = my - W mx``, with ``lambda = ridge * trace(C_xx) / D`` (``--bridge-ridge``, default ``1e-4``; ``0``
gives plain least squares). If the run *is* affine on the data's span, the fit is exact.

A bridge is stored as a :class:`~.structure.LinearBridge` at the run's position in ``encoder.layers``, so
the model has one more hidden state per bridge. :func:`compare_bridges` measures, on held-out audio, how
far the pruned model's encoder output is from the source model's with and without bridges (MSE and
linear CKA over frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import UserInputError
from ..families import FAMILIES

DEFAULT_RIDGE = 1e-4


def removed_runs(keep: Sequence[int], num_layers: int) -> List[Tuple[int, int]]:
    """Maximal runs ``(first, last)`` of consecutive removed layers."""
    keep = set(keep)
    runs, start = [], None
    for l in range(num_layers):
        if l not in keep and start is None:
            start = l
        if l in keep and start is not None:
            runs.append((start, l - 1))
            start = None
    if start is not None:
        runs.append((start, num_layers - 1))
    return runs


@dataclass
class MomentStatistics:
    """Streamed float64 sums for a least-squares fit ``y ~ W x + c``."""

    dim_in: int
    dim_out: int
    n: int = 0
    sum_x: torch.Tensor = None
    sum_y: torch.Tensor = None
    xtx: torch.Tensor = None
    xty: torch.Tensor = None

    def __post_init__(self):
        f64 = torch.float64
        self.sum_x = torch.zeros(self.dim_in, dtype=f64)
        self.sum_y = torch.zeros(self.dim_out, dtype=f64)
        self.xtx = torch.zeros(self.dim_in, self.dim_in, dtype=f64)
        self.xty = torch.zeros(self.dim_in, self.dim_out, dtype=f64)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} input frames but {y.shape[0]} output frames")
        x, y = x.double(), y.double()
        self.n += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.xtx.addmm_(x.T, x)
        self.xty.addmm_(x.T, y)

    def fit(self, ridge: float = DEFAULT_RIDGE) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        """``(W, c, info)`` with ``W`` ``(dim_out, dim_in)``; float64."""
        if self.n < 2:
            raise UserInputError(f"a bridge needs at least 2 frames of `data`, got {self.n}")
        if ridge < 0:
            raise UserInputError(f"`bridge_ridge` must be >= 0, got {ridge}")
        mx, my = self.sum_x / self.n, self.sum_y / self.n
        cxx = self.xtx / self.n - torch.outer(mx, mx)
        cxy = self.xty / self.n - torch.outer(mx, my)
        lam = ridge * float(torch.trace(cxx)) / self.dim_in
        a = cxx + lam * torch.eye(self.dim_in, dtype=torch.float64)
        try:
            w_t = torch.linalg.solve(a, cxy)
        except RuntimeError:
            raise UserInputError(
                "the bridge's least-squares system is singular (too few distinct frames for the width); add audio to "
                "`data` or use a positive `bridge_ridge`"
            ) from None
        w = w_t.T.contiguous()
        c = my - w @ mx
        return w, c, {"frames": self.n, "lambda": lam, "ridge": ridge}


def collect_run_statistics(upstream, dataset, runs: Sequence[Tuple[int, int]], batch_size: int = 4,
                           progress: bool = False) -> Dict[Tuple[int, int], MomentStatistics]:
    """Second moments of (state ``first``, state ``last + 1``) of every run, over ``dataset`` (one pass)."""
    from .statistics import run_pass

    stats: Dict[Tuple[int, int], MomentStatistics] = {}

    def consume(batch) -> None:
        frames = batch.frames
        for first, last in runs:
            x, y = frames[first], frames[last + 1]
            if (first, last) not in stats:
                stats[(first, last)] = MomentStatistics(x.shape[1], y.shape[1])
            stats[(first, last)].update(x, y)

    run_pass(upstream, dataset, [consume], batch_size, progress, "bridge statistics")
    return stats


def fit_bridges(stats: Mapping[Tuple[int, int], MomentStatistics], ridge: float = DEFAULT_RIDGE) -> Dict[Tuple[int, int], Dict[str, Any]]:
    out = {}
    for run, st in stats.items():
        w, c, info = st.fit(ridge)
        out[run] = {"weight": w, "bias": c, "info": info}
    return out


def insert_bridges(model, family: str, keep: Sequence[int], num_layers: int,
                   bridges: Mapping[Tuple[int, int], Mapping[str, Any]], source_ids: Optional[Sequence[int]] = None) -> None:
    """Put a :class:`LinearBridge` in ``model.encoder.layers`` (which holds the kept layers ``keep``, in order)
    where each removed run ``(first, last)`` was. ``source_ids[p]``: the source-model id of position ``p``
    (default: the position), recorded as the layers each bridge replaces."""
    from torch import nn

    from .structure import LinearBridge

    kept_modules = list(model.encoder.layers)
    if len(kept_modules) != len(keep):
        raise ValueError(f"model has {len(kept_modules)} layers but {len(keep)} kept layers were given")
    module_of = dict(zip(keep, kept_modules))
    runs = {first: (first, last) for first, last in bridges}
    new, l = [], 0
    while l < num_layers:
        if l in module_of:
            new.append(module_of[l])
            l += 1
            continue
        if l not in runs:
            raise ValueError(f"layer {l} is removed but no bridge run starts there")
        first, last = runs[l]
        fit = bridges[(first, last)]
        ref = next(iter(model.parameters()))
        ids = list(range(first, last + 1)) if source_ids is None else [source_ids[p] for p in range(first, last + 1)]
        bridge = LinearBridge(fit["weight"].shape[1], FAMILIES[family].position_bias, replaces=ids)
        bridge.linear.weight.data = fit["weight"].to(ref.dtype)
        bridge.linear.bias.data = fit["bias"].to(ref.dtype)
        new.append(bridge)
        l = last + 1
    model.encoder.layers = nn.ModuleList(new)


# --------------------------------------------------------------------------------------
# Measuring what a bridge recovers
# --------------------------------------------------------------------------------------
def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two ``(N, D)`` frame matrices (features centred), float64; NaN without variance."""
    from ..similarity.functional import linear_cka as cka

    return float(cka(x, y))


def output_frames(upstream, dataset, batch_size: int = 4) -> torch.Tensor:
    """Encoder-output frames (s3prl's last hidden state) of every utterance, trimmed, concatenated."""
    from .statistics import batches, frame_counts

    out = []
    with torch.inference_mode():
        for _, _, wavs in batches(dataset, batch_size):
            last = upstream(wavs)["hidden_states"][-1]
            counts = frame_counts([len(w) for w in wavs], last.shape[1])
            out.extend(last[b, : counts[b]].float() for b in range(len(wavs)))
    return torch.cat(out)


def compare_outputs(reference: torch.Tensor, candidates: Mapping[str, torch.Tensor]) -> Dict[str, Dict[str, float]]:
    """MSE (mean over frames and dimensions) and linear CKA of each candidate to ``reference``."""
    out = {}
    for name, frames in candidates.items():
        n = min(len(frames), len(reference))
        out[name] = {"mse": float((frames[:n] - reference[:n]).double().square().mean()),
                     "cka": linear_cka(frames[:n], reference[:n])}
    return out


def split_dataset(dataset, holdout: float, seed: int = 0):
    """``(fit, held_out)`` datasets: a seeded random fraction ``holdout`` of the files is held out."""
    if not 0.0 < holdout < 1.0:
        raise UserInputError(f"`bridge_holdout` must be strictly between 0 and 1, got {holdout}")
    n = len(dataset)
    n_out = int(round(holdout * n))
    if n_out < 1 or n - n_out < 1:
        raise UserInputError(
            f"`data` has {n} utterance(s): too few to hold out a fraction {holdout} for measuring the bridge "
            "(need at least one for fitting and one held out); add audio or change `bridge_holdout`"
        )
    order = np.random.default_rng(seed).permutation(n)
    files = list(dataset.files)
    held = sorted(order[:n_out].tolist())
    fit = sorted(order[n_out:].tolist())
    make = lambda idx: dataset.subset([files[i] for i in idx])
    return make(fit), make(held)
