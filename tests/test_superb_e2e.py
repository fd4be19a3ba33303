"""End to end: the mini-SUPERB corpus, then `s3prl-redundancy superb` trains and tests a tiny random HuBERT
(`hubert_local`) and a layer-pruned copy (`pruned_hubert -g keep.yaml`) on KS, SID, ER (2 folds) and ASR
through s3prl's real `run_downstream`; a runner killed mid-training resumes from its checkpoint, a second
invocation re-runs nothing, a crashing upstream fails alone with its log, and the leaderboard is complete.

The runs use the smoke profile shortened further with --recipe-override (4 steps, batches of 2, a 32-wide
BiLSTM for ASR); KS gets 8 steps so that the runner can be killed between two checkpoints."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from s3prl_redundancy import cli
from s3prl_redundancy.superb import tts
from s3prl_redundancy.tfevents import read_dir_scalars

pytestmark = pytest.mark.slow

TINY = [
    "--profile", "smoke", "--er-folds", "1,2", "--threads", "1", "--jobs", "2", "--cost-repeats", "3",
    "--recipe-override", "runner.total_steps=4", "--recipe-override", "runner.eval_step=2",
    "--recipe-override", "runner.save_step=2", "--recipe-override", "runner.log_step=2",
    "--recipe-override", "ks:runner.total_steps=8",
    "--recipe-override", "ks:downstream_expert.datarc.batch_size=2",
    "--recipe-override", "downstream_expert.datarc.train_batch_size=2",
    "--recipe-override", "asr:downstream_expert.datarc.batch_size=2",
    "--recipe-override", "sid:downstream_expert.datarc.max_timestep=16000",
    "--recipe-override", "asr:downstream_expert.modelrc.project_dim=32",
    "--recipe-override", "asr:downstream_expert.modelrc.RNNs.dim=[32, 32]",
]
RUNS = ("ks", "sid", "er-fold1", "er-fold2", "asr")
UPSTREAMS = ("base", "pruned")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not tts.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng): the mini-SUPERB corpus cannot be built")
    from s3prl_redundancy.superb.corpus import build_corpus

    return build_corpus(tmp_path_factory.mktemp("mini_superb"), "tiny", seed=0, workers=2)


@pytest.fixture(scope="module")
def superb_run(corpus, tmp_path_factory):
    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    work = tmp_path_factory.mktemp("superb_e2e")
    ckpt = save_tiny_checkpoint("hubert", work / "hubert.pt", num_layers=4, seed=0)
    (work / "keep.yaml").write_text("keep_layers: [0, 2]\n")
    out = work / "exp"
    base_args = ["--upstream-args", f"base:k={ckpt}"]
    both = ["--upstreams", "base=hubert_local,pruned=pruned_hubert", "--tasks", "ks,sid,er,asr", *base_args,
            "--upstream-args", f"pruned:k={ckpt},g={work / 'keep.yaml'}"]
    common = ["--data-root", str(corpus.root), "--out", str(out), *TINY]
    timings = {}

    # 1. a runner killed (with its s3prl child) as soon as base/ks has saved a complete checkpoint
    t0 = time.perf_counter()
    expdir = out / "runs" / "base" / "ks" / "expdir"
    with open(work / "killed_runner.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "s3prl_redundancy.cli", "superb", "--upstreams", "base=hubert_local", "--tasks", "ks",
             *base_args, *common, "--no-leaderboard"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    killed_at = None
    for _ in range(15000):  # poll every 20 ms, at most about 5 minutes, for the first complete checkpoint
        if proc.poll() is not None:
            break
        done = sorted(p for p in expdir.glob("states-*.ckpt") if zipfile.is_zipfile(p)) if expdir.is_dir() else []
        if done:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = done[0].name
            break
        time.sleep(0.02)
    proc.wait()
    timings["killed_runner"] = time.perf_counter() - t0
    assert killed_at is not None, (work / "killed_runner.log").read_text()[-3000:]

    # 2. the benchmark: resumes base/ks, runs everything else, writes the leaderboard
    t0 = time.perf_counter()
    code = cli.main(["superb", *both, *common])
    timings["benchmark"] = time.perf_counter() - t0
    board = json.loads((out / "leaderboard.json").read_text())
    records = {f"{u}/{r}": json.loads((out / "runs" / u / r / "run.json").read_text()) for u in UPSTREAMS for r in RUNS}
    print(f"\nsuperb e2e timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
    return SimpleNamespace(out=out, code=code, killed_at=killed_at, board=board, records=records, both=both,
                           common=common, ckpt=ckpt, work=work, corpus=corpus, timings=timings)


def test_every_task_trains_and_tests_through_s3prl(superb_run):
    assert superb_run.code == 0
    for name, rec in superb_run.records.items():
        run_dir = superb_run.out / "runs" / name
        assert rec["status"] == "finished", (name, rec["error"], rec["log"])
        assert rec["train"]["returncode"] == 0 and rec["test"]["returncode"] == 0
        launched = rec["train"]["command"]
        assert launched[1:3] == ["-m", "s3prl.run_downstream"] or (name.endswith("sid") and launched[1] == "-c")
        assert len(list((run_dir / "expdir").glob("args_*.yaml"))) >= 2  # s3prl's own record of train and test
        test_log = (run_dir / "test.log").read_text(errors="replace")
        assert "[Runner] - Loading Downstream weights from the previous experiment" in test_log
        features = 3 if name.startswith("pruned") else 5  # kept layers + the transformer input
        assert f"Take a list of {features} features" in test_log
        metric = rec["metric"]
        assert metric["checked_with"], name  # the logged metric matched the per-utterance files
        assert (0.0 <= metric["value"] <= 1.0) if metric["metric"] == "acc" else metric["value"] >= 0.0
        assert rec["config"]["profile"] == "smoke" and rec["recipe_overrides"]["runner.total_steps"] in (4, 8)
    er = superb_run.records["base/er-fold2"]
    assert er["fold"] == "fold2" and "test_fold: fold2" in Path(er["recipe"]["config_path"]).read_text()
    assert superb_run.records["base/asr"]["test"]["command"][superb_run.records["base/asr"]["test"]["command"].index("-t") + 1] == "test-clean"


def test_killed_runner_resumed_from_its_checkpoint(superb_run):
    rec = superb_run.records["base/ks"]
    assert rec["train"]["attempts"] == 2
    assert Path(rec["train"]["resumed_from"]).name == superb_run.killed_at
    train_log = (superb_run.out / "runs/base/ks/train.log").read_text(errors="replace")
    assert f"[Runner] - Resume from {superb_run.out / 'runs/base/ks/expdir' / superb_run.killed_at}" in train_log
    assert "[Runner] - Loading Optimizer weights from the previous experiment" in train_log
    steps = [s for s, _ in read_dir_scalars(superb_run.out / "runs/base/ks/expdir")["speech_commands/train-acc"]]
    assert max(steps) == 8  # training went on to the end
    assert superb_run.records["pruned/ks"]["train"]["attempts"] == 1


def test_leaderboard_has_every_cell(superb_run):
    board = superb_run.board
    rows = {r["upstream"]: r for r in board["rows"]}
    assert list(rows) == ["base", "pruned"] and board["reference"] == "base"
    for label, row in rows.items():
        for col in ("ks_acc", "sid_acc", "er_acc", "asr_wer", "params_total", "params_stack", "macs_per_second",
                    "latency_ms_per_second", "capacity_avg"):
            assert row[col] is not None and not math.isnan(row[col]), (label, col)
        assert row["latency_device"] == "cpu" and row["failures"] == "" and row["er_folds"] == "1,2"
        folds = [superb_run.records[f"{label}/er-fold{i}"]["metric"]["value"] for i in (1, 2)]
        assert row["er_acc"] == pytest.approx(100 * sum(folds) / 2)
        ref = rows["base"]
        for task, col in (("ks", "ks_acc"), ("sid", "sid_acc"), ("er", "er_acc"), ("asr", "asr_wer")):
            ref_acc = (1 - ref[col] / 100) if task == "asr" else ref[col] / 100
            acc = max(0.0, 1 - row[col] / 100) if task == "asr" else row[col] / 100
            if ref_acc > 0:
                assert row[f"capacity_{task}"] == pytest.approx(acc / ref_acc)
            else:  # undefined, and the leaderboard says why
                assert row[f"capacity_{task}"] is None
                assert any(f"capacity kept on {task} is undefined" in n for n in board["notes"])
    assert rows["pruned"]["params_stack"] == rows["base"]["params_stack"] // 2
    assert rows["pruned"]["macs_per_second"] < rows["base"]["macs_per_second"]
    for name in ("leaderboard.csv", "leaderboard.md", "pareto.png", "cost.json"):
        assert (superb_run.out / name).is_file()
    assert "| **base** |" in (superb_run.out / "leaderboard.md").read_text()


def test_leaderboard_has_superb_score_intervals_and_learning_rates(superb_run):
    """Issue 13: every row has the SUPERB score over the tasks run, a 95 % interval on every score (from the
    per-item files s3prl's experts wrote), paired capacity intervals and its learning rates; a rebuild is
    byte-identical."""
    from s3prl_redundancy.superb import leaderboard as lb
    from s3prl_redundancy.superb.score import superb_score

    board = superb_run.board
    rows = {r["upstream"]: r for r in board["rows"]}
    for label, row in rows.items():
        values = {"KS": row["ks_acc"], "SID": row["sid_acc"], "ER": row["er_acc"], "ASR": row["asr_wer"]}
        expected = superb_score(values, row["params_total"] / 1e6)
        assert row["superb_score"] == pytest.approx(expected.score) and row["superb_score_tasks"] == "KS, SID, ER, ASR"
        assert row["superb_score_p"] == pytest.approx(expected.score_p)
        assert row["superb_score_low"] <= row["superb_score"] <= row["superb_score_high"]
        for col in ("ks_acc", "sid_acc", "er_acc", "asr_wer"):
            assert row[f"{col}_low"] <= row[col] <= row[f"{col}_high"], (label, col)
        assert row["learning_rates"] == "ks=0.0001,sid=0.0001,er=0.0001,asr=0.0001"
        assert not math.isnan(row["er_fold_std"])
    pruned = rows["pruned"]
    for task in ("ks", "er"):  # accuracy tasks whose reference scored above 0 here
        if pruned[f"capacity_{task}"] is not None:
            assert pruned[f"capacity_{task}_low"] <= pruned[f"capacity_{task}"] <= pruned[f"capacity_{task}_high"]
            assert pruned[f"capacity_{task}_verdict"] in ("indistinguishable", "distinguishable")
    assert pruned["verdict"] and rows["base"]["verdict"] == "reference"
    # the average covers the tasks where capacity is defined, and so does its interval
    assert pruned["capacity_avg_low"] <= pruned["capacity_avg"] <= pruned["capacity_avg_high"]
    md = (superb_run.out / "leaderboard.md").read_text()
    assert "SUPERB score over KS, SID, ER, ASR" in md
    before = {n: (superb_run.out / n).read_bytes() for n in ("leaderboard.json", "leaderboard.md", "leaderboard.csv")}
    lb.write_leaderboard(lb.build_leaderboard(superb_run.out, threads=1, cost_repeats=3))  # cost.json is reused
    assert before == {n: (superb_run.out / n).read_bytes() for n in before}


def test_sid_file_lists_are_cached_per_run(superb_run):
    vox = Path(superb_run.corpus.datarc_for("sid")["file_path"])
    for label in UPSTREAMS:
        cache = superb_run.out / "runs" / label / "sid" / "voxceleb1_cache"
        for mode in ("train", "dev", "test"):
            with open(cache / f"{mode}.pkl", "rb") as fh:
                files = pickle.load(fh)
            assert len(files) == superb_run.corpus.counts["sid"][mode]
            assert all(f.startswith(str(vox) + os.sep) for f in files)


def test_second_invocation_resumes_without_training(superb_run):
    runs = superb_run.out / "runs"
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    board_before = (superb_run.out / "leaderboard.md").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert cli.main(["superb", *superb_run.both, *superb_run.common]) == 0
    superb_run.timings["second_invocation"] = time.perf_counter() - t0
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # no log, checkpoint, recipe or run.json was touched
    for name in superb_run.records:
        assert json.loads((runs / name / "run.json").read_text())["train"]["attempts"] == superb_run.records[name]["train"]["attempts"]
    assert (superb_run.out / "leaderboard.md").stat().st_mtime_ns > board_before  # rebuilt from run.json
    print(f"second invocation: {superb_run.timings['second_invocation']:.1f} s")


def test_crashing_upstream_fails_alone_with_its_log(superb_run, capsys):
    broken = superb_run.work / "broken.pt"
    broken.write_bytes(b"this is not a checkpoint")
    code = cli.main(["superb", "--upstreams", "base=hubert_local,broken=hubert_local", "--tasks", "ks",
                     "--upstream-args", f"base:k={superb_run.ckpt}", "--upstream-args", f"broken:k={broken}",
                     *superb_run.common])
    out = capsys.readouterr().out
    assert code == 1
    rec = json.loads((superb_run.out / "runs/broken/ks/run.json").read_text())
    log = superb_run.out / "runs/broken/ks/train.log"
    assert rec["status"] == "failed" and rec["error"] == "training exited with status 1" and rec["log"] == str(log)
    assert "Traceback" in log.read_text(errors="replace")
    assert json.loads((superb_run.out / "runs/base/ks/run.json").read_text())["status"] == "finished"
    md = (superb_run.out / "leaderboard.md").read_text()
    assert "| broken | failed |" in md and str(log) in md
    assert f"broken/ks: failed: training exited with status 1; log: {log}" in out
    rows = {r["upstream"]: r for r in json.loads((superb_run.out / "leaderboard.json").read_text())["rows"]}
    assert rows["base"]["ks_acc"] is not None and rows["pruned"]["asr_wer"] is not None  # the others are still there
