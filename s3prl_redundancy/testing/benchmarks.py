"""Settings, result schema and model variants of the benchmark suite (``benchmarks/``; ``make bench``).

The schema (``benchmark.extra_info["ratios"]`` / ``["context"]``) is described in ``benchmarks/conftest.py``,
which holds the pytest fixtures and hooks; these are the plain helpers the benchmark files import.
Environment: ``BENCH_AUDIO_SECONDS`` (default 2), ``BENCH_ROUNDS`` (default 5), ``BENCH_THREADS`` (default 1).
"""

from __future__ import annotations

import os
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

SECONDS = float(os.environ.get("BENCH_AUDIO_SECONDS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
SAMPLE_RATE = 16000

LAYERS = 12  # HuBERT Base: 12 x 768, 12 heads, FFN 3072, 512-channel CNN (random weights)
KEEP = (9, 6, 3)  # layer-pruned variants: the first k layers kept
HEADS_RATIO = 0.5  # head-pruned variant: half of the 144 heads removed (weight-norm importance)
LOW_RANK = 192  # low-rank variant: every attention projection and FFN matrix at rank 192
DISTILL_ARCH, DISTILL_HIDDEN = "mlp", 64  # distilled variant: the paper's mimicker, h = 64, all 12 targets

VARIANTS = ("full", *(f"pruned_{k}" for k in KEEP), "distilled", "head_pruned", "low_rank")


# ---------------------------------------------------------------------------------------- schema helpers
def record_ratios(benchmark, name: str, values: Sequence[float], reference: str, target: Optional[str] = None,
                  floor: Optional[float] = None) -> Dict[str, Any]:
    """Store one ratio case (``values``: one per interleaved round) in ``benchmark.extra_info["ratios"]``.

    ``target``: a comparison on the median such as ``"<= 0.06"`` (None: none); ``floor``: the best ratio
    the case could reach (None: none)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{name}: no ratio values")
    if target is not None:
        _check_target(target)
    entry = {"values": values, "reference": str(reference), "target": target,
             "floor": None if floor is None else float(floor)}
    benchmark.extra_info.setdefault("ratios", {})[name] = entry
    return entry


def record_context(benchmark, **values: Any) -> None:
    """Absolute numbers (seconds, frames, parameters, MACs) shown as context beside the ratios."""
    benchmark.extra_info.setdefault("context", {}).update(values)


def _check_target(target: str) -> None:
    op, _, number = str(target).strip().partition(" ")
    if op not in ("<", "<=", ">", ">=", "==") or not number:
        raise ValueError(f"target {target!r}: write it as '<= 0.06' (one of <, <=, >, >=, == and a number)")
    float(number)


def round_ratios(times: Mapping[str, List[float]], numerator: str, denominator: str) -> List[float]:
    """Per-round ratio of two functions timed side by side (``time_rounds`` output)."""
    return [a / b for a, b in zip(times[numerator], times[denominator])]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def device_params():
    """``cpu`` and, when a GPU is visible, ``cuda`` (skipped cleanly otherwise)."""
    import pytest

    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]


def waveforms(batch: int, seconds: float = SECONDS, device: Any = "cpu") -> List[torch.Tensor]:
    """``batch`` random utterances of ``seconds`` (equal lengths: no padding), fixed seed."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(int(round(seconds * SAMPLE_RATE)), generator=g) * 0.1).to(device) for _ in range(batch)]


# ---------------------------------------------------------------------------------------- models
def perturbed_student(ckpt, arch: str = DISTILL_ARCH, hidden: int = DISTILL_HIDDEN):
    """A distilled student of ``ckpt`` whose zero-initialised output layers are made non-zero, as after
    training (the cost is the same either way)."""
    from ..distill.student import Student

    torch.manual_seed(0)
    student = Student.from_teacher("hubert", ckpt, arch=arch, hidden=hidden).eval()
    with torch.no_grad():
        for p in student.mimicker.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return student


def build_variants(ckpt, full=None) -> Dict[str, Any]:
    """``{name: (checkpoint or None, module)}``; every module is called as ``module(list_of_wavs)``.
    ``full``: an upstream of ``ckpt`` already built."""
    from ..compression.compress import TechniqueOptions, compress
    from ..compression.structure import make_upstream
    from ..compression.layers import prune_checkpoint

    out: Dict[str, Any] = {"full": (ckpt, full if full is not None else make_upstream(ckpt))}
    for k in KEEP:
        pruned = prune_checkpoint(ckpt, list(range(k)))
        out[f"pruned_{k}"] = (pruned, make_upstream(pruned))
    one = prune_checkpoint(ckpt, [0])
    front = make_upstream(one)
    front.model.encoder.layers = torch.nn.ModuleList()  # CNN + projection + positional conv + layer norm only
    out["front"] = (None, front)
    out["distilled"] = (None, perturbed_student(ckpt))
    heads = compress(ckpt, source="bench", techniques=TechniqueOptions(
        techniques=("heads",), heads_ratio=HEADS_RATIO, head_importance="weight-norm")).checkpoint
    out["head_pruned"] = (heads, make_upstream(heads))
    low = compress(ckpt, source="bench", techniques=TechniqueOptions(techniques=("lowrank",), rank=LOW_RANK)).checkpoint
    out["low_rank"] = (low, make_upstream(low))
    for _, module in out.values():
        module.eval()
    return out
