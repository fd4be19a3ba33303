"""sync() across 2 gloo ranks (CPU) gives the single-process result for every metric."""

from __future__ import annotations

import os
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s3prl_redundancy.similarity.metrics import BUILTIN_METRICS, LinearCKA

F64 = torch.float64
N = 400
SPLIT = 170  # rank 0 gets frames [0, 170), rank 1 [170, 400): uneven shards
OPTIONS = {"mknn": {"k": 6, "max_frames": 128, "seed": 11}}


def make_data():
    g = torch.Generator().manual_seed(123)
    latent = torch.randn(N, 5, generator=g)
    layers = []
    for i in range(5):
        noise = torch.randn(N, 16, generator=g) * (0.3 + 0.5 * i)
        layers.append(latent @ torch.randn(5, 16, generator=g) + noise + 2.0 * i)
    # rank 1's frames come from a shifted distribution: different reference points per rank
    layers = [torch.cat([h[:SPLIT], 1.3 * h[SPLIT:] + 5.0]) for h in layers]
    keys = torch.arange(10_000, 10_000 + N) * 7
    return [h.double() for h in layers], keys  # float64: float64 products, so ranks == one process to round-off


def feed(metric, layers, keys, start, stop, batch):
    for s in range(start, stop, batch):
        e = min(stop, s + batch)
        metric.update([h[s:e] for h in layers], keys[s:e])


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        layers, keys = make_data()
        start, stop = (0, SPLIT) if rank == 0 else (SPLIT, N)
        results = {}
        for name, cls in BUILTIN_METRICS.items():
            metric = cls(**OPTIONS.get(name, {}))
            feed(metric, layers, keys, start, stop, batch=33 + 20 * rank)
            metric.sync()
            metric.sync()  # second call is a no-op, not a double count
            results[name] = metric.compute()
            try:
                metric.update([h[:2] for h in layers])
                results[f"{name}/update_after_sync"] = "accepted"
            except RuntimeError as exc:
                results[f"{name}/update_after_sync"] = str(exc)
        # a rank without any frame still takes part in the sync
        lonely = LinearCKA()
        if rank == 0:
            feed(lonely, layers, keys, 0, N, batch=100)
        lonely.sync()
        results["cka/one_rank_only"] = lonely.compute()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
        dist.destroy_process_group()
    except Exception:
        with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as handle:
            handle.write(traceback.format_exc())
        raise


def test_sync_on_two_gloo_ranks_matches_single_process(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    init_file = str(tmp_path / "store")
    ctx = mp.start_processes(_worker, args=(2, init_file, str(tmp_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:  # a deadlocked collective must not hang the suite
                for proc in ctx.processes:
                    if proc.is_alive():
                        proc.kill()
                pytest.fail("distributed workers did not finish within 180 s")
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:  # surface the worker's traceback
        errors = [p.read_text() for p in tmp_path.glob("rank*.err")]
        raise AssertionError(f"distributed worker failed: {exc}\n" + "\n".join(errors)) from exc

    layers, keys = make_data()
    expected = {}
    for name, cls in BUILTIN_METRICS.items():
        metric = cls(**OPTIONS.get(name, {}))
        feed(metric, layers, keys, 0, N, batch=57)
        expected[name] = metric.compute()
    single = LinearCKA()
    feed(single, layers, keys, 0, N, batch=100)

    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name in BUILTIN_METRICS:
            assert got[name].dtype == F64
            if name == "mknn":
                assert torch.equal(got[name], expected[name]), (rank, got[name], expected[name])
            else:
                torch.testing.assert_close(got[name], expected[name], atol=1e-12, rtol=0)
            assert "after sync()" in got[f"{name}/update_after_sync"]
        torch.testing.assert_close(got["cka/one_rank_only"], single.compute(), atol=1e-12, rtol=0)


def test_sync_is_a_no_op_without_distributed():
    layers, keys = make_data()
    metric = LinearCKA()
    feed(metric, layers, keys, 0, N, batch=100)
    before = metric.compute()
    metric.sync()
    metric.update([h[:3] for h in layers])  # still usable: nothing was synchronised
    assert not torch.equal(before, metric.compute())
