"""Layer-similarity formulas as plain functions: the one home of linear CKA, cosine and mutual k-NN.

The streaming metric classes of :mod:`.metrics` keep sufficient statistics and call the functions here
at ``compute()``; code that holds two frame matrices at once (bridges, evaluations, distillation
reports) calls them directly, the way ``torchmetrics.functional`` pairs with its metric classes::

    linear_cka(x, y)                  # biased linear CKA of two (N, D) frame matrices, float64
    linear_cka(x, y, debiased=True)   # with the unbiased HSIC estimator of Song et al. (2012)
    cosine_similarity(x, y)           # mean over frames of cos(x[t], y[t])
    mutual_knn(x, y, k=10)            # mutual k-nearest-neighbour alignment (Huh et al., 2024)

CKA from statistics: :func:`linear_cka_from_moments` (sums and second moments of frames, centred here)
and, for any number of layers, :func:`hsic_debiased` + :func:`normalise_hsic` on the centred
Frobenius products. Gram-matrix (n x n) reference implementations, kept independent as test oracles,
are in :mod:`s3prl_redundancy.testing.oracles` (test side).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, List, Optional, Sequence

import torch

__all__ = [
    "product_dtype",
    "unit_rows",
    "row_cosine_sum",
    "cosine_similarity",
    "check_frames_for_cka",
    "normalise_hsic",
    "hsic_debiased",
    "linear_cka",
    "linear_cka_from_moments",
    "knn_indices",
    "mutual_knn_overlap",
    "mutual_knn",
]

_F64 = torch.float64


def product_dtype(dtype: torch.dtype, products: str = "auto") -> torch.dtype:
    """The dtype in which a batch's products (dot products, ``X^T X``) are computed.

    ``"auto"``: float64 for float64 inputs, float32 for everything else (float32 hidden
    states carry 24 bits; a float32 GEMM over a few thousand frames adds a relative error
    of about 1e-7, below what the inputs hold, at half the cost of float64 on CPUs and far
    less on GPUs).  ``"float64"``: always float64 (bitwise the most reproducible, slower).
    Every running sum is float64 either way.
    """
    if products not in ("auto", "float64"):
        raise ValueError(f"products must be 'auto' or 'float64', got {products!r}")
    return _F64 if products == "float64" or dtype == _F64 else torch.float32


def raise_non_finite(bad: Sequence[int]) -> None:
    raise ValueError(f"non-finite values (NaN/inf) in layer(s) {list(bad)}; the batch was not added")


# --------------------------------------------------------------------------------------
# Cosine
# --------------------------------------------------------------------------------------
def unit_rows(layers: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Rows scaled to unit L2 norm in ``product_dtype`` (all-zero rows stay zero).

    Raises ``ValueError`` (before any state changes) if a layer has NaN/inf values: they
    make the row norms non-finite, which is far cheaper to test than every element.
    """
    rows, bad = [], []
    for i, h in enumerate(layers):
        x = h.to(product_dtype(h.dtype))
        norms = torch.linalg.vector_norm(x, dim=1)
        if not bool(torch.isfinite(norms.sum())):
            bad.append(i)
        rows.append(x / norms.clamp_min(torch.finfo(x.dtype).tiny)[:, None])
    if bad:
        raise_non_finite(bad)
    return rows


