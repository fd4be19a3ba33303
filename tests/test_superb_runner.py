"""SUPERB runner: option parsing, data checks, resume / refusal / crash handling (with a launcher that writes
what s3prl's experts write), and the SID cache redirection (with s3prl's real voxceleb1 dataset)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from s3prl_redundancy import cli
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.superb import leaderboard as lb
from s3prl_redundancy.superb import recipe_files as rf
from s3prl_redundancy.commands import superb as cmd
from s3prl_redundancy.superb import datafiles, planning, runs, tasks
from s3prl_redundancy.superb import launch as ln
from s3prl_redundancy.superb import runner as rn

# --------------------------------------------------------------------------------------------------
# a stand-in for `python -m s3prl.run_downstream`: writes the files and lines s3prl 0.4.18's experts write
# --------------------------------------------------------------------------------------------------

ACC = {"base": 0.75, "small": 0.5, "broken": 0.0}
WER = {"base": 20.0, "small": 40.0, "broken": 100.0}


class FakeS3prl:
    """Records every command; ``fail`` maps (run name, mode) -> exit status to return once."""

    def __init__(self):
        self.calls = []
        self.fail = {}
        self.partial_train = set()  # run names whose next training stops after states-2.ckpt (killed)

    @staticmethod
    def parse(command):
        if command[1] == "-c":  # SID launcher: python -c CODE CACHE ARGS
            assert command[2] == ln.SID_LAUNCH_CODE
            return Path(command[3]), command[4:]
        assert command[1:3] == ["-m", "s3prl.run_downstream"], command
        return None, command[3:]

    def __call__(self, command, log_path, cwd, env):
        cache, args = self.parse(command)
        cwd = Path(cwd)
        label, run = cwd.parent.name, cwd.name
        task, _, fold = run.partition("-")
        mode = args[args.index("-m") + 1]
        self.calls.append({"run": f"{label}/{run}", "mode": mode, "args": args, "cache": cache})
        if "-p" in args:
            expdir = Path(args[args.index("-p") + 1])
        else:
            expdir = Path(eval(args[args.index("-o") + 1].split("=", 1)[1]))
        expdir.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            code = self.fail.pop((f"{label}/{run}", mode), None)
            if "-k" in args and Path(args[args.index("-k") + 1]).read_bytes().startswith(b"broken"):
                code = 1
            if code is not None:
                log.write("Traceback (most recent call last):\nRuntimeError: simulated s3prl crash\n")
                return code
            if mode == "train":
                if cache is not None:
                    cache.mkdir(parents=True, exist_ok=True)
                    (cache / "train.pkl").write_bytes(b"x")
                torch.save({"Step": 2}, expdir / "states-2.ckpt")
                if f"{label}/{run}" in self.partial_train:
                    self.partial_train.discard(f"{label}/{run}")
                    return -9
                (expdir / "states-2.ckpt").unlink()
                torch.save({"Step": 4}, expdir / "states-4.ckpt")
                if task != "asr":
                    with open(expdir / "log.log", "a") as fh:
                        fh.write("train at step 2: 0.5\ndev at step 2: 0.5\nNew best on dev at step 2: 0.5\n"
                                 "test at step 2: 0.25\n")
                    torch.save({"Step": 2}, expdir / "dev-best.ckpt")
                return 0
            # evaluate
            if task == "asr":
                wer = WER[label]
                errors = int(wer / 100 * 10)
                (expdir / "test-clean-noLM-ref.ark").write_text("u1 A B C D E\nu2 F G H I J\n")
                hyp = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"]
                hyp = ["X"] * errors + hyp[errors:]
                (expdir / "test-clean-noLM-hyp.ark").write_text(f"u1 {' '.join(hyp[:5])}\nu2 {' '.join(hyp[5:])}\n")
                log.write(f"test-clean: 100%|##| 2/2 [00:00]\rtest-clean loss: 3.2\ntest-clean uer: 50.0\ntest-clean wer: {wer}\n")
            else:
                acc = ACC[label]
                stem = f"test_{fold}" if task == "er" else "test"
                n = 4
                right = int(acc * n)
                names = [f"utt{i}" for i in range(n)]
                (expdir / f"{stem}_truth.txt").write_text("".join(f"{u} a\n" for u in names))
                (expdir / f"{stem}_predict.txt").write_text(
                    "".join(f"{u} {'a' if i < right else 'b'}\n" for i, u in enumerate(names)))
                with open(expdir / "log.log", "a") as fh:
                    fh.write(f"test at step 0: {right / n}\n")
                log.write(f"test acc: {right / n}\n")
            return 0

    def runs(self, mode=None):
        return [c["run"] for c in self.calls if mode is None or c["mode"] == mode]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A fake s3prl, fake data paths (resolve_data is replaced) and synthetic costs."""
    data = tmp_path / "data"
    datarc = {}
    for task in tasks.TASKS:
        datarc[task] = {key: str(data / task / key) for key in tasks.TASKS[task].data_keys}

    def fake_resolve(root, tasks, folds=planning.DEFAULT_ER_FOLDS, overrides=None):
        return {t: dict(datarc[t]) for t in tasks}, {"root": str(root), "kind": "mini-superb", "content_sha256": "abc"}

    def fake_costs(exproot, info, **kwargs):
        return {"key": {"seconds": 1.0, "repeats": 1, "device": "cpu"},
                "upstreams": {label: {"params_total": 1000 * (i + 1), "params_stack": 500 * (i + 1),
                                      "macs_per_second": 1e6 * (i + 1), "latency_seconds_per_second": 0.01 * (i + 1),
                                      "device": "cpu", "device_name": "cpu"} for i, label in enumerate(sorted(info))}}

    monkeypatch.setattr(rn, "resolve_data", fake_resolve)
    monkeypatch.setattr(lb, "measure_costs", fake_costs)
    ckpts = {}
    for name, content in (("base", b"ok-base"), ("small", b"ok-small"), ("broken", b"broken checkpoint")):
        ckpts[name] = tmp_path / f"{name}.pt"
        ckpts[name].write_bytes(content)
    return FakeS3prl(), ckpts, tmp_path


