"""Distillation training: the loss falls, --resume equals an uninterrupted run, two gloo ranks equal one
process, a NaN stops training at the right step, bad input is refused clearly, and the CLI writes its files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from s3prl_redundancy.audio import list_audio
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.distill import outputs
from s3prl_redundancy.distill.sampling import GlobalBatches, shard
from s3prl_redundancy.testing.audio import write_tone_corpus
from s3prl_redundancy.testing.processes import interrupt_at_step, run_gloo_ranks
from s3prl_redundancy.distill.trainer import DistillConfig, Trainer, TrainingDivergedError, distill, masked_losses


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread


@pytest.fixture(scope="module")
def layer_norm_cnn_teacher(tmp_path_factory):
    """wav2vec 2.0 with a layer-norm CNN (as the large models): a real frame's value does not depend on the
    batch's padding. (The default CNN's GroupNorm normalises over the whole padded time axis, so there it does.)"""
    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    return save_tiny_checkpoint("wav2vec2", tmp_path_factory.mktemp("ln") / "w2v.pt", extractor_mode="layer_norm")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    write_tone_corpus(folder, 12, seed=3, seconds=(0.8, 1.6))
    return folder


def config(teacher_ckpt, data, out, family="wav2vec2", **kw):
    base = dict(teacher=f"{family}_local", ckpt=str(teacher_ckpt), data=str(data), out=str(out), steps=6,
                batch_size=4, save_every=3, report=False, progress=False, heldout=0)
    base.update(kw)
    return DistillConfig(**base)


def read_log(out):
    with open(Path(out) / outputs.LOG, newline="") as handle:
        return list(csv.DictReader(handle))


def student_weights(out):
    return torch.load(Path(out) / outputs.STUDENT, weights_only=True)["student"]


# ------------------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_a_few_hundred_steps_cut_the_loss(corpus, tiny_ckpts, tmp_path):
    """Measured on the tiny teachers (300 steps, mlp, h=64, batch 4): final / initial loss 0.13 (HuBERT),
    0.07 (wav2vec 2.0), 0.09 (WavLM); without the residual chaining 0.19 / 0.15 / 0.15 of a 4x higher start."""
    out = tmp_path / "run"
    manifest = distill(config(tiny_ckpts["hubert"], corpus, out, family="hubert", steps=300, save_every=300,
                              cache_teacher=True, heldout=2, report=True, report_repeats=2))
    losses = [float(r["loss"]) for r in read_log(out)]
    assert len(losses) == 300 and manifest["training"]["initial_loss"] == losses[0]
    assert np.mean(losses[-10:]) < 0.3 * losses[0], (losses[0], losses[-10:])
    # it generalises: on held-out audio every layer's error is below that of "copy the input"
    report = json.loads((out / outputs.REPORT_JSON).read_text())
    rows = report["mimicking_error"]["layers"]
    assert [r["layer"] for r in rows] == [1, 2, 3, 4] and report["mimicking_error"]["utterances"] == 2
    assert all(r["mse"] < 0.5 * r["input_mse"] for r in rows), rows
    assert all(r["cka"] > r["input_cka"] for r in rows), rows
    assert report["mimicking_error"]["input_max_abs_diff"] == 0.0


def test_cached_teacher_features_equal_the_teacher_and_the_estimate(corpus, tiny_ckpts, tmp_path):
    from s3prl_redundancy.checkpoints import checkpoint_buffer
    from s3prl_redundancy.families import FAMILIES

    out = tmp_path / "run"
    distill(config(tiny_ckpts["hubert"], corpus, out, family="hubert", steps=2, cache_teacher=True, targets="2,4"))
    index = json.loads((out / outputs.CACHE_DIR / "index.json").read_text())
    files = list_audio(corpus)
    assert index["count"] == len(files)
    expert = FAMILIES["hubert"].expert_class()(checkpoint_buffer(torch.load(tiny_ckpts["hubert"], weights_only=True))).eval()
    actual = 0
    for i, path in enumerate(files):
        item = torch.load(out / outputs.CACHE_DIR / f"utt{i:07d}.pt", weights_only=True)
        actual += (item["x0"].numel() + item["targets"].numel()) * 4
        if i < 3:
            wav = torch.from_numpy(soundfile.read(path, dtype="float32")[0])
            with torch.no_grad():
                hs = expert([wav])["hidden_states"]
            assert torch.equal(item["x0"], hs[0][0])
            assert torch.equal(item["targets"], torch.stack([hs[2][0], hs[4][0]]))
    assert index["bytes_estimated"] == actual


def test_cache_over_the_limit_is_refused(corpus, tiny_ckpts, tmp_path):
    with pytest.raises(UserInputError, match=r"cache_teacher: the cache would take 0\.\d+ GB \(12 utterances, \d+ frames x 5 layers x 32 dims .* over `cache_max_gb=1e-06`"):
        distill(config(tiny_ckpts["hubert"], corpus, tmp_path / "run", family="hubert", cache_teacher=True, cache_max_gb=1e-6))


# ------------------------------------------------------------------------------------------- resume
def test_resume_continues_exactly(corpus, tiny_ckpts, tmp_path, monkeypatch):
    common = dict(steps=6, save_every=3, cosine_weight=0.2, arch="transformer", hidden=16)
    straight = tmp_path / "straight"
    distill(config(tiny_ckpts["wav2vec2"], corpus, straight, **common))

    # the interrupted run crashes during step 5: the checkpoint is at step 3, the log already has step 4
    interrupted = tmp_path / "interrupted"
    interrupt_at_step(monkeypatch, Trainer, "step_losses", 4)  # during step 5
    with pytest.raises(KeyboardInterrupt):
        distill(config(tiny_ckpts["wav2vec2"], corpus, interrupted, **common))
    monkeypatch.undo()
    assert [r["step"] for r in read_log(interrupted)] == ["1", "2", "3", "4"]
    state = torch.load(interrupted / outputs.STATE, weights_only=True)
    assert state["step"] == 3 and state["data_position"]["samples_seen"] == 12
    assert not (interrupted / outputs.STUDENT).exists()

    distill(config(tiny_ckpts["wav2vec2"], corpus, interrupted, resume=True, **common))
    a, b = read_log(straight), read_log(interrupted)
    assert [r["step"] for r in b] == [str(i) for i in range(1, 7)]
    for ra, rb in zip(a, b):
        for column in ["loss", "loss_layer1", "loss_layer4"]:
            assert float(ra[column]) == pytest.approx(float(rb[column]), rel=1e-6, abs=1e-9), (ra["step"], column)
    wa, wb = student_weights(straight), student_weights(interrupted)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-6, atol=1e-7)
    oa = torch.load(straight / outputs.STATE, weights_only=True)["optimizer"]["state"]
    ob = torch.load(interrupted / outputs.STATE, weights_only=True)["optimizer"]["state"]
    torch.testing.assert_close(oa[0]["exp_avg_sq"], ob[0]["exp_avg_sq"], rtol=1e-6, atol=1e-10)

    # resuming with more steps continues the same run
    distill(config(tiny_ckpts["wav2vec2"], corpus, interrupted, resume=True, **dict(common, steps=8)))
    assert len(read_log(interrupted)) == 8


# ------------------------------------------------------------------------------------------- distributed
@pytest.mark.slow
@pytest.mark.parametrize("front_end", ["teacher", "light"])
def test_two_gloo_ranks_equal_one_process(front_end, corpus, layer_norm_cnn_teacher, tmp_path):
    """Same global batch of 4 (2 per rank): same data order, losses and weights as a single process. The
    teacher's real frames must not depend on how the batch is split (see ``layer_norm_cnn_teacher``). A light
    front end trains in DDP with the mimicker (one stage-1 step, then the joint stage), with the default
    variance weighting. The transformer mimicker's key bias has a gradient that is zero but for rounding (softmax
    ignores a constant added to every key), which Adam turns into steps of noise once the loss is weighted; so
    the transformer case keeps plain MSEs and the weighted case uses the mlp mimicker."""
    kw = dict(steps=4, save_every=2, targets="2,4", arch="transformer", hidden=16, layer_weighting="none")
    if front_end == "light":
        kw.update(front_end="light", front_end_steps=1, front_end_channels=16, arch="mlp", layer_weighting="variance")
    single = tmp_path / "single"
    distill(config(layer_norm_cnn_teacher, corpus, single, **kw))
    ddp = tmp_path / "ddp"
    run_gloo_ranks(distill, config(layer_norm_cnn_teacher, corpus, ddp, **kw), ddp, tmp_path / "store")
    a, b = read_log(single), read_log(ddp)
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        for column in ["loss", "loss_layer2", "loss_layer4"]:
            assert float(ra[column]) == pytest.approx(float(rb[column]), rel=1e-5), (ra["step"], column)
    wa, wb = student_weights(single), student_weights(ddp)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-6)
    fa, fb = (torch.load(out / outputs.STUDENT, weights_only=True)["front_end"] for out in (single, ddp))
    for key in fa:
        torch.testing.assert_close(fa[key], fb[key], rtol=1e-4, atol=1e-6)
    assert json.loads((ddp / outputs.MANIFEST).read_text())["training"]["world_size"] == 2


def test_rank_shards_partition_every_global_batch():
    batches = GlobalBatches(num_items=10, batch_size=4, seed=5)
    stream = [i for s in range(5) for i in batches.batch(s)]  # 20 items = two epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert stream[:10] != stream[10:]  # a new permutation per epoch
    for s in range(5):
        parts = [shard(batches.batch(s), r, 2) for r in range(2)]
        assert sorted(parts[0] + parts[1]) == sorted(batches.batch(s))
    assert GlobalBatches(10, 4, seed=5).batch(3) == batches.batch(3)  # a fresh sampler resumes the same stream
    assert batches.position(3) == {"step": 3, "samples_seen": 12, "epoch": 1, "offset_in_epoch": 2, "seed": 5}


def test_masked_losses_match_a_per_utterance_computation():
    g = torch.Generator().manual_seed(0)
    preds = [torch.randn(3, 7, 5, generator=g) for _ in range(2)]
    targets = [torch.randn(3, 7, 5, generator=g) for _ in range(2)]
    lengths = [7, 4, 2]
    valid = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    terms = masked_losses(preds, targets, valid, frames_global=13.0, cosine_weight=0.5)
    for k in range(2):
        sq, cos = 0.0, 0.0
        for b, n in enumerate(lengths):
            for t in range(n):
                p, y = preds[k][b, t], targets[k][b, t]
                sq += float(((p - y) ** 2).sum())
                c = float(p @ y / (p.norm() * y.norm()))
                cos += -np.log(1 / (1 + np.exp(-c)))
        assert float(terms[k]) == pytest.approx(sq / (13 * 5) + 0.5 * cos / 13, rel=1e-5)


# ------------------------------------------------------------------------------------------- failures
def test_nan_audio_stops_at_its_step_and_keeps_the_last_good_checkpoint(corpus, tiny_ckpts, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for path in list_audio(corpus):
        (data / path.name).symlink_to(path)
    bad = np.full(16000, np.nan, dtype=np.float32)
    soundfile.write(str(data / "tone_0005b_nan.wav"), bad, 16000, subtype="FLOAT")
    files = list_audio(data)
    bad_index = [p.name for p in files].index("tone_0005b_nan.wav")
    batches = GlobalBatches(len(files), 4, seed=0)
    first_bad = next(s for s in range(100) if bad_index in batches.batch(s)) + 1  # 1-based step
    assert first_bad >= 2, "choose a seed where the NaN file is not in the first batch"
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=rf"loss is nan at step {first_bad} .*training stopped before that update") as err:
        distill(config(tiny_ckpts["hubert"], data, out, family="hubert", steps=50, save_every=1))
    assert f"last good checkpoint is {out / outputs.STATE} at step {first_bad - 1}" in str(err.value)
    assert torch.load(out / outputs.STATE, weights_only=True)["step"] == first_bad - 1
    assert len(read_log(out)) == first_bad - 1
    assert not (out / outputs.STUDENT).exists()


def test_nan_loss_before_any_checkpoint_says_so(corpus, tiny_ckpts, tmp_path, monkeypatch):
    import s3prl_redundancy.distill.trainer as trainer_module

    original = trainer_module.masked_losses
    monkeypatch.setattr(trainer_module, "masked_losses", lambda *a, **k: original(*a, **k) * float("inf"))
    with pytest.raises(TrainingDivergedError, match="loss is inf at step 1 .*no checkpoint was written yet.*`force=True`"):
        distill(config(tiny_ckpts["hubert"], corpus, tmp_path / "run", family="hubert"))


def test_a_run_stopped_before_its_first_checkpoint_is_no_dead_end(corpus, tiny_ckpts, tmp_path, monkeypatch):
    """Its header-only train_log.csv is refused with and without `resume`; both refusals name `force=True`,
    which then works."""
    import s3prl_redundancy.distill.trainer as trainer_module

    out = tmp_path / "run"
    original = trainer_module.masked_losses
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "masked_losses", lambda *a, **k: original(*a, **k) * float("inf"))
        with pytest.raises(TrainingDivergedError):
            distill(config(tiny_ckpts["hubert"], corpus, out, family="hubert"))
    assert (out / outputs.LOG).exists() and not (out / outputs.STATE).exists()
    with pytest.raises(UserInputError, match="train_log.csv.*`force=True`"):
        distill(config(tiny_ckpts["hubert"], corpus, out, family="hubert"))
    with pytest.raises(UserInputError, match="resume: .*no checkpoint.pt .*stopped before writing it.*"
                                             "`resume=False` to start a new run there \\(with `force=True`") as err:
        distill(config(tiny_ckpts["hubert"], corpus, out, family="hubert", resume=True))
    assert "without --resume to start a new run there (with --force" in err.value.render()
    distill(config(tiny_ckpts["hubert"], corpus, out, family="hubert", steps=2, force=True))
    assert len(read_log(out)) == 2


def test_force_never_replaces_another_commands_files(corpus, tiny_ckpts, tmp_path):
    """A prune folder (its marker says so) is refused even with `force`; so is a manifest.json of unknown origin."""
    from s3prl_redundancy.io import OutputDir

    pruned = tmp_path / "pruned"
    OutputDir(pruned, "prune").write_json("manifest.json", {"what": "a pruned model"})
    with pytest.raises(UserInputError, match='outputs of a "prune" run, not of "distill"'):
        distill(config(tiny_ckpts["hubert"], corpus, pruned, family="hubert", steps=1, force=True))
    assert json.loads((pruned / "manifest.json").read_text()) == {"what": "a pruned model"}
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "manifest.json").write_text("{}")
    with pytest.raises(UserInputError, match='holds manifest.json, which "distill" did not write'):
        distill(config(tiny_ckpts["hubert"], corpus, unknown, family="hubert", steps=1, force=True))
    assert (unknown / "manifest.json").read_text() == "{}"


def test_an_out_that_cannot_be_created_is_refused_before_any_work(corpus, tiny_ckpts, tmp_path, monkeypatch):
    import s3prl_redundancy.distill.trainer as trainer_module

    built = []
    monkeypatch.setattr(trainer_module.Trainer, "_build_models", lambda self: built.append(1))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserInputError, match="out: .*cannot be created: .*a_file is a file"):
        distill(config(tiny_ckpts["hubert"], corpus, blocker / "run", family="hubert"))
    assert not built


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(teacher="bert"), "teacher: unknown teacher 'bert'; use one of: hubert, hubert_local"),
        (dict(ckpt=None), "teacher: wav2vec2_local needs `ckpt`"),
        (dict(teacher="hubert_local"), "ckpt: .* is a wav2vec2 checkpoint, not hubert; use `teacher=wav2vec2_local`"),
        (dict(targets="2,9"), r"targets: \[9\] out of range: the teacher has 4 transformer layers"),
        (dict(steps=0), "steps: must be at least 1"),
        (dict(heldout=12), "heldout: 12: `data` has 12 utterances"),
        (dict(resume=True), "resume: .* holds no checkpoint.pt .*to resume from"),
        (dict(resume=True, force=True), "`force` and `resume` contradict each other"),
    ],
)
def test_bad_input_is_refused_before_writing(overrides, message, corpus, tiny_ckpts, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserInputError, match=message):
        distill(config(tiny_ckpts["wav2vec2"], corpus, out, **overrides))
    assert not out.exists()


def test_output_folder_of_another_run_is_refused_resumed_or_replaced(corpus, tiny_ckpts, tmp_path):
    out = tmp_path / "run"
    distill(config(tiny_ckpts["wav2vec2"], corpus, out, steps=2))
    before = (out / outputs.STUDENT).read_bytes()
    with pytest.raises(UserInputError, match='already holds a previous "distill" run .*student.pt.*`resume=True` to continue it, `force=True`'):
        distill(config(tiny_ckpts["wav2vec2"], corpus, out, steps=2))
    assert (out / outputs.STUDENT).read_bytes() == before
    with pytest.raises(UserInputError, match=r"other settings \(lr: checkpoint 0.001 vs now 0.01\).*`force=True`"):
        distill(config(tiny_ckpts["wav2vec2"], corpus, out, steps=4, lr=0.01, resume=True))
    with pytest.raises(UserInputError, match="checkpoint is at step 2, beyond `steps=1`"):
        distill(config(tiny_ckpts["wav2vec2"], corpus, out, steps=1, resume=True))
    (out / "notes.txt").write_text("mine")
    distill(config(tiny_ckpts["wav2vec2"], corpus, out, steps=3, resume=True))  # a user's file beside a run never blocks resume
    assert len(read_log(out)) == 3 and (out / "notes.txt").read_text() == "mine"
    distill(config(tiny_ckpts["wav2vec2"], corpus, out, steps=3, lr=0.01, force=True, targets="4"))
    assert len(read_log(out)) == 3 and read_log(out)[0].keys() == {"step", "loss", "loss_layer4", "seconds"}
    assert (out / "notes.txt").read_text() == "mine"  # --force deletes only this tool's files


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_family_name_means_s3prls_default_weights(family, corpus, tiny_ckpts, tmp_path, monkeypatch):
    """``--teacher hubert`` fetches exactly the URL of s3prl's own ``hubert`` entry, with s3prl's downloader."""
    from s3prl_redundancy.testing.processes import capture_default_download

    asked = capture_default_download(monkeypatch, family, tiny_ckpts[family])

    from s3prl_redundancy.families import FAMILIES

    cfg = config(None, corpus, tmp_path / "run", steps=1)
    cfg.teacher, cfg.ckpt = family, None
    manifest = distill(cfg)
    assert asked["ours"] == asked["s3prl"] == FAMILIES[family].default_url
    assert manifest["teacher"]["source"] == FAMILIES[family].default_url
    assert torch.load(tmp_path / "run" / outputs.STUDENT, weights_only=True)["teacher"]["family"] == family


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_without_a_gpu_is_refused(corpus, tiny_ckpts, tmp_path):
    with pytest.raises(UserInputError, match="device: cuda: no CUDA device"):
        distill(config(tiny_ckpts["wav2vec2"], corpus, tmp_path / "run", device="cuda"))


# ------------------------------------------------------------------------------------------- CLI
def test_cli_writes_every_output(corpus, tiny_ckpts, tmp_path, capsys):
    from s3prl_redundancy.cli import main
    from s3prl_redundancy.distill.report import main as report_main

    out = tmp_path / "run"
    args = ["distill", "--teacher", "hubert_local", "--ckpt", str(tiny_ckpts["hubert"]), "--data", str(corpus),
            "--out", str(out), "--steps", "5", "--batch-size", "3", "--targets", "2,4", "--heldout", "2",
            "--report-repeats", "1", "--no-progress", "--save-every", "2"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["targets"] == [2, 4] and summary["load_with"] == f"-u distilled_hubert -k {out / 'student.pt'}"
    student = torch.load(out / "student.pt", weights_only=True)
    assert student["teacher"]["family"] == "hubert" and student["training"]["steps"] == 5
    assert [r["step"] for r in read_log(out)] == ["1", "2", "3", "4", "5"]
    assert list(read_log(out)[0]) == ["step", "loss", "loss_layer2", "loss_layer4", "seconds"]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["data"]["heldout_files"]) == 2 and manifest["data"]["train_utterances"] == 10
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["student_replaced"] == sum(v.numel() for v in student["student"].values())
    assert "| parameters, transformer stack vs mimicker |" in (out / "report.md").read_text()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 5

    assert main(args) == 2  # a second run into the same folder is refused
    err = capsys.readouterr().err
    assert "--out: " in err and 'already holds a previous "distill" run' in err and "pass --resume to continue it, --force" in err

    again = tmp_path / "again"
    assert report_main(["--student", str(out / "student.pt"), "--out", str(again), "--repeats", "1"]) == 0
    rerun = json.loads((again / "report.json").read_text())
    assert rerun["mimicking_error"]["layers"] == report["mimicking_error"]["layers"]  # same held-out audio, same model
    assert rerun["parameters"] == report["parameters"]
