"""A real ``torchrun --nproc_per_node 2`` (gloo, CPU) of ``s3prl-redundancy similarity`` writes the numbers of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from s3prl_redundancy.cli import main

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # torchrun, also where no torchrun script is installed


def _audio(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for i, seconds in enumerate((0.55, 0.3, 0.8, 0.45, 0.65)):  # 5 files: rank 0 gets 3, rank 1 gets 2
        t = np.arange(int(seconds * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (140 + 25 * i) * t) + 0.05 * rng.standard_normal(t.size)
        folder.mkdir(parents=True, exist_ok=True)
        soundfile.write(folder / f"u{i}.wav", x.astype(np.float32), 16000)
    return folder


@pytest.mark.slow
def test_torchrun_two_processes_give_the_single_process_numbers(tiny_ckpts, tmp_path):
    data = _audio(tmp_path / "audio")
    # batch size 1: HuBERT's first GroupNorm sees the padded waveform, so a batch's hidden states depend on its
    # composition, which sharding changes; one utterance per forward makes them the same in both runs.
    # mknn samples 64 of the ~150 frames by their keys: the sample must span both shards identically.
    args = ["similarity", "--upstream", "hubert_local", "--ckpt", str(tiny_ckpts["hubert"]), "--data", str(data),
            "--batch-size", "1", "--mknn-k", "5", "--mknn-max-frames", "64", "--seed", "1", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")  # one thread: the same kernels everywhere
    multi = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "s3prl_redundancy.cli",
                              *args, "--out", str(tmp_path / "multi"), "--checkpoint-every", "1"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the single-process reference, in this process while torchrun works
        assert main([*args, "--out", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
        out, err = multi.communicate(timeout=240)
    assert multi.returncode == 0, f"torchrun failed:\n{out}\n{err}"
    summaries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["processes"] == 2  # rank 0 alone reports and writes

    a = json.loads((tmp_path / "single" / "similarity.json").read_text())
    b = json.loads((tmp_path / "multi" / "similarity.json").read_text())
    assert not (tmp_path / "multi" / ".partial").exists()  # both ranks' checkpoints removed after the results
    assert (a["num_utterances"], a["num_frames"], a["layers"]) == (b["num_utterances"], b["num_frames"], b["layers"])
    assert a["num_utterances"] == 5 and a["num_frames"] > 64
    assert set(a["metrics"]) == set(b["metrics"]) == {"cosine", "cka", "debiased_cka", "mknn"}
    for name in a["metrics"]:
        x, y = np.array(a["metrics"][name]), np.array(b["metrics"][name])
        if name == "mknn":
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, err_msg=name)
        assert a["blocks"][name]["blocks"] == b["blocks"][name]["blocks"]
    np.testing.assert_allclose(a["block_influence"], b["block_influence"], rtol=0, atol=1e-6)
    assert {p.name for p in (tmp_path / "multi").iterdir()} == {p.name for p in (tmp_path / "single").iterdir()}


def test_sharding_helpers_follow_audio_dataset_shard(tmp_path, monkeypatch):
    from s3prl_redundancy import distributed
    from s3prl_redundancy.audio import AudioDataset

    data = AudioDataset.from_data(_audio(tmp_path / "audio"))
    seen = []
    for rank in range(3):
        shard, indices = distributed.shard_dataset(data, rank, 3)
        assert indices == list(range(rank, 5, 3)) == distributed.shard_indices(5, rank, 3)
        assert [shard.utterance_id(i) for i in range(len(shard))] == [data.utterance_id(i) for i in indices]
        seen += indices
    assert sorted(seen) == list(range(5))
    plain, indices = distributed.shard_dataset(list("abcde"), 1, 2)  # any map-style dataset
    assert [plain[i] for i in range(len(plain))] == ["b", "d"] and indices == [1, 3]
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.init_from_env("cpu")  # outside torchrun: one process, nothing started
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.initialized_here) == (0, 1, False, False)
    assert distributed.all_reduce_sum([2, 3]) == [2, 3] and distributed.all_ok(True)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    from s3prl_redundancy.errors import UserInputError

    with pytest.raises(UserInputError, match="inconsistent torchrun environment: RANK=2, WORLD_SIZE=2"):
        distributed.init_from_env("cpu")