def _options(ckpts, tmp_path, upstreams="base=hubert_local,small=pruned_hubert", **kw):
    args = [f"{name}:k={ckpts[name]}" for name in ("base", "small", "broken") if f"{name}=" in upstreams]
    kw.setdefault("er_folds", "1,2")
    return cmd.build_options(upstreams, kw.pop("tasks", "ks,sid,er,asr"), tmp_path / "data", tmp_path / "exp",
                            profile="smoke", upstream_args=args, **kw)


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------


def test_parse_upstreams_labels():
    assert cmd.parse_upstreams("hubert_local, p6=pruned_hubert") == [("hubert_local", "hubert_local"), ("p6", "pruned_hubert")]
    with pytest.raises(UserInputError, match="appears twice"):
        cmd.parse_upstreams("hubert_local,hubert_local")
    with pytest.raises(UserInputError, match="folder name"):
        cmd.parse_upstreams("a/b=hubert_local")
    with pytest.raises(UserInputError, match="empty"):
        cmd.parse_upstreams(" , ")


def test_unknown_task_lists_the_known_ones():
    assert cmd.parse_tasks("speech_commands,asr,ks") == ["ks", "asr"]
    assert cmd.parse_tasks(None) == ["ks", "sid", "er", "asr"]
    with pytest.raises(UserInputError) as e:
        cmd.parse_tasks("ks,pr")
    assert "'pr'" in str(e.value) and all(t in str(e.value) for t in ("'asr'", "'er'", "'ks'", "'sid'"))


def test_unknown_upstream_lists_the_known_ones():
    with pytest.raises(UserInputError) as e:
        planning.validate_upstreams([planning.UpstreamSpec("x", "hubert_lcoal")])
    msg = str(e.value)
    assert "hubert_lcoal" in msg and "Closest: hubert_local" in msg
    assert "pruned_hubert" in msg and "distilled_hubert" in msg and "wavlm_local" in msg  # the full list
    planning.validate_upstreams([planning.UpstreamSpec("p", "pruned_hubert"), planning.UpstreamSpec("d", "distilled_hubert")])


def test_parse_upstream_args(tmp_path):
    ckpt, cfg = tmp_path / "m.pt", tmp_path / "keep.yaml"
    ckpt.write_bytes(b"x")
    cfg.write_text("keep_layers: [0]\n")
    got = cmd.parse_upstream_args([f"p:k={ckpt},g={cfg}", "u:k=https://example.org/m.pt"], ["p", "u"])
    assert got == {"p": {"ckpt": str(ckpt), "model_config": str(cfg)}, "u": {"ckpt": "https://example.org/m.pt"}}
    # a missing local -k is refused once, by the validation every run goes through (hub ids pass for hf_* entries)
    missing = cmd.parse_upstream_args([f"p:k={tmp_path / 'missing.pt'}"], ["p"])["p"]["ckpt"]
    with pytest.raises(UserInputError, match=r"missing\.pt does not exist"):
        planning.check_upstream_files(planning.UpstreamSpec("p", "pruned_hubert", ckpt=missing))
    planning.check_upstream_files(planning.UpstreamSpec("h", "hf_hubert_custom", ckpt="facebook/hubert-base-ls960"))
    folder = tmp_path / "hf_folder"
    folder.mkdir()
    planning.check_upstream_files(planning.UpstreamSpec("p", "pruned_hubert", ckpt=str(folder)))  # a transformers folder
    with pytest.raises(UserInputError, match=r"upstream_args: .* names upstream 'q', which is not in `upstreams` \['p'\]"):
        cmd.parse_upstream_args([f"q:k={ckpt}"], ["p"])
    with pytest.raises(UserInputError, match="not k=PATH or g=PATH"):
        cmd.parse_upstream_args([f"p:x={ckpt}"], ["p"])
    with pytest.raises(UserInputError, match="twice"):
        cmd.parse_upstream_args([f"p:k={ckpt}", f"p:k={ckpt}"], ["p"])


def test_parse_learning_rates_and_folds():
    lrs = cmd.parse_learning_rates(["p:ks=5e-5,asr=1e-4", "q:all=2e-4"], ["p", "q"], ["ks", "er", "asr"])
    assert lrs == {("p", "ks"): 5e-5, ("p", "asr"): 1e-4, ("q", "ks"): 2e-4, ("q", "er"): 2e-4, ("q", "asr"): 2e-4}
    with pytest.raises(UserInputError, match="positive"):
        cmd.parse_learning_rates(["p:ks=-1"], ["p"], ["ks"])
    with pytest.raises(UserInputError, match="learning_rates: .* not in `tasks`"):
        cmd.parse_learning_rates(["p:sid=1e-4"], ["p"], ["ks"])
    with pytest.raises(UserInputError, match="unknown SUPERB task 'foo'"):
        cmd.parse_learning_rates(["p:foo=1e-4"], ["p"], ["ks"])
    assert cmd.parse_er_folds("2, fold1,2") == ["fold2", "fold1"]
    assert cmd.parse_er_folds(None) == ["fold1", "fold2", "fold3", "fold4", "fold5"]
    with pytest.raises(UserInputError, match="1..5"):
        cmd.parse_er_folds("6")


