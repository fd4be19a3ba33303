"""Gram-matrix (n x n) reference implementations of the similarity metrics.

These are **test oracles and benchmark baselines**, not the production path: they
materialise n x n Gram matrices (O(n^2) memory, O(n^2 d) or O(n^3) time) and follow the
textbook / public-tool formulations literally so that they are obviously correct:

* biased linear CKA with centred Gram matrices ``HKH`` (Kornblith et al., 2019);
* the unbiased HSIC estimator of Song et al. (2012), transcribed term by term, and the
  equivalent "unbiased centring" of Nguyen et al. (2021) / Kornblith's code -- the
  diagonal is zeroed with ``K - diag(diag(K))`` (a matrix), not the broadcasting bug
  ``K - diag(K)`` that subtracts a vector from every row;
* brute-force mutual k-NN with the full similarity matrix and a boolean neighbour mask;
* "minibatch CKA": per-minibatch Gram CKA averaged over minibatches of frames (as the
  redundancy paper's code), or HSIC accumulated over minibatches (as torch_cka /
  Nguyen et al.); it is *not* the full-data CKA.

The streaming metrics in :mod:`.metrics` must agree with the first three to ~1e-6.
Everything runs in float64.
"""

from __future__ import annotations

from typing import List, Literal, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "gram_linear",
    "center_gram",
    "hsic_biased",
    "cka",
    "zero_diagonal",
    "hsic_unbiased",
    "unbiased_center_gram",
    "debiased_cka",
    "cka_matrix",
    "mutual_knn",
    "mutual_knn_matrix",
    "cosine_matrix",
    "minibatch_cka",
]


