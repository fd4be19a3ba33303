"""End to end on submitit's LocalExecutor (``superb --launcher submitit-local``): the cluster code path without
SLURM, with real s3prl runs (tiny HuBERT and a layer-pruned copy, KS and ER fold 1 of the mini-SUPERB corpus).

1. ``superb --no-wait`` (its own process) submits the 4 training jobs and returns; ``superb-status`` sees them.
2. base/ks's job gets a SIGTERM once it has saved a checkpoint (what SLURM sends a job it preempts): submitit's
   preemption path (our checkpoint hook) stops s3prl and requeues the job (LocalExecutor restarts a task that
   exits with 144), which resumes from the last ``states-*.ckpt`` with ``-e``.
3. A second ``superb`` (waiting) adopts the 4 jobs (nothing is submitted twice), tests each run as a job, and
   writes a complete leaderboard."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from s3prl_redundancy import cli
from s3prl_redundancy.superb import tts
from s3prl_redundancy.tfevents import read_dir_scalars

pytestmark = pytest.mark.slow

TINY = [
    "--profile", "smoke", "--er-folds", "1", "--threads", "1", "--cost-repeats", "3",
    "--recipe-override", "runner.total_steps=4", "--recipe-override", "runner.eval_step=2",
    "--recipe-override", "runner.save_step=2", "--recipe-override", "runner.log_step=2",
    "--recipe-override", "ks:runner.total_steps=8",
    "--recipe-override", "ks:downstream_expert.datarc.batch_size=2",
    "--recipe-override", "downstream_expert.datarc.train_batch_size=2",
]
RUNS = ("base/ks", "base/er-fold1", "pruned/ks", "pruned/er-fold1")


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    if not tts.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng): the mini-SUPERB corpus cannot be built")
    from s3prl_redundancy.superb.corpus import build_corpus
    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    work = tmp_path_factory.mktemp("superb_cluster")
    corpus = build_corpus(work / "mini", "tiny", seed=0, workers=2)
    ckpt = save_tiny_checkpoint("hubert", work / "hubert.pt", num_layers=4, seed=0)
    (work / "keep.yaml").write_text("keep_layers: [0, 2]\n")
    out = work / "exp"
    args = ["superb", "--upstreams", "base=hubert_local,pruned=pruned_hubert", "--tasks", "ks,er",
            "--upstream-args", f"base:k={ckpt}", "--upstream-args", f"pruned:k={ckpt},g={work / 'keep.yaml'}",
            "--data-root", str(corpus.root), "--out", str(out), "--launcher", "submitit-local", *TINY]
    t0 = time.perf_counter()
    # 1. submit and return
    # (its output goes to a file: the job processes inherit it, so a pipe would stay open until they end)
    with open(work / "no_wait.log", "w") as log:
        code = subprocess.run([sys.executable, "-m", "s3prl_redundancy.cli", *args, "--no-wait"], stdout=log,
                              stderr=subprocess.STDOUT, timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    first = dict(returncode=code.returncode, output=(work / "no_wait.log").read_text(), seconds=time.perf_counter() - t0)
    submitted = {r: json.loads((out / "runs" / r / "run.json").read_text()) for r in RUNS}
    status_out = subprocess.run([sys.executable, "-m", "s3prl_redundancy.cli", "superb-status", str(out)],
                                capture_output=True, text=True, timeout=120)
    # 2. preempt base/ks once it has a checkpoint
    expdir = out / "runs" / "base" / "ks" / "expdir"
    job_id = submitted["base/ks"]["train"].get("job_id")
    killed_at = None
    for _ in range(30000):  # every 20 ms, at most about 10 minutes
        done = sorted(p for p in expdir.glob("states-*.ckpt") if zipfile.is_zipfile(p)) if expdir.is_dir() else []
        if done:
            os.kill(int(job_id), signal.SIGTERM)
            killed_at = done[-1].name
            break
        time.sleep(0.02)
    # 3. a second call adopts the jobs and finishes the benchmark
    second_t0 = time.perf_counter()
    code = cli.main(args)
    timings = {"no_wait_call": first["seconds"], "second_call": time.perf_counter() - second_t0, "total": time.perf_counter() - t0}
    records = {r: json.loads((out / "runs" / r / "run.json").read_text()) for r in RUNS}
    final_status = subprocess.run([sys.executable, "-m", "s3prl_redundancy.cli", "superb-status", str(out), "--json"],
                                  capture_output=True, text=True, timeout=120)
    print(f"\nsuperb cluster e2e timings (s): {json.dumps({k: v and round(v, 1) for k, v in timings.items()})}")
    return dict(out=out, first=first, submitted=submitted, status_out=status_out, killed_at=killed_at, code=code,
                records=records, final_status=final_status, job_id=job_id)


def test_no_wait_submits_every_training_job_and_returns(cluster_run):
    first = cluster_run["first"]
    assert first["returncode"] == 0, first["output"][-3000:]
    assert "4 job(s) submitted and not waited for" in first["output"]
    for name, rec in cluster_run["submitted"].items():
        assert rec["status"] == "training" and rec["train"]["launcher"] == "submitit-local", name
        assert rec["train"]["job_id"], name
    assert not (cluster_run["out"] / "leaderboard.json").exists() or cluster_run["code"] == 0
    listing = cluster_run["status_out"].stdout
    assert cluster_run["status_out"].returncode == 0, cluster_run["status_out"].stderr
    for name in RUNS:
        line = next(line for line in listing.splitlines() if line.startswith(name + " "))
        assert " running " in line and cluster_run["submitted"][name]["train"]["job_id"] in line


def test_second_call_adopts_the_jobs_and_finishes_the_leaderboard(cluster_run):
    assert cluster_run["code"] == 0
    out = cluster_run["out"]
    for name, rec in cluster_run["records"].items():
        assert rec["status"] == "finished", (name, rec.get("error"), rec.get("log"))
        assert rec["train"]["attempts"] == 1 and rec["test"]["attempts"] == 1, name  # adopted, not launched again
        assert "job_id" not in rec["train"] and "job_id" not in rec["test"]
        for phase in ("train", "test"):  # submitit's own log of the job stays recorded
            assert rec[phase]["job_log"].endswith("_log.err") and Path(rec[phase]["job_log"]).is_file(), name
    jobs = sorted(p.name for p in (out / "runs" / ".submitit").iterdir() if p.name != "%j")
    assert len(jobs) == 8  # 4 training + 4 test jobs, nothing twice
    assert {r["train"]["job_id"] for r in cluster_run["submitted"].values()} <= set(jobs)
    board = json.loads((out / "leaderboard.json").read_text())
    rows = {r["upstream"]: r for r in board["rows"]}
    assert list(rows) == ["base", "pruned"]
    for label, row in rows.items():
        for col in ("ks_acc", "er_acc", "params_total", "capacity_avg"):
            assert row[col] is not None and not math.isnan(row[col]), (label, col)
        assert row["failures"] == ""
    states = {s["run"]: s["state"] for s in json.loads(cluster_run["final_status"].stdout)}
    assert states == {name: "finished" for name in RUNS}


def test_preempted_job_was_requeued_and_resumed_from_its_checkpoint(cluster_run):
    killed_at = cluster_run["killed_at"]
    assert killed_at is not None
    run = cluster_run["out"] / "runs" / "base" / "ks"
    log = (run / "train.log").read_text(errors="replace")
    assert log.count("[Runner] - Start a new experiment") == 1
    assert "job stopped (preemption or time limit): requeued" in log
    resumed = [line for line in log.splitlines() if line.startswith("[Runner] - Resume from")]
    assert len(resumed) == 1 and resumed[0].endswith(".ckpt")
    resumed_step = int(resumed[0].rsplit("states-", 1)[1][:-5])
    assert resumed_step >= int(killed_at[7:-5])  # from the checkpoint it had when it was stopped (or a later one)
    assert "[Runner] - Loading Optimizer weights from the previous experiment" in log
    steps = [s for s, _ in read_dir_scalars(run / "expdir")["speech_commands/train-acc"]]
    assert max(steps) == 8  # training went on to the end
    assert cluster_run["records"]["base/ks"]["train"]["attempts"] == 1  # the same job, requeued
