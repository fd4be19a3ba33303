"""Shared settings, models and the result schema of the benchmark suite (``make bench``).

Every benchmark records its figures as RATIOS measured in one run against a named reference, one value
per interleaved round (the two sides take turns within each round, see
:func:`s3prl_redundancy.compression.cost.time_rounds`), plus absolute numbers as context::

    benchmark.extra_info["ratios"] = {case: {"values": [ratio per round, ...], "reference": "what divides",
                                             "target": "<= 1.25" or None, "floor": float or None}}
    benchmark.extra_info["context"] = {name: number or short text, ...}
    benchmark.extra_info["device"] = "cpu" | "cuda"        (optional; CUDA cases get their own section)

:func:`~s3prl_redundancy.testing.benchmarks.record_ratios` / ``record_context`` fill it (plain helpers and
settings live in :mod:`s3prl_redundancy.testing.benchmarks`; this file holds the fixtures and hooks); ``benchmarks/render_performance.py`` turns the JSON
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
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import torch

from s3prl_redundancy.testing.benchmarks import LAYERS, ROUNDS, SECONDS, THREADS, build_variants, waveforms


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
    from s3prl_redundancy.testing.models import BASE_OVERRIDES, build_checkpoint

    compat.apply()
    return build_checkpoint("hubert", num_layers=LAYERS, seed=0, **BASE_OVERRIDES)


@pytest.fixture(scope="session")
def base_upstream(base_ckpt):
    """s3prl's own HuBERT expert for :func:`base_ckpt` (the full model, the distillation teacher)."""
    from s3prl_redundancy.compression.structure import make_upstream

    return make_upstream(base_ckpt).eval()


@pytest.fixture(scope="session")
def variants(base_ckpt, base_upstream):
    return build_variants(base_ckpt, base_upstream)


@pytest.fixture(scope="session")
def variant_macs(variants):
    """MACs of one forward on ``SECONDS`` of audio (one utterance) of every variant and the front end."""
    from s3prl_redundancy.compression.cost import macs

    wav = waveforms(1)
    return {name: macs(lambda m=module: m(wav)) for name, (_, module) in variants.items()}
