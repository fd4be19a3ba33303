"""Low-rank approximation of the transformer's linear layers by truncated SVD.

``W (out x in) ~ U_r S_r V_r^T`` is stored as two linear layers, ``down = S_r^{1/2} V_r^T`` (``r x in``, no
bias) and ``up = U_r S_r^{1/2}`` (``out x r``, the original bias): ``r (in + out)`` weights and MACs per
frame instead of ``in * out``. The rank is given directly (``--rank R``, capped at ``min(in, out)``) or
chosen per matrix as the smallest that keeps a fraction of the spectral energy (``--energy E``:
``sum_{i<=r} s_i^2 >= E * sum_i s_i^2``). A matrix whose factorisation would not be smaller
(``r (in + out) >= in * out``) stays dense unless ``only_if_smaller=False``. The decomposition runs in
float64 (eigendecomposition of the smaller Gram matrix, see :func:`_spectrum`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import UserInputError
from .structure import LinearBridge, LowRankLinear

GROUPS = {
    "ffn": ("fc1", "fc2"),
    "attention": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"),
}
ALIASES = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
           "out_proj": "self_attn.out_proj"}
DEFAULT_MODULES = GROUPS["ffn"] + GROUPS["attention"]


def parse_modules(spec: Optional[str]) -> Tuple[str, ...]:
    """``"ffn,attention"`` / ``"fc1,q_proj"`` -> module paths inside a layer."""
    if spec is None or not str(spec).strip():
        return DEFAULT_MODULES
    out: List[str] = []
    for item in (s.strip() for s in str(spec).split(",") if s.strip()):
        if item in GROUPS:
            out.extend(GROUPS[item])
        elif item in ALIASES:
            out.append(ALIASES[item])
        elif item in DEFAULT_MODULES:
            out.append(item)
        else:
            raise UserInputError(
                f"`lowrank_modules`: unknown module {item!r}; use ffn, attention or any of "
                f"fc1, fc2, q_proj, k_proj, v_proj, out_proj"
            )
    return tuple(dict.fromkeys(out))


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    if not 0.0 < energy <= 1.0:
        raise UserInputError(f"`energy` must be in (0, 1], got {energy}")
    power = singular_values.double().square()
    cumulative = torch.cumsum(power, 0) / power.sum().clamp(min=1e-300)
    return int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=torch.float64) - 1e-12).item()) + 1


def _spectrum(w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, bool]:
    """Singular values (descending) and the singular vectors of the smaller side of ``w`` (float64), from the
    eigendecomposition of the smaller Gram matrix: ``(s, V, True)`` with right vectors ``V`` (in x k) when
    ``in <= out``, else ``(s, U, False)`` with left vectors. Several times faster than a full SVD on CPU, and
    exact to float64 rounding for float32 weights (condition numbers far below 1e8)."""
    right = w.shape[1] <= w.shape[0]
    gram = w.T @ w if right else w @ w.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    return evals[order].clamp(min=0.0).sqrt(), evecs[:, order], right


def factorise(linear: nn.Linear, rank: Optional[int] = None, energy: Optional[float] = None) -> Tuple[LowRankLinear, Dict[str, Any]]:
    """The truncated-SVD factorisation of ``linear`` at ``rank`` or ``energy``: ``up @ down`` is the best
    rank-``r`` approximation of the weight (Eckart-Young), ``down`` and ``up`` sharing ``sqrt(s_i)``."""
    if (rank is None) == (energy is None):
        raise UserInputError("low-rank approximation needs exactly one of `rank` R or `energy` E")
    w = linear.weight.detach().double()
    s, vectors, right = _spectrum(w)
    full = min(w.shape)
    if rank is not None:
        if int(rank) < 1:
            raise UserInputError(f"`rank` must be at least 1, got {rank}")
        r = min(int(rank), full)
    else:
        r = rank_for_energy(s, float(energy))
    s_r = s[:r]
    live = s_r > 1e-12 * max(float(s[0]), 1e-300)  # directions with no energy get zero factors
    root = torch.where(live, s_r.sqrt(), torch.zeros_like(s_r))
    inv_root = torch.where(live, 1.0 / s_r.clamp(min=1e-300).sqrt(), torch.zeros_like(s_r))
    if right:  # W V_r = U_r S_r
        v_r = vectors[:, :r]
        down = root[:, None] * v_r.T
        up = (w @ v_r) * inv_root[None, :]
    else:  # U_r^T W = S_r V_r^T
        u_r = vectors[:, :r]
        up = u_r * root[None, :]
        down = inv_root[:, None] * (u_r.T @ w)
    new = LowRankLinear(linear.in_features, linear.out_features, r, bias=linear.bias is not None)
    dtype = linear.weight.dtype
    new.down.weight.data = down.to(dtype).contiguous()
    new.up.weight.data = up.to(dtype).contiguous()
    if linear.bias is not None:
        new.up.bias.data = linear.bias.detach().clone()
    kept_energy = float(s_r.square().sum() / s.square().sum().clamp(min=1e-300))
    return new, {"rank": r, "full_rank": full, "energy": kept_energy,
                 "parameters_dense": linear.in_features * linear.out_features,
                 "parameters_factorised": r * (linear.in_features + linear.out_features)}


def low_rank_model(model, rank: Optional[int] = None, energy: Optional[float] = None,
                   modules: Sequence[str] = DEFAULT_MODULES, only_if_smaller: bool = True) -> Dict[str, Any]:
    """Factorise ``modules`` of every transformer layer of ``model`` in place; returns a per-matrix report."""
    report: Dict[str, Any] = {}
    for pos, layer in enumerate(model.encoder.layers):
        if isinstance(layer, LinearBridge):
            continue
        for path in modules:
            parent = layer
            parts = path.split(".")
            for p in parts[:-1]:
                parent = getattr(parent, p)
            old = getattr(parent, parts[-1])
            key = f"{pos}.{path}"
            if isinstance(old, LowRankLinear):
                report[key] = {"skipped": "already factorised"}
                continue
            if type(old) is not nn.Linear:
                report[key] = {"skipped": f"{type(old).__name__} is not nn.Linear"}
                continue
            new, info = factorise(old, rank, energy)
            if only_if_smaller and info["parameters_factorised"] >= info["parameters_dense"]:
                report[key] = dict(info, kept_dense=True)
                continue
            setattr(parent, parts[-1], new)
            report[key] = info
    if not any("rank" in v and not v.get("kept_dense") for v in report.values()):
        raise UserInputError(
            "low-rank approximation changed no matrix: at this rank/energy no factorisation is smaller than the "
            "dense matrix (rank must be below in*out/(in+out)); lower `rank` or `energy`"
        )
    return report