def _f64(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"expected an (n, d) matrix of examples, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64)


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """Linear-kernel Gram matrix ``K = X X^T`` of the n examples (rows)."""
    x = _f64(x)
    return x @ x.T


def center_gram(gram: torch.Tensor) -> torch.Tensor:
    """``H K H`` with the centring matrix ``H = I - 11^T / n``."""
    n = gram.shape[0]
    h = torch.eye(n, dtype=torch.float64, device=gram.device) - 1.0 / n
    return h @ gram.to(torch.float64) @ h


def hsic_biased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Biased HSIC ``tr(KHLH) / (n-1)^2`` (``tr(AB) = sum(A * B)`` for symmetric ``A``, ``B``)."""
    n = k.shape[0]
    return (center_gram(k) * center_gram(l)).sum() / (n - 1) ** 2


def cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Biased linear CKA of two (n, d) representations of the same n examples."""
    k, l = gram_linear(x), gram_linear(y)
    return float(hsic_biased(k, l) / torch.sqrt(hsic_biased(k, k) * hsic_biased(l, l)))


def zero_diagonal(gram: torch.Tensor) -> torch.Tensor:
    """``K~ = K - diag(diag(K))``: the Gram matrix with its diagonal set to zero."""
    return gram - torch.diag(torch.diagonal(gram))


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC_1 of Song et al. (2012), term by term.

    ``[tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``.
    """
    n = k.shape[0]
    if n <= 3:
        raise ValueError(f"the unbiased HSIC estimator needs n >= 4 examples, got {n}")
    kt, lt = zero_diagonal(k.to(torch.float64)), zero_diagonal(l.to(torch.float64))
    one = torch.ones(n, dtype=torch.float64, device=k.device)
    term_trace = torch.trace(kt @ lt)
    term_sums = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term_cross = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return (term_trace + term_sums - term_cross) / (n * (n - 3))


def unbiased_center_gram(gram: torch.Tensor) -> torch.Tensor:
    """Unbiased centring (Nguyen et al., 2021; Kornblith's ``center_gram(unbiased=True)``).

    ``sum(Ku * Lu) / (n(n-3))`` equals :func:`hsic_unbiased`.
    """
    n = gram.shape[0]
    if n <= 3:
        raise ValueError(f"unbiased centring needs n >= 4 examples, got {n}")
    g = zero_diagonal(gram.to(torch.float64))
    means = g.sum(0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    g = g - means[:, None] - means[None, :]
    return zero_diagonal(g)


def debiased_cka(x: torch.Tensor, y: torch.Tensor, method: Literal["song", "centering"] = "song") -> float:
    """Debiased linear CKA ``HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))``.

    ``method="song"`` uses :func:`hsic_unbiased`, ``"centering"`` the unbiased centring; the
    features are used as given (the estimator is invariant to shifting them).
    """
    k, l = gram_linear(x), gram_linear(y)
    if method == "song":
        h = hsic_unbiased
    elif method == "centering":

        def h(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (unbiased_center_gram(a) * unbiased_center_gram(b)).sum()

    else:
        raise ValueError(f"method must be 'song' or 'centering', got {method!r}")
    return float(h(k, l) / torch.sqrt(h(k, k) * h(l, l)))


def cka_matrix(layers: Sequence[torch.Tensor], debiased: bool = False) -> torch.Tensor:
    """All-pairs (debiased) linear CKA of L representations of the same frames."""
    fn = debiased_cka if debiased else cka
    num = len(layers)
    out = torch.ones(num, num, dtype=torch.float64)
    for i in range(num):
        for j in range(i + 1, num):
            out[i, j] = out[j, i] = fn(layers[i], layers[j])
    return out


def cosine_matrix(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    """All-pairs mean over frames of the per-frame cosine similarity."""
    num = len(layers)
    out = torch.empty(num, num, dtype=torch.float64)
    for i in range(num):
        for j in range(num):
            out[i, j] = F.cosine_similarity(_f64(layers[i]), _f64(layers[j]), dim=1, eps=1e-300).mean()
    return out


def _knn_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (n, n) mask of each row's k nearest other rows (cosine / unit-sphere L2)."""
    z = F.normalize(_f64(x), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-float("inf"))
    idx = torch.argsort(sim, dim=1, descending=True, stable=True)[:, :k]
    mask = torch.zeros_like(sim, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return mask


def mutual_knn(x: torch.Tensor, y: torch.Tensor, k: int = 10) -> float:
    """Brute-force mutual k-NN alignment ``mean_t |N_x(t) ∩ N_y(t)| / k`` (Huh et al., 2024)."""
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"mutual k-NN needs more than k={k} examples, got {n}")
    overlap = (_knn_mask(x, k) & _knn_mask(y, k)).sum(1).to(torch.float64)
    return float(overlap.mean() / k)


def mutual_knn_matrix(layers: Sequence[torch.Tensor], k: int = 10) -> torch.Tensor:
    """All-pairs brute-force mutual k-NN alignment."""
    masks: List[torch.Tensor] = [_knn_mask(h, k) for h in layers]
    num = len(layers)
    out = torch.ones(num, num, dtype=torch.float64)
    for i in range(num):
        for j in range(i + 1, num):
            out[i, j] = out[j, i] = (masks[i] & masks[j]).sum(1).to(torch.float64).mean() / k
    return out


def minibatch_cka(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    debiased: bool = False,
    aggregate: Literal["cka", "hsic"] = "cka",
) -> float:
    """CKA estimated on consecutive minibatches of ``batch_size`` frames.

    ``aggregate="cka"``: mean of the per-minibatch Gram CKA (the redundancy paper's code);
    ``aggregate="hsic"``: HSIC terms summed over minibatches, then normalised once
    (torch_cka, Nguyen et al. 2021 -- meant with ``debiased=True``).  A trailing minibatch
    smaller than ``batch_size`` is dropped, as a ``drop_last`` loader would.
    """
    x, y = _f64(x), _f64(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}")
    if batch_size < (4 if debiased else 2) or batch_size > x.shape[0]:
        raise ValueError(f"batch_size must be in [{4 if debiased else 2}, {x.shape[0]}], got {batch_size}")
    hsic = hsic_unbiased if debiased else hsic_biased
    values, hxy, hxx, hyy = [], 0.0, 0.0, 0.0
    for start in range(0, x.shape[0] - batch_size + 1, batch_size):
        k = gram_linear(x[start : start + batch_size])
        l = gram_linear(y[start : start + batch_size])
        xy, xx, yy = hsic(k, l), hsic(k, k), hsic(l, l)
        values.append(float(xy / torch.sqrt(xx * yy)))
        hxy, hxx, hyy = hxy + float(xy), hxx + float(xx), hyy + float(yy)
    if aggregate == "cka":
        return sum(values) / len(values)
    if aggregate == "hsic":
        return hxy / (hxx * hyy) ** 0.5
    raise ValueError(f"aggregate must be 'cka' or 'hsic', got {aggregate!r}")
