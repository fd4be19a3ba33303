"""A real ``torchrun --nproc_per_node 2`` (gloo, CPU) of ``s3prl-redundancy distill``: the command line under
torchrun (process group from the environment, :func:`s3prl_redundancy.distributed.init_from_env`) trains as one
process does. ``test_distill_trainer.py`` checks the same equality with a process group made by the test itself;
this one covers the path a cluster job takes (``torchrun`` / ``srun torchrun``, see docs/cluster.md)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s3prl_redundancy.cli import main
from s3prl_redundancy.distill import outputs
from s3prl_redundancy.testing.audio import write_tone_corpus

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # torchrun, also where no torchrun script is installed


def _losses(out: Path):
    with open(out / outputs.LOG, newline="") as fh:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_torchrun_two_ranks_train_as_one_process(tmp_path):
    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    # a layer-norm CNN: a real frame does not depend on the batch's padding, so 2 ranks x 2 = 1 process x 4
    teacher = save_tiny_checkpoint("wav2vec2", tmp_path / "w2v.pt", extractor_mode="layer_norm")
    data = tmp_path / "tones"
    write_tone_corpus(data, 8, seed=3, seconds=(0.8, 1.4))
    args = ["distill", "--teacher", "wav2vec2_local", "--ckpt", str(teacher), "--data", str(data), "--steps", "3",
            "--batch-size", "4", "--targets", "2,4", "--heldout", "0", "--save-every", "3", "--no-progress",
            "--no-report"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    multi = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "s3prl_redundancy.cli",
                              *args, "--out", str(tmp_path / "multi")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args, "--out", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
        out, err = multi.communicate(timeout=600)
    assert multi.returncode == 0, f"torchrun failed:\n{out[-3000:]}\n{err[-3000:]}"
    single, ddp = _losses(tmp_path / "single"), _losses(tmp_path / "multi")
    assert [s for s, _ in single] == [s for s, _ in ddp] == [1, 2, 3]
    for (step, a), (_, b) in zip(single, ddp):
        assert a == pytest.approx(b, rel=1e-5), step
    manifest = json.loads((tmp_path / "multi" / "manifest.json").read_text())
    assert manifest["training"]["world_size"] == 2
