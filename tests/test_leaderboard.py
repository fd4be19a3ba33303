"""Leaderboard: result parsing from the experts' real output formats, capacity kept, Pareto front, rebuilding
from run.json files, cost measurement (real tiny upstreams) and its cache, and the CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from s3prl_redundancy import cli
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.superb import leaderboard as lb
from s3prl_redundancy.superb import results as res
from s3prl_redundancy.superb import runs, tasks

# ------------------------------------------------------------------------------------------------
# result parsing: text exactly as s3prl 0.4.18's experts write it (copied from a real tiny run)
# ------------------------------------------------------------------------------------------------

KS_LOG = """train at step 2: 0.125
dev at step 2: 0.12903225806451613
New best on dev at step 2: 0.12903225806451613
test at step 2: 0.0625
train at step 4: 0.1875
dev at step 4: 0.0967741935483871
test at step 4: 0.0625
test at step 0: 0.09375
"""

ASR_STDOUT = (
    "[Runner] - Loading Downstream weights from the previous experiment\n\n"
    "ASR dataset test-clean: 100%|##########| 8/8 [00:00<00:00, 145257.28it/s]\n\n"
    "test-clean:   0%|          | 0/8 [00:00<?, ?it/s]\rtest-clean: 100%|##########| 8/8 [00:00<00:00, 24.40it/s]\n"
    "test-clean loss: 8.490827560424805\ntest-clean uer: 89.96960486322189\ntest-clean wer: 87.5\n"
)


def _write_ks_expdir(expdir: Path, right: int, total: int, logged: float):
    expdir.mkdir(parents=True, exist_ok=True)
    (expdir / "log.log").write_text(KS_LOG.replace("test at step 0: 0.09375", f"test at step 0: {logged}"))
    names = [f"right-2bda1187_nohash_{i}.wav" for i in range(total)]
    (expdir / "test_truth.txt").write_text("".join(f"{n} right\n" for n in names))
    (expdir / "test_predict.txt").write_text("".join(f"{n} {'right' if i < right else 'up'}\n" for i, n in enumerate(names)))


def test_parse_log_and_stdout_lines():
    assert res.parse_log_accuracies(KS_LOG, "test") == [(2, 0.0625), (4, 0.0625), (0, 0.09375)]
    assert res.parse_log_accuracies(KS_LOG, "dev") == [(2, 0.12903225806451613), (4, 0.0967741935483871)]
    assert res.parse_stdout_metric(ASR_STDOUT, "test-clean", "wer") == [87.5]
    assert res.parse_stdout_metric(ASR_STDOUT, "test-clean", "uer") == [89.96960486322189]
    assert res.parse_stdout_metric("dev-clean wer: 3\ntest acc: 0.5\rnext", "test", "acc") == [0.5]
    assert res.parse_stdout_metric("dev-clean wer: 3\n", "clean", "wer") == []  # no partial split names


def test_ks_result_from_log_checked_against_prediction_files(tmp_path):
    _write_ks_expdir(tmp_path, right=3, total=32, logged=0.09375)
    out = res.read_test_result("ks", tmp_path, test_log="test acc: 0.09375\n")
    assert out["value"] == 0.09375 and out["unit"] == "fraction" and out["utterances"] == 32
    assert out["source"] == "log.log" and out["checked_with"] == ["test_predict.txt", "test_truth.txt"]
    assert res.percent(out) == pytest.approx(9.375)
    # only lines written after the evaluation started count: an offset past the final line finds nothing
    size = (tmp_path / "log.log").stat().st_size
    with pytest.raises(res.ResultError, match="no 'test at step 0: <acc>' line"):
        res.read_test_result("ks", tmp_path, log_offset=size)
    # the log and the per-utterance files disagree: refuse rather than report either
    _write_ks_expdir(tmp_path, right=4, total=32, logged=0.09375)
    with pytest.raises(res.ResultError, match="belong to another evaluation"):
        res.read_test_result("ks", tmp_path)


def test_sid_and_er_result_formats(tmp_path):
    sid = tmp_path / "sid"
    sid.mkdir()
    (sid / "log.log").write_text("train at step 2: 0.0\ndev at step 2: 0.0\ntest at step 2: 0.0\ntest at step 0: 0.5\n")
    (sid / "test_predict.txt").write_text("id10395--vYyU_bk0do-00004 id11237\nid10608-B7kY8lsxSdX-00002 id10608\n")
    (sid / "test_truth.txt").write_text("id10395--vYyU_bk0do-00004 id10395\nid10608-B7kY8lsxSdX-00002 id10608\n")
    assert res.read_test_result("sid", sid)["value"] == 0.5
    er = tmp_path / "er"
    er.mkdir()
    (er / "log.log").write_text("dev at step 2: 0.5\nNew best on dev at step 2: 0.5\ntest at step 0: 0.25\n")
    (er / "test_fold2_predict.txt").write_text("Ses02F_impro01_F000 hap\nSes02F_impro01_F001 hap\n"
                                               "Ses02F_impro01_F002 hap\nSes02F_impro01_F003 sad\n")
    (er / "test_fold2_truth.txt").write_text("Ses02F_impro01_F000 neu\nSes02F_impro01_F001 hap\n"
                                             "Ses02F_impro01_F002 ang\nSes02F_impro01_F003 neu\n")
    out = res.read_test_result("emotion", er, fold="fold2")
    assert out["value"] == 0.25 and out["fold"] == "fold2" and out["checked_with"][0] == "test_fold2_predict.txt"
    with pytest.raises(res.ResultError, match="log.log does not exist"):
        res.read_test_result("er", tmp_path / "nothing")


def test_asr_result_from_stdout_checked_against_arks(tmp_path):
    (tmp_path / "test-clean-noLM-ref.ark").write_text("3012-97088-0001 OVER READ FIRST ALMOST\n"
                                                      "2299-39324-0002 FINE HELD BEEN PROBLEM\n")
    (tmp_path / "test-clean-noLM-hyp.ark").write_text("3012-97088-0001 OVER READ FIRST ALMOST\n"
                                                      "2299-39324-0002 OEOSEOSOSOISIOSE\n")
    assert res.wer_from_arks(tmp_path / "test-clean-noLM-hyp.ark", tmp_path / "test-clean-noLM-ref.ark") == (50.0, 8)
    out = res.read_test_result("asr", tmp_path, test_log=ASR_STDOUT.replace("87.5", "50.0"))
    assert out["value"] == 50.0 and out["unit"] == "percent" and out["source"] == "stdout"
    assert out["reference_words"] == 8 and out["checked_with"] == ["test-clean-noLM-hyp.ark", "test-clean-noLM-ref.ark"]
    with pytest.raises(res.ResultError, match="printed test-clean WER 87.5 but"):
        res.read_test_result("asr", tmp_path, test_log=ASR_STDOUT)
    assert res.read_test_result("asr", tmp_path, test_log="")["source"] == "test-clean-noLM-hyp.ark+test-clean-noLM-ref.ark"
    with pytest.raises(res.ResultError, match="did not finish"):
        res.read_test_result("asr", tmp_path / "empty", test_log="")


# ------------------------------------------------------------------------------------------------
# capacity kept and the Pareto front
# ------------------------------------------------------------------------------------------------


def test_capacity_kept_arithmetic():
    assert lb.capacity_kept("ks", 90.0, 96.0) == pytest.approx(0.9375)
    assert lb.capacity_kept("sid", 96.0, 80.0) == pytest.approx(1.2)  # can exceed 1
    assert lb.capacity_kept("asr", 10.0, 5.0) == pytest.approx(0.90 / 0.95)  # ratio of 1 - WER, not of WER
    assert lb.capacity_kept("asr", 120.0, 5.0) == 0.0  # 1 - WER clipped at 0
    assert math.isnan(lb.capacity_kept("asr", 50.0, 100.0))  # reference word accuracy 0: undefined
    assert math.isnan(lb.capacity_kept("ks", 50.0, 0.0))
    assert math.isnan(lb.capacity_kept("ks", float("nan"), 50.0))
    assert lb.task_accuracy("asr", 25.0) == 0.75 and lb.task_accuracy("er", 62.5) == 0.625


def test_pareto_front():
    # (cost, score): b dominates d; c is cheapest; a is best; e equals b (neither dominates); f has no cost
    costs = [10.0, 5.0, 1.0, 6.0, 5.0, float("nan")]
    scores = [1.0, 0.9, 0.5, 0.8, 0.9, 1.0]
    assert lb.pareto_front(costs, scores) == [True, True, True, False, True, False]
    assert lb.pareto_front([1.0, 1.0], [0.5, 0.6]) == [False, True]  # same cost, lower score: dominated
    assert lb.pareto_front([], []) == []


# ------------------------------------------------------------------------------------------------
# rebuilding from run.json files
# ------------------------------------------------------------------------------------------------


def _run(root: Path, label: str, task: str, value=None, fold=None, status="finished", entry="hubert_local",
         lr=None, args=None, error=None):
    run_dir = root / "runs" / label / runs.run_dir_name(task, fold)
    run_dir.mkdir(parents=True, exist_ok=True)
    metric = None
    if status == "finished":
        metric = {"task": task, "metric": tasks.TASKS[task].metric, "value": value,
                  "unit": tasks.TASKS[task].unit, "fold": fold}
    record = {"format": runs.RUN_FORMAT, "upstream": label, "hub_entry": entry, "task": task, "fold": fold,
              "upstream_args": args or {"k": None, "g": None}, "status": status, "metric": metric,
              "error": error, "log": str(run_dir / ("test.log" if status == "finished" else "train.log")),
              "learning_rate": {"override": lr}, "config": {"upstream_files": {}}}
    (run_dir / "run.json").write_text(json.dumps(record))


def _exproot(tmp_path: Path) -> Path:
    root = tmp_path / "exp"
    for label, ks, sid, er, wer in (("base", 0.96, 0.80, (0.64, 0.66), 6.0), ("half", 0.90, 0.40, (0.60, 0.62), 12.0)):
        _run(root, label, "ks", ks, lr=5e-5 if label == "half" else None)
        _run(root, label, "sid", sid)
        for fold, acc in zip(("fold1", "fold2"), er):
            _run(root, label, "er", acc, fold=fold)
        _run(root, label, "asr", wer)
    _run(root, "crashed", "ks", status="failed", error="training exited with status 1")
    _run(root, "crashed", "asr", 100.0)
    (root / "superb.json").write_text(json.dumps({"upstreams": ["half", "base", "crashed"], "reference": "base"}))
    return root


def test_rebuild_from_run_json(tmp_path):
    root = _exproot(tmp_path)
    board = lb.build_leaderboard(root, cost=False)
    df = board.table.set_index("upstream")
    assert list(df.index) == ["half", "base", "crashed"] and board.reference == "base"
    assert df.loc["half", "ks_acc"] == pytest.approx(90.0) and df.loc["half", "er_acc"] == pytest.approx(61.0)
    assert df.loc["half", "asr_wer"] == 12.0 and df.loc["half", "er_folds"] == "1,2"
    assert df.loc["half", "capacity_ks"] == pytest.approx(0.90 / 0.96)
    assert df.loc["half", "capacity_sid"] == pytest.approx(0.5)
    assert df.loc["half", "capacity_er"] == pytest.approx(0.61 / 0.65)
    assert df.loc["half", "capacity_asr"] == pytest.approx(0.88 / 0.94)
    expected_avg = (0.90 / 0.96 + 0.5 + 0.61 / 0.65 + 0.88 / 0.94) / 4
    assert df.loc["half", "capacity_avg"] == pytest.approx(expected_avg) and df.loc["half", "capacity_tasks"] == "ks,sid,er,asr"
    assert (df.loc["base", [f"capacity_{t}" for t in ("ks", "sid", "er", "asr")]] == 1.0).all()
    assert df.loc["half", "learning_rates"] == "ks=5e-05"
    crashed = df.loc["crashed"]
    assert math.isnan(crashed["ks_acc"]) and crashed["asr_wer"] == 100.0 and crashed["capacity_asr"] == 0.0
    log = root / "runs/crashed/ks/train.log"
    assert crashed["failures"] == f"ks: failed: training exited with status 1 (log: {log})"
    assert crashed["capacity_tasks"] == "asr"

    paths = lb.write_leaderboard(board)
    assert set(paths) == {"csv", "md", "json", "png"}
    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns) == lb.COLUMNS and len(csv) == 3
    assert csv.set_index("upstream").loc["half", "sid_acc"] == pytest.approx(40.0)
    data = json.loads(Path(paths["json"]).read_text())
    rows = {r["upstream"]: r for r in data["rows"]}
    assert rows["crashed"]["ks_acc"] is None and rows["base"]["capacity_avg"] == 1.0 and data["reference"] == "base"
    md = Path(paths["md"]).read_text()
    assert "| **base** | 96.0 | 80.0 | 65.0 | 6.0 |" in md
    assert "| crashed | failed | n/a | n/a | 100.0 |" in md and str(log) in md
    assert Path(paths["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # another reference; an unknown one lists the upstreams that have runs
    other = lb.build_leaderboard(root, reference="half", cost=False).table.set_index("upstream")
    assert other.loc["base", "capacity_sid"] == pytest.approx(2.0)
    with pytest.raises(UserInputError, match=r"reference: 'nope' has no runs .*\['half', 'base', 'crashed'\]"):
        lb.build_leaderboard(root, reference="nope", cost=False)


def test_undefined_capacity_is_explained(tmp_path):
    root = tmp_path / "exp"
    for label, ks, wer in (("ref", 0.5, 100.0), ("other", 0.25, 90.0)):
        _run(root, label, "ks", ks)
        _run(root, label, "asr", wer)
    board = lb.build_leaderboard(root, cost=False)
    assert board.reference == "other"  # no superb.json: first label alphabetically
    board = lb.build_leaderboard(root, reference="ref", cost=False)
    df = board.table.set_index("upstream")
    assert math.isnan(df.loc["other", "capacity_asr"]) and df.loc["other", "capacity_ks"] == 0.5
    assert df.loc["other", "capacity_avg"] == 0.5 and df.loc["other", "capacity_tasks"] == "ks"
    assert any("capacity kept on asr is undefined" in n and "1 - WER 0" in n for n in board.notes)


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        lb.collect_runs(tmp_path / "nope")
    with pytest.raises(UserInputError, match="nothing has run there yet"):
        lb.collect_runs(tmp_path)


class Exploding(__import__("torch").nn.Module):
    def forward(self, wavs):
        raise RuntimeError("boom")


def test_cost_of_real_tiny_upstreams_is_measured_once(tmp_path, tiny_ckpts, monkeypatch):
    import torch

    from s3prl_redundancy import upstream_loading
    from s3prl_redundancy.superb import cost

    keep = tmp_path / "keep.yaml"
    keep.write_text("keep_layers: [0, 2]\n")
    root = tmp_path / "exp"
    full_args = {"k": str(tiny_ckpts["hubert"]), "g": None}
    pruned_args = {"k": str(tiny_ckpts["hubert"]), "g": str(keep)}
    _run(root, "full", "ks", 0.5, entry="hubert_local", args=full_args)
    _run(root, "pruned", "ks", 0.25, entry="pruned_hubert", args=pruned_args)
    board = lb.build_leaderboard(root, reference="full", cost_seconds=0.5, cost_repeats=2, threads=1)
    df = board.table.set_index("upstream")
    full = upstream_loading.load_upstream("hubert_local", tiny_ckpts["hubert"])
    assert df.loc["full", "params_total"] == sum(p.numel() for p in full.parameters())
    layers = sum(p.numel() for p in full.model.encoder.layers.parameters())
    assert df.loc["full", "params_stack"] == layers  # post-LN HuBERT: the stack is encoder.layers
    assert df.loc["pruned", "params_stack"] == layers // 2
    assert df.loc["full", "params_total"] - df.loc["pruned", "params_total"] == layers // 2
    assert df.loc["pruned", "macs_per_second"] < df.loc["full", "macs_per_second"]
    assert df.loc["full", "latency_ms_per_second"] > 0 and df.loc["full", "latency_device"] == "cpu"
    assert df.loc["pruned", "capacity_ks"] == 0.5 and df.loc["pruned", "failures"] == ""
    saved = json.loads((root / "cost.json").read_text())
    assert saved["key"]["seconds"] == 0.5 and saved["upstreams"]["full"]["repeats"] == 2
    assert torch.get_num_threads() >= 1

    def no_loading(*a, **k):
        raise AssertionError("the cached cost should have been used")

    monkeypatch.setattr(upstream_loading, "load_upstream", no_loading)
    again = lb.build_leaderboard(root, reference="full", cost_seconds=0.5, cost_repeats=2, threads=1)
    assert again.table["macs_per_second"].tolist() == board.table["macs_per_second"].tolist()
    # a different measurement set-up is measured again; an upstream that cannot load gets an error, not numbers
    moved = lb.build_leaderboard(root, reference="full", cost_seconds=0.5, cost_repeats=3, threads=1)
    assert "cost: could not load the upstream" in moved.table.set_index("upstream").loc["full", "failures"]
    assert math.isnan(moved.table.set_index("upstream").loc["full", "params_total"])
    # an upstream whose forward fails is named; the others are still measured
    monkeypatch.setattr(upstream_loading, "load_upstream", lambda name, *a, **k: Exploding() if name == "pruned_hubert" else full)
    mixed = lb.build_leaderboard(root, reference="full", cost_seconds=0.5, cost_repeats=1, threads=1).table.set_index("upstream")
    assert "cost: its forward failed while measuring cost: RuntimeError: boom" in mixed.loc["pruned", "failures"]
    assert mixed.loc["full", "params_total"] == df.loc["full", "params_total"]
    # the generic measurement also takes a single upstream
    single = cost.measure_upstream_cost(full, seconds=0.25, repeats=1)
    assert single["params_total"] == df.loc["full", "params_total"] and single["macs_per_second"] > 0


def test_leaderboard_command(tmp_path, capsys):
    root = _exproot(tmp_path)
    assert cli.main(["leaderboard", str(root), "--no-cost", "--reference", "half"]) == 0
    out = capsys.readouterr().out
    assert "Reference for capacity kept: **half**" in out and (root / "leaderboard.md").is_file()
    assert cli.main(["leaderboard", str(root), "--no-cost", "--reference", "zzz"]) == 2
    assert "--reference: 'zzz' has no runs" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# intervals, SUPERB score and learning rates from the experts' per-item files
# ------------------------------------------------------------------------------------------------


def _run_with_items(root: Path, label: str, task: str, correct, fold=None, lr=1e-4, search=None):
    """A finished run whose expdir holds the per-item files s3prl's expert writes (``correct``: 0/1 per item;
    ASR: word errors per 4-word utterance)."""
    run_dir = root / "runs" / label / runs.run_dir_name(task, fold)
    expdir = run_dir / runs.EXPDIR_NAME
    expdir.mkdir(parents=True, exist_ok=True)
    spec = tasks.TASKS[task]
    first, second = (expdir / n for n in spec.prediction_files(spec.evaluate_split, fold))
    if task == "asr":
        first.write_text("".join(f"u{i} {' '.join(['x'] * e + ['w'] * (4 - e))}\n" for i, e in enumerate(correct)))
        second.write_text("".join(f"u{i} w w w w\n" for i in range(len(correct))))
        value = 100.0 * sum(correct) / (4 * len(correct))
    else:
        first.write_text("".join(f"clip{i}.wav {'yes' if c else 'no'}\n" for i, c in enumerate(correct)))
        second.write_text("".join(f"clip{i}.wav yes\n" for i in range(len(correct))))
        value = sum(correct) / len(correct)
    record = {"format": runs.RUN_FORMAT, "upstream": label, "hub_entry": "hubert_local", "task": task, "fold": fold,
              "upstream_args": {"k": None, "g": None}, "status": "finished", "error": None,
              "metric": {"task": task, "metric": spec.metric, "value": value, "unit": spec.unit, "fold": fold},
              "log": str(run_dir / "test.log"), "config": {"upstream_files": {}},
              "learning_rate": {"override": None, "effective": lr, "official": lr, **({"search": search} if search else {})}}
    (run_dir / "run.json").write_text(json.dumps(record))


def _items_exproot(tmp_path: Path, same: bool = False) -> Path:
    import numpy as np

    rng = np.random.default_rng(1)
    root = tmp_path / "exp"
    ref_ks = (rng.random(400) < 0.8).astype(int)
    ref_er = {f: (rng.random(60) < 0.6).astype(int) for f in ("fold1", "fold2")}
    ref_asr = rng.integers(0, 2, 50)
    flip = (rng.random(400) < 0.15)
    other_ks = ref_ks.copy() if same else np.where(flip, 0, ref_ks)
    search = {"grid": [1e-4, 1e-3], "chosen": 1e-3, "split": "dev", "metric": "acc",
              "trials": [{"rate": 1e-4, "value": 0.5, "step": 2}, {"rate": 1e-3, "value": 0.75, "step": 2}]}
    for label, ks in (("base", ref_ks), ("other", other_ks)):
        _run_with_items(root, label, "ks", list(ks), lr=1e-3 if label == "other" else 1e-4,
                        search=search if label == "other" else None)
        for fold, er in ref_er.items():
            _run_with_items(root, label, "er", list(er), fold=fold)
        _run_with_items(root, label, "asr", list(ref_asr))
    (root / "superb.json").write_text(json.dumps({"upstreams": ["base", "other"], "reference": "base"}))
    return root


def test_identical_predictions_give_capacity_one_with_zero_width(tmp_path):
    board = lb.build_leaderboard(_items_exproot(tmp_path, same=True), cost=False)
    row = board.table.set_index("upstream").loc["other"]
    for task in ("ks", "er", "asr"):
        assert row[f"capacity_{task}"] == 1.0
        assert row[f"capacity_{task}_low"] == row[f"capacity_{task}_high"] == 1.0
        assert row[f"capacity_{task}_verdict"] == "indistinguishable"
    assert row["capacity_avg_low"] == row["capacity_avg_high"] == 1.0 and row["verdict"] == "indistinguishable"


def test_intervals_superb_score_and_learning_rate_in_every_row(tmp_path):
    from s3prl_redundancy.superb import intervals as iv
    from s3prl_redundancy.superb.score import superb_score

    root = _items_exproot(tmp_path)
    board = lb.build_leaderboard(root, cost=False)
    df = board.table.set_index("upstream")
    base, other = df.loc["base"], df.loc["other"]
    # KS: the Wilson interval of the accuracy, recomputed from the counts
    k = round(base["ks_acc"] * 4)
    wilson = iv.wilson_interval(k, 400)
    assert (base["ks_acc_low"], base["ks_acc_high"]) == pytest.approx((100 * wilson.low, 100 * wilson.high))
    # ER over two folds: the point is the mean of the fold accuracies and lies inside its bootstrap interval
    assert base["er_acc_low"] < base["er_acc"] < base["er_acc_high"] and not math.isnan(base["er_fold_std"])
    # the compressed model lost 15 % of its correct KS items: distinguishable, and the interval says so
    assert other["capacity_ks_high"] < 1.0 and other["capacity_ks_verdict"] == "distinguishable"
    assert other["verdict"] == "distinguishable: KS worse" and base["verdict"] == "reference"
    assert other["capacity_avg_low"] < other["capacity_avg"] < other["capacity_avg_high"]
    # the SUPERB score over exactly the tasks run, with the site's formula, and its interval
    expected = superb_score({"KS": base["ks_acc"], "ER": base["er_acc"], "ASR": base["asr_wer"]})
    assert base["superb_score"] == pytest.approx(expected.score) and base["superb_score_tasks"] == "KS, ER, ASR"
    assert base["superb_score_low"] < base["superb_score"] < base["superb_score_high"]
    assert base["superb_ks"] == pytest.approx(expected.task_scores["KS"])
    # every row carries its learning rates; the search that chose one is recorded
    assert base["learning_rates"] == "ks=0.0001,er=0.0001,asr=0.0001"
    assert other["learning_rates"].startswith("ks=0.001,")
    assert other["lr_search"] == "ks: 0.001 by best dev acc (0.0001: 0.5, 0.001: 0.75)"
    md = board.markdown
    assert "SUPERB score over KS, ER, ASR" in md and "distinguishable: KS worse" in md
    assert re.search(r"\| other \| \d+\.\d \[\d+\.\d, \d+\.\d\] \|", md)  # KS accuracy with its interval


def test_rebuilt_leaderboard_is_byte_identical(tmp_path):
    root = _items_exproot(tmp_path)
    first = {k: Path(p).read_bytes() for k, p in lb.write_leaderboard(lb.build_leaderboard(root, cost=False)).items()
             if k != "png"}
    second = {k: Path(p).read_bytes() for k, p in lb.write_leaderboard(lb.build_leaderboard(root, cost=False)).items()
              if k != "png"}
    assert first == second
    data = json.loads(first["json"])
    assert data["intervals"]["other"]["capacity"]["ks"]["verdict"] == "distinguishable"
    scores = data["intervals"]["base"]["scores"]
    assert scores["ks"]["method"] == "wilson" and scores["er"]["method"].startswith("bootstrap(2000, seed=2)")
    assert len(data["intervals"]["base"]["er_folds"]["folds"]) == 2


def test_average_interval_covers_the_tasks_where_capacity_is_defined(tmp_path):
    root = tmp_path / "exp"
    ks = [1, 0] * 50
    for label, er in (("base", [0] * 40), ("other", [1] * 10 + [0] * 30)):  # the reference scores 0 on ER
        _run_with_items(root, label, "ks", ks)
        _run_with_items(root, label, "er", er, fold="fold1")
    (root / "superb.json").write_text(json.dumps({"upstreams": ["base", "other"], "reference": "base"}))
    row = lb.build_leaderboard(root, cost=False).table.set_index("upstream").loc["other"]
    assert row["capacity_tasks"] == "ks" and math.isnan(row["capacity_er"])
    assert row["capacity_avg"] == 1.0 and row["capacity_avg_low"] == row["capacity_ks_low"] == 1.0
    assert row["capacity_avg_high"] == row["capacity_ks_high"] == 1.0


def test_layer_consistency_ks_comparison_pairs_the_runs_clip_by_clip(tmp_path):
    """``layer_consistency.measure.ks_comparison`` (the KS table of docs/layer_consistency.md) reads each run's
    per-clip predictions: accuracy with its Wilson interval, and the capacity A keeps of B, paired."""
    from s3prl_redundancy.layer_consistency.measure import ks_comparison
    from s3prl_redundancy.superb import intervals as iv

    root = tmp_path / "exp"
    full, cut = [1] * 40 + [0] * 10, [1] * 30 + [0] * 20  # cut is wrong on 10 clips full gets right
    _run_with_items(root, "d6", "ks", full)
    _run_with_items(root, "d4", "ks", cut)
    _run(root, "broken", "ks", status="failed", error="x")
    result = ks_comparison(root, ["d4/d6"], resamples=500)
    assert result["test_clips"] == 50 and set(result["accuracy_percent"]) == {"d4", "d6"}
    assert result["accuracy_percent"]["d6"][0] == 80.0 and result["accuracy_percent"]["d4"][0] == 60.0
    ci = iv.wilson_interval(30, 50)
    assert result["accuracy_percent"]["d4"][1:] == [round(100 * ci.low, 2), round(100 * ci.high, 2)]
    pair = result["paired"]["d4/d6"]
    assert pair["kept"][0] == 0.75 and pair["difference_points"][0] == -20.0
    assert pair["difference_points"][2] < 0 and pair["verdict"] == "distinguishable"