def test_parse_recipe_overrides():
    got = cmd.parse_recipe_overrides(
        ["runner.total_steps=4", "downstream_expert.datarc.train_batch_size=2",
         "asr:downstream_expert.modelrc.RNNs.dim=[32, 32]", "sid:runner.log_step=1"], ["ks", "er", "asr"])
    assert got["ks"] == {"runner.total_steps": 4}  # ks has batch_size, not train_batch_size
    assert got["er"] == {"runner.total_steps": 4, "downstream_expert.datarc.train_batch_size": 2}
    assert got["asr"]["downstream_expert.modelrc.RNNs.dim"] == [32, 32]
    assert "sid" not in got  # not selected: ignored
    with pytest.raises(UserInputError, match="did you mean runner.total_steps"):
        cmd.parse_recipe_overrides(["runner.total_step=4"], ["ks"])
    with pytest.raises(UserInputError, match="has no key"):
        cmd.parse_recipe_overrides(["ks:downstream_expert.datarc.train_batch_size=2"], ["ks"])
    with pytest.raises(UserInputError, match="not .TASK:.dotted.key=VALUE"):
        cmd.parse_recipe_overrides(["runner.total_steps"], ["ks"])


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


def test_missing_data_root_says_how_to_build_one(tmp_path):
    with pytest.raises(UserInputError) as e:
        rn.resolve_data(tmp_path / "nowhere", ["ks", "asr"])
    msg = str(e.value)
    assert f"{tmp_path / 'nowhere'} does not exist" in msg
    assert msg.startswith("data_root: ") and "build_corpus" in msg and "speech_commands_v0.01/" in msg and "LibriSpeech/" in msg


def test_wrong_layout_names_the_expected_path(tmp_path):
    root = tmp_path / "datasets"
    root.mkdir()
    with pytest.raises(UserInputError) as e:
        rn.resolve_data(root, ["ks"])
    assert f"expected folder {root / 'speech_commands_v0.01'}" in str(e.value)
    assert "`datarc_overrides`, e.g. ks:KEY=PATH" in str(e.value)
    (root / "speech_commands_v0.01").mkdir()
    with pytest.raises(UserInputError, match=f"expected folder {root / 'speech_commands_v0.01' / 'yes'}"):
        rn.resolve_data(root, ["ks"])
    with pytest.raises(UserInputError, match=f"ER root .IEMOCAP.: expected folder {root / 'IEMOCAP'},"):
        rn.resolve_data(root, ["er"], ["fold1"])
    (root / "IEMOCAP").mkdir()
    with pytest.raises(UserInputError, match=f"expected folder {root / 'IEMOCAP' / 'Session1' / 'sentences' / 'wav'}"):
        rn.resolve_data(root, ["er"], ["fold1"])
    with pytest.raises(UserInputError, match=f"{root / 'VoxCeleb1'}"):
        rn.resolve_data(root, ["sid"])
    # --datarc moves one key elsewhere (and is checked there)
    with pytest.raises(UserInputError, match=f"expected folder {tmp_path / 'elsewhere'}"):
        rn.resolve_data(root, ["asr"], datarc_overrides=cmd.parse_datarc_overrides([f"asr:libri_root={tmp_path / 'elsewhere'}"], ["asr"]))


def test_foreign_out_folder_is_refused(fake):
    launcher, ckpts, tmp_path = fake
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match='out: .* is not empty and holds files that "superb" did not write'):
        rn.run_superb(_options(ckpts, tmp_path), launcher=launcher, validate_hub=False)
    assert launcher.calls == []


# --------------------------------------------------------------------------------------------------
# running, resuming, refusing, crashing
# --------------------------------------------------------------------------------------------------


