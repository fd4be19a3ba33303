"""Shared fixtures (plain helpers live in :mod:`s3prl_redundancy.testing`): small random HuBERT / wav2vec 2.0 / WavLM checkpoints in their real s3prl formats."""

from __future__ import annotations

import pytest

from s3prl_redundancy import compat

compat.apply()

FAMILIES = ("hubert", "wav2vec2", "wavlm")


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory):
    """``{family: path}`` of 4-layer random models saved in each family's s3prl local format."""
    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny_ckpts")
    return {f: save_tiny_checkpoint(f, folder / f"{f}.pt", num_layers=4, seed=0) for f in FAMILIES}


@pytest.fixture
def one_torch_thread():
    """Two shared cores: one intra-op thread per process is faster and steadier for tiny models."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
