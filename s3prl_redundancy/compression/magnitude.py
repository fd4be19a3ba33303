"""Unstructured magnitude pruning: set the smallest-magnitude weights of the transformer's linear layers to 0.

Exactly ``floor(sparsity * n)`` weights are zeroed per matrix (``scope="module"``) or over all of them
together (``scope="global"``); biases, layer norms, the convolutional front end and the position
convolution are left alone. Ties are broken by position, so the result is deterministic.

Honest accounting: the checkpoint keeps dense tensors of the same shapes, so it is neither smaller on disk
nor faster on dense kernels (PyTorch's CPU and GPU matmuls multiply the zeros like any other number);
only the count of non-zero parameters falls. A speed-up needs a sparse runtime or structured sparsity
(heads, low rank, layers). The manifest records the measured latency before and after to show it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from ..errors import UserInputError

NOTE = ("unstructured sparsity: tensors stay dense, so the checkpoint is not smaller and dense kernels are not "
        "faster; only the number of non-zero weights falls")


def prunable_weights(model) -> List[Tuple[str, nn.Parameter]]:
    """``(name, weight)`` of every linear layer's weight inside the transformer layers (incl. bridges and
    low-rank factors)."""
    out = []
    for pos, layer in enumerate(model.encoder.layers):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                out.append((f"encoder.layers.{pos}.{name}.weight", module.weight))
    return out


def _zero_smallest(flat_abs: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` smallest entries (stable: earlier position first among equals)."""
    return torch.sort(flat_abs, stable=True).indices[:k]


def _zero_at(weight: torch.Tensor, flat_index: torch.Tensor) -> None:
    values = weight.detach().reshape(-1).clone()
    values[flat_index] = 0.0
    weight.data = values.view(weight.shape)


def magnitude_prune(model, sparsity: float, scope: str = "module") -> Dict[str, Any]:
    if not 0.0 < sparsity < 1.0:
        raise UserInputError(f"`sparsity` is the fraction of weights set to zero, strictly between 0 and 1; got {sparsity}")
    if scope not in ("module", "global"):
        raise UserInputError(f"`magnitude_scope` must be module or global, got {scope!r}")
    weights = prunable_weights(model)
    if not weights:
        raise UserInputError("the model has no linear layers to prune")
    report: Dict[str, Any] = {"sparsity_requested": sparsity, "scope": scope, "note": NOTE, "matrices": {}}
    with torch.no_grad():
        if scope == "module":
            for name, w in weights:
                k = int(sparsity * w.numel())
                idx = _zero_smallest(w.detach().abs().flatten(), k)
                _zero_at(w, idx)
        else:
            flat = torch.cat([w.detach().abs().flatten() for _, w in weights])
            k = int(sparsity * flat.numel())
            mask = torch.ones_like(flat, dtype=torch.bool)
            mask[_zero_smallest(flat, k)] = False
            start = 0
            for _, w in weights:
                n = w.numel()
                _zero_at(w, (~mask[start : start + n]).nonzero().flatten())
                start += n
        total = zeros = 0
        for name, w in weights:
            z = int((w == 0).sum())
            report["matrices"][name] = {"numel": w.numel(), "zeros": z, "sparsity": z / w.numel()}
            total += w.numel()
            zeros += z
    report["weights"] = total
    report["zeros"] = zeros
    report["sparsity_achieved"] = zeros / total
    return report