def test_runs_record_everything_and_resume_skips_finished(fake):
    launcher, ckpts, tmp_path = fake
    opts = _options(ckpts, tmp_path, learning_rates=["small:ks=5e-5"])
    summary = rn.run_superb(opts, launcher=launcher, validate_hub=False)
    assert summary["failed"] == []
    names = ["ks", "sid", "er-fold1", "er-fold2", "asr"]
    assert launcher.runs("train") == launcher.runs("evaluate") == [f"{u}/{n}" for u in ("base", "small") for n in names]

    for call in launcher.calls:  # SID through the cache launcher, the rest plain run_downstream
        if call["run"].endswith("/sid"):
            assert call["cache"] == tmp_path / "exp" / "runs" / call["run"].split("/")[0] / "sid" / "voxceleb1_cache"
        else:
            assert call["cache"] is None
    train = next(c for c in launcher.calls if c["run"] == "small/ks" and c["mode"] == "train")["args"]
    assert train[:2] == ["-m", "train"] and train[train.index("-u") + 1] == "pruned_hubert"
    assert train[train.index("-k") + 1] == str(ckpts["small"]) and train[train.index("-d") + 1] == "speech_commands"
    test = next(c for c in launcher.calls if c["run"] == "small/asr" and c["mode"] == "evaluate")["args"]
    assert test[test.index("-t") + 1] == "test-clean" and test[test.index("-e") + 1].endswith("states-4.ckpt")
    test = next(c for c in launcher.calls if c["run"] == "small/ks" and c["mode"] == "evaluate")["args"]
    assert test[test.index("-e") + 1].endswith("dev-best.ckpt")

    rec = json.loads((tmp_path / "exp/runs/small/ks/run.json").read_text())
    assert rec["upstream"] == "small" and rec["hub_entry"] == "pruned_hubert"
    assert rec["upstream_args"] == {"k": str(ckpts["small"]), "g": None}
    assert rec["task"] == "ks" and rec["profile"] == "smoke" and rec["status"] == "finished"
    assert rec["learning_rate"] == {"override": 5e-5, "effective": 5e-5, "official": 1e-4}
    assert len(rec["recipe"]["sha256"]) == 64 and Path(rec["recipe"]["config_path"]).is_file()
    assert rec["metric"]["value"] == 0.5 and rec["metric"]["checked_with"] == ["test_predict.txt", "test_truth.txt"]
    assert rec["dev_best"] is None  # the fake writes no TensorBoard file
    assert rec["log"].endswith("small/ks/test.log") and rec["wall_seconds"] > 0
    assert rec["test"]["checkpoint_kind"] == "dev-best" and rec["train"]["attempts"] == 1
    recipe = rf.load_recipe("ks", "smoke")  # the written recipe carries the lr and the data paths
    import yaml

    written = yaml.safe_load(Path(rec["recipe"]["config_path"]).read_text())
    assert written["optimizer"]["lr"] == 5e-5 and recipe["optimizer"]["lr"] == 1e-4
    assert written["downstream_expert"]["datarc"]["speech_commands_root"].endswith("ks/speech_commands_root")
    er = json.loads((tmp_path / "exp/runs/base/er-fold2/run.json").read_text())
    assert er["fold"] == "fold2" and er["metric"]["fold"] == "fold2"
    asr = json.loads((tmp_path / "exp/runs/base/asr/run.json").read_text())
    assert asr["metric"]["value"] == 20.0 and asr["metric"]["unit"] == "percent"

    board = json.loads((tmp_path / "exp/leaderboard.json").read_text())
    rows = {r["upstream"]: r for r in board["rows"]}
    assert rows["small"]["ks_acc"] == 50.0 and rows["small"]["er_acc"] == 50.0 and rows["small"]["asr_wer"] == 40.0
    assert rows["small"]["capacity_asr"] == pytest.approx(0.6 / 0.8)
    assert rows["small"]["learning_rates"] == "ks=5e-05,sid=0.0001,er=0.0001,asr=0.0001"  # every task's rate

    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "exp/runs").rglob("*") if p.is_file()}
    launcher.calls.clear()
    summary = rn.run_superb(opts, launcher=launcher, validate_hub=False)
    assert launcher.calls == [] and summary["failed"] == []
    assert all(r["skipped"] == "finished earlier" for r in summary["runs"])
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after


