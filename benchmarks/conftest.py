"""Shared settings, models and the result schema of the benchmark suite (``make bench``).

Every benchmark records its figures as RATIOS measured in one run against a named reference, one value
per interleaved round (the two sides take turns within each round, see
:func:`s3prl_redundancy.compression.cost.time_rounds`), plus absolute numbers as context::

    benchmark.extra_info["ratios"] = {case: {"values": [ratio per round, ...], "reference": "what divides",
                                             "target": "<= 1.25" or None, "floor": float or None}}
    benchmark.extra_info["context"] = {name: number or short text, ...}
    benchmark.extra_info["device"] = "cpu" | "cuda"        (optional; CUDA cases get their own section)

:func:`record_ratios` / :func:`record_context` fill it; ``benchmarks/render_performance.py`` turns the JSON
of a run into ``docs/performance.md`` (median, min, max and spread = (max - min) / median of every ratio;
a spread over 20% is flagged). The machine, thread count, torch version and load average are added to
pytest-benchmark's ``machine_info``.

Environment: ``BENCH_AUDIO_SECONDS`` (default 2), ``BENCH_ROUNDS`` (default 5), ``BENCH_THREADS`` (default 1;
0 keeps PyTorch's default intra-op thread count). One thread is the default because on a shared machine
whose other jobs hold the cores, PyTorch's threads wait for each other: measured here with a load average of
6.8 on 2 cores, a base HuBERT forward took 2.3 s with 2 threads and 0.4 s with 1 (float64 ``eigh`` 7.6 s and
0.2 s). Every ratio compares models run with the same setting, which the page records.
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import pytest
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
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]


def waveforms(batch: int, seconds: float = SECONDS, device: Any = "cpu") -> List[torch.Tensor]:
    """``batch`` random utterances of ``seconds`` (equal lengths: no padding), fixed seed."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(int(round(seconds * SAMPLE_RATE)), generator=g) * 0.1).to(device) for _ in range(batch)]


# ---------------------------------------------------------------------------------------- settings
@pytest.fixture(scope="session", autouse=True)
def bench_threads():
    before = torch.get_num_threads()
    if THREADS > 0:
        torch.set_num_threads(THREADS)
    yield torch.get_num_threads()
    torch.set_num_threads(before)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


_LOAD_AT_START: Dict[str, Any] = {}


def pytest_sessionstart(session):
    _LOAD_AT_START["value"] = _load_average()


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["bench"] = {
        "torch": torch.__version__,
        "threads": THREADS if THREADS > 0 else torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average_start": _LOAD_AT_START.get("value"),
        "load_average_end": _load_average(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "audio_seconds": SECONDS,
        "rounds": ROUNDS,
    }


def _read_git_head(root: Path) -> Optional[str]:
    """The commit id from ``.git`` files (no git process is started)."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def pytest_benchmark_generate_commit_info(config):
    """Replaces pytest-benchmark's (which runs ``git``): only the commit id, read from the files."""
    return {"id": _read_git_head(Path(str(config.rootpath))), "project": "s3prl-redundancy"}


# ---------------------------------------------------------------------------------------- models
@pytest.fixture(scope="session")
def base_ckpt():
    """HuBERT Base's architecture with random weights (s3prl's own classes): speed and size only."""
    from s3prl_redundancy import compat
    from s3prl_redundancy.testing import BASE_OVERRIDES, build_checkpoint

    compat.apply()
    return build_checkpoint("hubert", num_layers=LAYERS, seed=0, **BASE_OVERRIDES)


@pytest.fixture(scope="session")
def base_upstream(base_ckpt):
    """s3prl's own HuBERT expert for :func:`base_ckpt` (the full model, the distillation teacher)."""
    from s3prl_redundancy.compression.structure import make_upstream

    return make_upstream(base_ckpt).eval()


def perturbed_student(ckpt, arch: str = DISTILL_ARCH, hidden: int = DISTILL_HIDDEN):
    """A distilled student of ``ckpt`` whose zero-initialised output layers are made non-zero, as after
    training (the cost is the same either way)."""
    from s3prl_redundancy.distill.student import Student

    torch.manual_seed(0)
    student = Student.from_teacher("hubert", ckpt, arch=arch, hidden=hidden).eval()
    with torch.no_grad():
        for p in student.mimicker.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return student


def build_variants(ckpt, full=None) -> Dict[str, Any]:
    """``{name: (checkpoint or None, module)}``; every module is called as ``module(list_of_wavs)``.
    ``full``: an upstream of ``ckpt`` already built."""
    from s3prl_redundancy.compression.compress import TechniqueOptions, compress
    from s3prl_redundancy.compression.structure import make_upstream
    from s3prl_redundancy.compression.layers import prune_checkpoint

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


@pytest.fixture(scope="session")
def variants(base_ckpt, base_upstream):
    return build_variants(base_ckpt, base_upstream)


@pytest.fixture(scope="session")
def variant_macs(variants):
    """MACs of one forward on ``SECONDS`` of audio (one utterance) of every variant and the front end."""
    from s3prl_redundancy.compression.cost import macs

    wav = waveforms(1)
    return {name: macs(lambda m=module: m(wav)) for name, (_, module) in variants.items()}
