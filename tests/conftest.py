"""Shared fixtures: small random HuBERT / wav2vec 2.0 / WavLM checkpoints in their real s3prl formats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from s3prl_redundancy import compat

compat.apply()

RECIPES = Path(__file__).resolve().parent.parent / "downstream_recipes"
FAMILIES = ("hubert", "wav2vec2", "wavlm")


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory):
    """``{family: path}`` of 4-layer random models saved in each family's s3prl local format."""
    from s3prl_redundancy.testing import save_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny_ckpts")
    return {f: save_tiny_checkpoint(f, folder / f"{f}.pt", num_layers=4, seed=0) for f in FAMILIES}


def run_python(code_or_args, cwd, env=None, timeout=300):
    """Run a fresh Python process (no state from this one) and return the CompletedProcess."""
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def one_torch_thread():
    """Two shared cores: one intra-op thread per process is faster and steadier for tiny models."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