def test_interrupted_training_resumes_from_latest_checkpoint(fake):
    launcher, ckpts, tmp_path = fake
    opts = _options(ckpts, tmp_path, upstreams="base=hubert_local", tasks="ks,sid")
    launcher.partial_train.add("base/sid")
    summary = rn.run_superb(opts, launcher=launcher, validate_hub=False)
    rec = json.loads((tmp_path / "exp/runs/base/sid/run.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "training exited with status -9"
    assert rec["log"] == str(tmp_path / "exp/runs/base/sid/train.log")
    assert [r["status"] for r in summary["runs"]] == ["finished", "failed"]

    # as if the runner itself had been killed: the record still says "training"
    rec["status"] = "training"
    (tmp_path / "exp/runs/base/sid/run.json").write_text(json.dumps(rec))
    (tmp_path / "exp/runs/base/sid/expdir/states-3.ckpt").write_bytes(b"PK\x03\x04 cut short by a kill")
    launcher.calls.clear()
    rn.run_superb(opts, launcher=launcher, validate_hub=False)
    assert launcher.runs() == ["base/sid", "base/sid"]
    resume = launcher.calls[0]["args"]
    assert resume[:3] == ["-m", "train", "-e"] and resume[3].endswith("expdir/states-2.ckpt")  # not the truncated one
    assert resume[resume.index("-o") + 1] == f"args.expdir={str(tmp_path / 'exp/runs/base/sid/expdir')!r}"
    assert "-u" not in resume  # s3prl restores the arguments from the checkpoint
    rec = json.loads((tmp_path / "exp/runs/base/sid/run.json").read_text())
    assert rec["status"] == "finished" and rec["train"]["attempts"] == 2
    assert rec["train"]["resumed_from"].endswith("states-2.ckpt")
    assert (tmp_path / "exp/runs/base/sid/train.log").read_text().count("=====") == 2


def test_failed_test_is_retried_without_training_again(fake):
    launcher, ckpts, tmp_path = fake
    opts = _options(ckpts, tmp_path, upstreams="base=hubert_local", tasks="asr")
    launcher.fail[("base/asr", "evaluate")] = 1
    rn.run_superb(opts, launcher=launcher, validate_hub=False)
    rec = json.loads((tmp_path / "exp/runs/base/asr/run.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "evaluation exited with status 1"
    assert rec["log"].endswith("test.log") and rec["train"]["done"]
    launcher.calls.clear()
    rn.run_superb(opts, launcher=launcher, validate_hub=False)
    assert [c["mode"] for c in launcher.calls] == ["evaluate"]
    rec = json.loads((tmp_path / "exp/runs/base/asr/run.json").read_text())
    assert rec["status"] == "finished" and rec["test"]["attempts"] == 2 and rec["metric"]["value"] == 20.0


def test_run_folder_from_another_config_is_refused_without_force(fake):
    launcher, ckpts, tmp_path = fake
    rn.run_superb(_options(ckpts, tmp_path, upstreams="base=hubert_local", tasks="ks"), launcher=launcher,
                  validate_hub=False)
    changed = _options(ckpts, tmp_path, upstreams="base=hubert_local", tasks="ks", learning_rates=["base:ks=5e-5"])
    launcher.calls.clear()
    with pytest.raises(UserInputError) as e:
        rn.run_superb(changed, launcher=launcher, validate_hub=False)
    msg = str(e.value)
    assert str(tmp_path / "exp/runs/base/ks") in msg and "learning_rate: None -> 5e-05" in msg and "`force=True`" in msg
    assert launcher.calls == []
    ckpts["base"].write_bytes(b"ok-base retrained")  # another checkpoint at the same path is another config too
    with pytest.raises(UserInputError, match=r"upstream_files\.k\.sha256"):
        rn.run_superb(_options(ckpts, tmp_path, upstreams="base=hubert_local", tasks="ks"), launcher=launcher,
                      validate_hub=False)
    changed.force = True
    rn.run_superb(changed, launcher=launcher, validate_hub=False)
    assert launcher.runs() == ["base/ks", "base/ks"]
    rec = json.loads((tmp_path / "exp/runs/base/ks/run.json").read_text())
    assert rec["learning_rate"]["override"] == 5e-5 and rec["status"] == "finished"
    assert (tmp_path / "exp/runs/base/ks/train.log").read_text().count("=====") == 1  # the old run was deleted


def test_crashed_upstream_shows_failure_and_log_while_others_run(fake):
    launcher, ckpts, tmp_path = fake
    opts = _options(ckpts, tmp_path, upstreams="base=hubert_local,broken=hubert_local", tasks="ks,er")
    summary = rn.run_superb(opts, launcher=launcher, validate_hub=False)
    status = {f"{r['upstream']}/{runs.run_dir_name(r['task'], r['fold'])}": r["status"] for r in summary["runs"]}
    assert status == {"base/ks": "finished", "base/er-fold1": "finished", "base/er-fold2": "finished",
                      "broken/ks": "failed", "broken/er-fold1": "failed", "broken/er-fold2": "failed"}
    assert launcher.runs("evaluate") == ["base/ks", "base/er-fold1", "base/er-fold2"]
    board = lb.build_leaderboard(tmp_path / "exp")
    row = board.table.set_index("upstream").loc["broken"]
    log = tmp_path / "exp/runs/broken/ks/train.log"
    assert np.isnan(row["ks_acc"]) and np.isnan(row["er_acc"])
    assert f"ks: failed: training exited with status 1 (log: {log})" in row["failures"]
    assert "simulated s3prl crash" in log.read_text()
    md = board.markdown
    # columns: KS, ER (tasks nobody ran get none), SUPERB score, Score-P
    assert "| broken | failed | failed | n/a | n/a |" in md and str(log) in md
    assert board.table.set_index("upstream").loc["base", "ks_acc"] == 75.0


def test_an_error_of_one_run_does_not_stop_the_others(fake, monkeypatch):
    launcher, ckpts, tmp_path = fake
    real = rf.write_recipe

    def failing_write_recipe(path, task, *a, **k):
        if task == "sid":
            raise OSError(28, "No space left on device")
        return real(path, task, *a, **k)

    monkeypatch.setattr(rf, "write_recipe", failing_write_recipe)
    summary = rn.run_superb(_options(ckpts, tmp_path, upstreams="base=hubert_local", tasks="ks,sid,asr"),
                            launcher=launcher, validate_hub=False)
    assert [r["status"] for r in summary["runs"]] == ["finished", "failed", "finished"]
    rec = json.loads((tmp_path / "exp/runs/base/sid/run.json").read_text())
    assert rec["error"] == "runner error: OSError: [Errno 28] No space left on device"


def test_latest_and_test_checkpoint_choice(tmp_path):
    assert runs.latest_checkpoint(tmp_path) is None
    torch.save({}, tmp_path / "states-10.ckpt")
    torch.save({}, tmp_path / "states-9.ckpt")
    (tmp_path / "states-20.ckpt").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "states-x.ckpt").write_bytes(b"")
    assert runs.latest_checkpoint(tmp_path) == tmp_path / "states-10.ckpt"
    assert runs.choose_test_checkpoint("ks", tmp_path) == (tmp_path / "states-10.ckpt", "last")
    torch.save({}, tmp_path / "dev-best.ckpt")
    assert runs.choose_test_checkpoint("ks", tmp_path) == (tmp_path / "dev-best.ckpt", "dev-best")
    assert runs.choose_test_checkpoint("asr", tmp_path) == (tmp_path / "states-10.ckpt", "last")  # asr: dev-clean-best.ckpt
    torch.save({}, tmp_path / "dev-clean-best.ckpt")
    assert runs.choose_test_checkpoint("asr", tmp_path)[1] == "dev-best"


# --------------------------------------------------------------------------------------------------
# SID cache: s3prl's voxceleb1 dataset with the launcher's CACHE_PATH
# --------------------------------------------------------------------------------------------------


def _tiny_voxceleb(root: Path, speakers):
    import soundfile as sf

    for spk in speakers:
        for i in range(3):
            path = root / "dev" / "wav" / spk / "yt0000001" / f"{i + 1:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), np.zeros(1600, dtype=np.float32), 16000, subtype="PCM_16")
    datafiles.write_voxceleb1_split(root, root / "iden_split.txt")


def test_sid_launcher_keeps_a_cache_per_run(tmp_path, monkeypatch):
    import runpy

    dataset = pytest.importorskip("s3prl.downstream.voxceleb1.dataset")
    monkeypatch.setattr(dataset, "CACHE_PATH", dataset.CACHE_PATH)  # restored after the test
    shared = Path(dataset.CACHE_PATH)
    shared_before = {p.name: p.stat().st_mtime_ns for p in shared.glob("*.pkl")} if shared.is_dir() else {}
    roots = {"a": tmp_path / "vox_a", "b": tmp_path / "vox_b"}
    _tiny_voxceleb(roots["a"], ["id10001", "id10002"])
    _tiny_voxceleb(roots["b"], ["id10500"])
    seen = {}

    def fake_run_module(name, run_name=None, alter_sys=False):  # stands in for s3prl.run_downstream
        assert name == "s3prl.run_downstream" and sys.argv[0] == "run_downstream.py"
        root = Path(sys.argv[sys.argv.index("--root") + 1])
        seen[root.name] = dataset.SpeakerClassifiDataset("train", root, str(root / "iden_split.txt")).dataset

    monkeypatch.setattr(runpy, "run_module", fake_run_module)

    def launch(cache, root):
        monkeypatch.setattr(sys, "argv", ["-c", str(cache), "--root", str(root)])
        exec(ln.SID_LAUNCH_CODE, {})

    launch(tmp_path / "run_a" / "cache", roots["a"])
    launch(tmp_path / "run_b" / "cache", roots["b"])
    assert seen["vox_a"] and all(p.startswith(str(roots["a"])) for p in seen["vox_a"])
    assert seen["vox_b"] and all(p.startswith(str(roots["b"])) for p in seen["vox_b"])
    assert (tmp_path / "run_a/cache/train.pkl").is_file() and (tmp_path / "run_b/cache/train.pkl").is_file()
    # one shared cache would have served root b the file list of root a: the collision the launcher avoids
    launch(tmp_path / "run_a" / "cache", roots["b"])
    assert all(p.startswith(str(roots["a"])) for p in seen["vox_b"])
    shared_after = {p.name: p.stat().st_mtime_ns for p in shared.glob("*.pkl")} if shared.is_dir() else {}
    assert shared_after == shared_before  # site-packages untouched


# --------------------------------------------------------------------------------------------------
# CLI wiring
# --------------------------------------------------------------------------------------------------


def test_corpus_command_is_wired_and_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("keep me")
    assert cli.main(["corpus", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("s3prl-redundancy corpus: error:") and "--out: " in err and "not empty" in err
    assert (tmp_path / "x.txt").read_text() == "keep me"
    with pytest.raises(SystemExit):
        cli.main(["corpus", "--help"])
    assert "--size {small,tiny}" in capsys.readouterr().out


def test_superb_command_reports_bad_input(tmp_path, capsys):
    code = cli.main(["superb", "--upstreams", "hubert_local", "--tasks", "ks,xx", "--data-root", str(tmp_path),
                     "--out", str(tmp_path / "exp")])
    err = capsys.readouterr().err
    assert code == 2 and "--tasks: unknown SUPERB task 'xx'" in err
    code = cli.main(["superb", "--upstreams", "hubert_local", "--data-root", str(tmp_path / "none"),
                     "--out", str(tmp_path / "exp"), "--learning-rate", "hubert_local:ks=abc"])
    err = capsys.readouterr().err
    assert code == 2 and "--learning-rate: 'hubert_local:ks=abc': 'abc' is not a number" in err
    assert not (tmp_path / "exp").exists()


# --------------------------------------------------------------------------------------------------
# the Launcher interface: job ids in run.json, adopting a job after the runner died
# --------------------------------------------------------------------------------------------------


class _RunnerDied(BaseException):
    """Stands for the runner process being killed while it waits on a job (run.json keeps the job id)."""


class JobLauncher(ln.Launcher):
    """A launcher whose jobs outlive the runner: ``launch`` queues the fake s3prl, ``wait`` runs it."""

    name = "jobs"

    def __init__(self, fake_s3prl, die_on=()):
        self.fake, self.die_on, self.jobs, self.adopted, self.cancelled = fake_s3prl, set(die_on), {}, [], []

    def launch(self, request):
        job_id = f"job-{len(self.jobs) + 1}"
        self.jobs[job_id] = request
        launcher = self

        class _Handle(ln.Handle):
            def __init__(self):
                self.job_id = job_id

            def wait(self):
                if (request.name, request.phase) in launcher.die_on:
                    launcher.die_on.discard((request.name, request.phase))
                    raise _RunnerDied()
                return launcher.fake(request.command, request.log, request.cwd, request.env)

            def cancel(self):
                launcher.cancelled.append(job_id)

        return _Handle()

    def adopt(self, job_id, request):
        if job_id not in self.jobs:
            return None
        self.adopted.append((job_id, request.name, request.phase))
        queued = self.jobs[job_id]
        fake = self.fake

        class _Adopted(ln.Handle):
            def wait(self):
                return fake(queued.command, queued.log, queued.cwd, queued.env)

        return _Adopted()


def test_job_ids_are_recorded_and_adopted_after_the_runner_died(fake):
    fake_s3prl, ckpts, tmp_path = fake
    opts = _options(ckpts, tmp_path, upstreams="base=hubert_local", tasks="ks")
    launcher = JobLauncher(fake_s3prl, die_on={("base/ks", "train")})
    with pytest.raises(_RunnerDied):
        rn.run_superb(opts, launcher=launcher, validate_hub=False)
    record = json.loads((tmp_path / "exp/runs/base/ks/run.json").read_text())
    assert record["status"] == "training"
    assert record["train"]["job_id"] == "job-1" and record["train"]["launcher"] == "jobs"
    assert fake_s3prl.calls == [] and launcher.cancelled == ["job-1"]

    summary = rn.run_superb(opts, launcher=launcher, validate_hub=False)  # the job is adopted, not launched again
    assert launcher.adopted == [("job-1", "base/ks", "train")]
    assert [c["mode"] for c in fake_s3prl.calls] == ["train", "evaluate"] and summary["failed"] == []
    record = json.loads((tmp_path / "exp/runs/base/ks/run.json").read_text())
    assert record["status"] == "finished" and record["train"]["attempts"] == 1
    assert "job_id" not in record["train"] and "job_id" not in record["test"]  # finished jobs are forgotten


def test_a_launcher_that_does_not_wait_leaves_its_jobs_to_a_later_call(fake):
    """``wait()`` raising JobDetached (``--no-wait``): nothing is cancelled or failed, run.json keeps the job, no
    leaderboard yet, every run is driven at once (``parallel_runs``); the next call adopts and finishes."""
    fake_s3prl, ckpts, tmp_path = fake
    opts = _options(ckpts, tmp_path, upstreams="base=hubert_local,small=pruned_hubert", tasks="ks")

    class NoWait(JobLauncher):
        parallel_runs = 1000

        def launch(self, request):
            handle = super().launch(request)
            (request.cwd / "expdir").mkdir(exist_ok=True)  # the job has started writing, no checkpoint yet
            (request.cwd / "expdir" / "job-was-here").write_text("")

            class _Detached(ln.Handle):
                job_id = handle.job_id

                def wait(self):
                    raise ln.JobDetached(self.job_id)

            return _Detached()

    first = NoWait(fake_s3prl)
    summary = rn.run_superb(opts, launcher=first, validate_hub=False)
    assert summary["failed"] == [] and summary["leaderboard"] is None
    assert sorted(r["detached"] for r in summary["detached"]) == ["job-1", "job-2"] and first.cancelled == []
    assert not (tmp_path / "exp" / "leaderboard.json").exists()
    for label in ("base", "small"):
        record = json.loads((tmp_path / f"exp/runs/{label}/ks/run.json").read_text())
        assert record["status"] == "training" and record["train"]["job_id"] in ("job-1", "job-2")
        assert "detached" not in record

    later = JobLauncher(fake_s3prl)
    later.jobs = dict(first.jobs)  # the scheduler still knows the jobs
    summary = rn.run_superb(opts, launcher=later, validate_hub=False)
    assert sorted(a[0] for a in later.adopted) == ["job-1", "job-2"] and summary["failed"] == []
    assert summary["detached"] == [] and summary["leaderboard"] is not None
    assert (tmp_path / "exp/runs/base/ks/expdir/job-was-here").is_file()  # not cleaned under a running job


def test_a_plain_function_is_a_launcher():
    seen = []
    launcher = ln.as_launcher(lambda command, log, cwd, env: seen.append((command, log)) or 3)
    request = ln.LaunchRequest(command=["x"], log=Path("l"), cwd=Path("."), env={}, phase="train", name="a/ks")
    handle = launcher.launch(request)
    assert handle.job_id is None and handle.wait() == 3 and seen == [(["x"], Path("l"))]
    assert isinstance(ln.as_launcher(None), ln.SubprocessLauncher)


def test_force_writes_beside_foreign_files_and_later_runs_continue(fake):
    launcher, ckpts, tmp_path = fake
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "notes.txt").write_text("mine")
    opts = _options(ckpts, tmp_path, upstreams="base=hubert_local", tasks="ks", force=True)
    assert rn.run_superb(opts, launcher=launcher, validate_hub=False)["failed"] == []
    launcher.calls.clear()
    again = _options(ckpts, tmp_path, upstreams="base=hubert_local", tasks="ks")  # no force: the folder is ours now
    assert rn.run_superb(again, launcher=launcher, validate_hub=False)["failed"] == []
    assert launcher.calls == [] and (tmp_path / "exp" / "notes.txt").read_text() == "mine"
    marker = json.loads((tmp_path / "exp" / ".s3prl-redundancy.json").read_text())
    assert marker["command"] == "superb" and {"superb.json", "runs", "leaderboard.md"} <= set(marker["files"])
    assert "notes.txt" not in marker["files"]


# --------------------------------------------------------------------------------------------------
# learning-rate search
# --------------------------------------------------------------------------------------------------


def test_lr_search_explores_on_dev_then_trains_at_the_best_rate(fake, monkeypatch):
    import math

    import yaml

    from s3prl_redundancy.superb import results as res

    launcher, ckpts, tmp_path = fake

    def dev_of_rate(task, expdir, fold=None):  # the fake writes no TensorBoard file: dev peaks at lr 1e-3
        lr = yaml.safe_load((Path(expdir).parent / "recipe.yaml").read_text())["optimizer"]["lr"]
        return {"split": "dev", "metric": "acc", "value": 0.9 - 0.1 * abs(math.log10(lr) + 3), "step": 3}

    monkeypatch.setattr(res, "best_dev", dev_of_rate)
    opts = _options(ckpts, tmp_path, tasks="ks,er", learning_rates=["small:ks=5e-5"], lr_search=True,
                    lr_grid=["ks=1e-4,1e-3", "er=1e-2,1e-3"], lr_search_steps=3)
    summary = rn.run_superb(opts, launcher=launcher, validate_hub=False)
    assert summary["failed"] == []
    # explorations: ordinary run folders with a rate suffix, trained (never tested) for lr_search_steps steps;
    # ER explores on its first fold; small's KS rate is fixed by hand, so it is not searched
    trials = ["base/ks-lr1e-04", "base/ks-lr1e-03", "base/er-fold1-lr1e-02", "base/er-fold1-lr1e-03",
              "small/er-fold1-lr1e-02", "small/er-fold1-lr1e-03"]
    assert launcher.runs("train")[:6] == trials
    assert not any("-lr" in r for r in launcher.runs("evaluate"))
    # every evaluation names its device (s3prl's -m evaluate -e CKPT would otherwise default to cuda)
    assert all(c["args"][c["args"].index("--device") + 1] == "cpu" for c in launcher.calls if c["mode"] == "evaluate")
    trial = yaml.safe_load((tmp_path / "exp/runs/base/ks-lr1e-04/recipe.yaml").read_text())
    assert trial["runner"]["total_steps"] == 3 and trial["runner"]["eval_step"] == 3 and trial["optimizer"]["lr"] == 1e-4
    record = json.loads((tmp_path / "exp/runs/base/ks-lr1e-04/run.json").read_text())
    assert record["lr_trial"] == {"rate": 1e-4, "steps": 3} and record["dev_best"]["value"] == pytest.approx(0.8)
    # the full runs train at the best rate (a fixed one wins) and record the search that chose it
    full = {r["upstream"] + "/" + runs_name(r): r for r in summary["runs"]}
    assert set(full) == {f"{u}/{n}" for u in ("base", "small") for n in ("ks", "er-fold1", "er-fold2")}
    assert full["base/ks"]["learning_rate"]["effective"] == 1e-3 and full["small/ks"]["learning_rate"]["effective"] == 5e-5
    assert full["small/er-fold2"]["learning_rate"]["effective"] == 1e-3
    search = full["base/ks"]["learning_rate"]["search"]
    assert search["chosen"] == 1e-3 and [t["rate"] for t in search["trials"]] == [1e-4, 1e-3]
    assert "search" not in full["small/ks"]["learning_rate"]
    board = json.loads((tmp_path / "exp/leaderboard.json").read_text())
    rows = {r["upstream"]: r for r in board["rows"]}
    assert len(rows) == 2  # explorations are not rows
    assert rows["base"]["learning_rates"] == "ks=0.001,er=0.001" and rows["small"]["learning_rates"] == "ks=5e-05,er=0.001"
    assert rows["base"]["lr_search"].startswith("ks: 0.001 by best dev acc (0.0001: 0.8, 0.001: 0.9)")
    # resumable: a second invocation runs nothing
    launcher.calls.clear()
    again = rn.run_superb(opts, launcher=launcher, validate_hub=False)
    assert launcher.calls == [] and again["lr_search"]["base:ks"]["chosen"] == 1e-3


def runs_name(record):
    from s3prl_redundancy.superb.runs import run_dir_name

    return run_dir_name(record["task"], record.get("fold"))


def test_lr_grid_parsing_and_defaults():
    assert cmd.parse_lr_grids(["sid=1e-1, 1e-2", "asr=1e-3"], ["sid"]) == {"sid": [0.1, 0.01]}
    for bad in ("sid", "sid=", "sid=fast", "sid=-1e-3", "nope=1e-3"):
        with pytest.raises(UserInputError, match="lr_grids"):
            cmd.parse_lr_grids([bad], ["sid"])
    assert tasks.TASKS["sid"].lr_grid[0] == 1e-1 and all(1e-4 in t.lr_grid for t in tasks.TASKS.values())
    assert planning.lr_suffix(1e-3) == "lr1e-03" and planning.lr_suffix(2.5e-4) == "lr0.00025"


def test_lr_grid_without_search_is_refused(fake, capsys):
    _, ckpts, tmp_path = fake
    with pytest.raises(UserInputError, match="lr_search: .*`lr_search=True`"):
        _options(ckpts, tmp_path, tasks="ks", lr_grid=["ks=1e-3"])
    code = cli.main(["superb", "--upstreams", "base=hubert_local", "--upstream-args", f"base:k={ckpts['base']}",
                     "--tasks", "ks", "--data-root", str(tmp_path), "--out", str(tmp_path / "exp"),
                     "--lr-search-steps", "3"])
    assert code != 0 and "--lr-search" in capsys.readouterr().err