def row_cosine_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_t a[t] . b[t]`` of unit rows (the sum of the frames' cosines), float64."""
    return (a * b).sum(1).sum(dtype=_F64)


def cosine_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_t cos(x[t], y[t])`` of two ``(N, D)`` frame matrices (an all-zero frame has cosine 0), float64."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.shape != y.shape or x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"expected two non-empty (N, D) tensors of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    a, b = unit_rows([x, y])
    return (row_cosine_sum(a, b) / x.shape[0]).clamp(-1.0, 1.0)


# --------------------------------------------------------------------------------------
# Linear CKA
# --------------------------------------------------------------------------------------
def normalise_hsic(hsic: torch.Tensor, name: Optional[str] = None) -> torch.Tensor:
    """CKA from an ``(L, L)`` HSIC matrix: ``hsic_ij / sqrt(hsic_ii hsic_jj)``, clamped to [-1, 1].

    Layers without (estimated) variance get NaN rows and columns; with ``name`` (a metric's name) that
    also warns.
    """
    diag = hsic.diagonal().clamp(min=0.0)
    denom = torch.sqrt(torch.outer(diag, diag))
    degenerate = diag <= 0
    out = hsic / torch.where(denom > 0, denom, torch.ones_like(denom))
    out = out.clamp(-1.0, 1.0)
    if bool(degenerate.any()):
        if name is not None:
            bad = degenerate.nonzero().flatten().tolist()
            warnings.warn(f"{name}: layer(s) {bad} have no (estimated) variance; their similarities are NaN",
                          RuntimeWarning, stacklevel=4)
        mask = degenerate[:, None] | degenerate[None, :]
        out = out.masked_fill(mask, float("nan"))
    return out


def check_frames_for_cka(n: int, debiased: bool = False) -> None:
    """Raise ``ValueError`` unless ``n`` frames are enough: 2 to centre, 4 for the unbiased estimator."""
    if debiased and n <= 3:
        raise ValueError(
            f"debiased CKA needs at least 4 frames (the unbiased HSIC estimator divides by "
            f"n(n-3) and (n-2)); got n={n}"
        )
    if n < 2:
        raise ValueError(f"linear CKA needs at least 2 frames to centre the features; got n={n}")


def hsic_debiased(frob: torch.Tensor, trace: torch.Tensor, sqn: torch.Tensor, n: int) -> torch.Tensor:
    """The unbiased HSIC estimator (Song et al., 2012) in feature space, from centred statistics.

    ``frob[i, j] = ||Xc_i^T Xc_j||_F^2``, ``trace[l] = sum_a ||xc_a[l]||^2``,
    ``sqn[i, j] = sum_a ||xc_a[i]||^2 ||xc_a[j]||^2``::

        [frob - n/(n-2) sqn + trace trace^T / ((n-1)(n-2))] / (n(n-3))

    Needs ``n >= 4``. (The biased HSIC, up to a factor that CKA cancels, is ``frob`` itself.)
    """
    check_frames_for_cka(n, debiased=True)
    nf = float(n)
    traces = torch.outer(trace, trace) / ((nf - 1.0) * (nf - 2.0))
    return (frob - nf / (nf - 2.0) * sqn + traces) / (nf * (nf - 3.0))


def _frames64(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x).to(_F64)
    if x.dim() != 2:
        raise ValueError(f"expected an (N, D) frame matrix, got shape {tuple(x.shape)}")
    return x


def linear_cka(x: Any, y: Any, debiased: bool = False) -> torch.Tensor:
    """Linear CKA of two frame matrices ``(N, Dx)`` and ``(N, Dy)`` (tensors or arrays), float64, 0-dim.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with ``Xc`` the mean-centred frames; ``debiased``
    uses :func:`hsic_debiased` instead (needs ``N >= 4``). NaN when either side has no variance.
    """
    x, y = _frames64(x), _frames64(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of frames, got {x.shape[0]} and {y.shape[0]}")
    check_frames_for_cka(x.shape[0], debiased)
    x = x - x.mean(0)
    y = y - y.mean(0)
    xy = (y.T @ x).square().sum()
    frob = torch.stack([torch.stack([(x.T @ x).square().sum(), xy]), torch.stack([xy, (y.T @ y).square().sum()])])
    if debiased:
        q = torch.stack([x.square().sum(1), y.square().sum(1)], dim=1)  # (N, 2) squared norms
        frob = hsic_debiased(frob, q.sum(0), q.T @ q, x.shape[0])
    return normalise_hsic(frob)[0, 1]


def linear_cka_from_moments(n: int, sum_x: torch.Tensor, sum_y: torch.Tensor, xx: torch.Tensor,
                            yy: torch.Tensor, yx: torch.Tensor) -> torch.Tensor:
    """Biased linear CKA from streamed sums of ``n`` frames: ``sum_x``, ``sum_y`` and ``X^T X``, ``Y^T Y``,
    ``Y^T X``, float64, 0-dim.

    The frames may be shifted by any fixed vectors (CKA does not change); shifting them by a typical frame
    (the first batch's mean, say) keeps ``X^T X - s s^T / n`` free of cancellation.
    """
    check_frames_for_cka(n)
    cxx = xx - torch.outer(sum_x, sum_x) / n
    cyy = yy - torch.outer(sum_y, sum_y) / n
    cyx = yx - torch.outer(sum_y, sum_x) / n
    xy = cyx.square().sum()
    frob = torch.stack([torch.stack([cxx.square().sum(), xy]), torch.stack([xy, cyy.square().sum()])])
    return normalise_hsic(frob.to(_F64))[0, 1]


# --------------------------------------------------------------------------------------
# Mutual k-nearest neighbours
# --------------------------------------------------------------------------------------
def knn_indices(z: torch.Tensor, k: int, chunk_size: int = 1024) -> torch.Tensor:
    """Indices ``(m, k)`` of the k most similar other rows of ``z`` (dot product), ascending, in chunks."""
    m = z.shape[0]
    out = torch.empty(m, k, dtype=torch.int64, device=z.device)
    for start in range(0, m, chunk_size):
        stop = min(m, start + chunk_size)
        sim = z[start:stop] @ z.T  # (chunk, m): the only distance block in memory
        rows = torch.arange(stop - start, device=z.device)
        sim[rows, rows + start] = -math.inf  # exclude self-matches
        out[start:stop] = sim.topk(k, dim=1).indices
    return out.sort(dim=1).values


def mutual_knn_overlap(a: torch.Tensor, b: torch.Tensor, k: int, chunk_size: int = 1024) -> torch.Tensor:
    """``mean_t |N_a(t) ∩ N_b(t)| / k`` of two ``(m, k)`` neighbour lists, float64, 0-dim."""
    m = a.shape[0]
    overlap = torch.zeros(m, dtype=torch.int64, device=a.device)
    for start in range(0, m, chunk_size):
        rows_a = a[start : start + chunk_size]
        rows_b = b[start : start + chunk_size]
        overlap[start : start + chunk_size] = (rows_a[:, :, None] == rows_b[:, None, :]).sum((1, 2))
    return overlap.to(_F64).mean() / k


def mutual_knn(x: torch.Tensor, y: torch.Tensor, k: int = 10, chunk_size: int = 1024) -> torch.Tensor:
    """Mutual k-NN alignment of two ``(N, D)`` frame matrices on all their frames (cosine neighbours), float64."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected two (N, D) tensors with the same N, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] <= k:
        raise ValueError(f"mutual k-NN with k={k} needs at least k+1={k + 1} frames; got {x.shape[0]}")
    a, b = unit_rows([x, y])
    return mutual_knn_overlap(knn_indices(a, k, chunk_size), knn_indices(b, k, chunk_size), k, chunk_size)
