"""The light front end (``distill --front-end light``): the teacher's frames for every family and padded
batch, two training stages (stage 1 lowers the distance to ``hidden_states[0]`` and leaves the mimicker
alone), exact resume across the stage boundary, the cached-teacher path, and its checkpoint."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import torch

from s3prl_redundancy.checkpoints import checkpoint_buffer
from s3prl_redundancy.distill import outputs
from s3prl_redundancy.distill.front_end import FrontEnd
from s3prl_redundancy.distill.light_front_end import LightFrontEnd
from s3prl_redundancy.distill.student import Student, load_student, save_student, teacher_configs
from s3prl_redundancy.distill.trainer import DistillConfig, Trainer, distill
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.testing.audio import random_wavs, write_tone_corpus
from s3prl_redundancy.testing.processes import interrupt_at_step
from s3prl_redundancy.testing.models import build_checkpoint

FAMS = ("hubert", "wav2vec2", "wavlm")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread

# mixed lengths: full second, mid-frame end, short, one sample longer, and a single 401-sample frame
BATCHES = [(16000, 12345, 7001, 16001), (16000,), (8001, 8001), (401,), (3333, 401)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    write_tone_corpus(folder, 12, seed=3, seconds=(0.8, 1.6))
    return folder


def config(teacher_ckpt, data, out, family="hubert", **kw):
    base = dict(teacher=f"{family}_local", ckpt=str(teacher_ckpt), data=str(data), out=str(out), steps=6,
                batch_size=4, save_every=3, report=False, progress=False, heldout=0, front_end="light")
    base.update(kw)
    return DistillConfig(**base)


def read_log(out):
    with open(Path(out) / outputs.LOG, newline="") as handle:
        return list(csv.DictReader(handle))


# crop_seq_to_multiple is a wav2vec 2.0 setting
@pytest.mark.parametrize("family, crop", [(f, 1) for f in FAMS] + [("wav2vec2", 4)])
def test_light_front_end_has_the_teachers_frames_for_every_batch(family, crop):
    overrides = {"crop_seq_to_multiple": crop} if crop > 1 else {}
    ckpt = build_checkpoint(family, **overrides)
    expert = FAMILIES[family].expert_class()(checkpoint_buffer(ckpt)).eval()
    teacher_front = FrontEnd.from_teacher_checkpoint(family, ckpt)
    light = LightFrontEnd.for_teacher(teacher_configs(family, ckpt)).eval()
    for lengths in BATCHES:
        if teacher_front.num_frames(max(lengths)) == 0:  # cropped to nothing: the teacher itself fails
            continue
        wavs = random_wavs(lengths, seed=len(lengths))
        with torch.no_grad():
            teacher = expert(wavs)["hidden_states"][0]
            _, teacher_mask = teacher_front(wavs)
            x, mask = light(wavs)
        assert x.shape == teacher.shape, lengths
        assert torch.equal(mask, teacher_mask), lengths
        assert torch.equal(light.padding_mask_for_lengths(torch.tensor(lengths)), mask)
        assert [light.num_frames(n) for n in lengths] == [teacher_front.num_frames(n) for n in lengths]
        # a real frame does not depend on the batch's padding (every normalisation is per frame)
        for b, wav in enumerate(wavs):
            with torch.no_grad():
                alone, _ = light([wav])
            real = alone.shape[1]
            torch.testing.assert_close(x[b, :real], alone[0], rtol=1e-5, atol=1e-5)


def test_light_student_checkpoint_records_its_front_end(tmp_path):
    ckpt = build_checkpoint("wavlm")
    student = Student.from_teacher("wavlm", ckpt, front_end="light", front_end_channels=16).eval()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    teacher = dict(teacher_configs("wavlm", ckpt), source="t.pt")
    path = save_student(student, teacher, tmp_path / "student.pt")
    saved = torch.load(path, weights_only=True)
    assert saved["format_version"] == 2 and saved["front_end_config"] == {"kind": "light", "channels": 16, "context": 31}
    loaded, _ = load_student(path, expected_family="wavlm")
    assert isinstance(loaded.front_end, LightFrontEnd)
    wavs = random_wavs(BATCHES[0])
    with torch.no_grad():
        a, _ = student(wavs)
        b, _ = loaded(wavs)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # a teacher-front-end student is still written as version 1, so older readers load it
    plain = save_student(Student.from_teacher("wavlm", ckpt), teacher, tmp_path / "plain.pt")
    assert torch.load(plain, weights_only=True)["format_version"] == 1


def test_stage_1_lowers_the_distance_to_hidden_state_0(corpus, tiny_ckpts, tmp_path):
    out = tmp_path / "run"
    distill(config(tiny_ckpts["hubert"], corpus, out, steps=26, front_end_steps=25, save_every=25,
                   front_end_channels=16))
    rows = read_log(out)
    layer0 = [float(r["loss_layer0"]) for r in rows]
    assert sum(layer0[-5:]) / 5 < 0.7 * layer0[0], layer0
    # stage 1 optimises the front end's term only; the joint stage adds every target's
    assert all(float(r["loss"]) == float(r["loss_layer0"]) for r in rows[:25])
    last = rows[25]
    assert float(last["loss"]) == pytest.approx(sum(float(last[f"loss_layer{t}"]) for t in range(5)), rel=1e-6)
    assert torch.load(out / outputs.STATE, weights_only=True)["front_end_steps"] == 25


def test_stage_1_leaves_the_mimicker_at_its_initial_weights(corpus, tiny_ckpts, tmp_path):
    cfg = config(tiny_ckpts["wav2vec2"], corpus, tmp_path / "run", family="wav2vec2", steps=5, front_end_steps=3)
    trainer = Trainer(cfg)
    trainer.prepare()
    trainer._t0, trainer._last_saved = time.perf_counter(), None  # what Trainer.train sets before its loop
    initial = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    log = outputs.TrainLog(tmp_path / "log.csv", trainer.logged_layers())
    for step in range(3):
        trainer._train_step(step, log)
    now = trainer.student.state_dict()
    assert all(torch.equal(initial[k], now[k]) for k in now if k.startswith("mimicker."))
    assert not torch.equal(initial["front_end.proj.weight"], now["front_end.proj.weight"])
    trainer._train_step(3, log)  # the joint stage moves the mimicker
    assert not torch.equal(initial["mimicker.stages.0.up.weight"], trainer.student.state_dict()["mimicker.stages.0.up.weight"])


def test_light_resume_continues_exactly_across_the_stage_boundary(corpus, tiny_ckpts, tmp_path, monkeypatch):
    common = dict(steps=7, save_every=3, front_end_steps=2, front_end_channels=16)
    straight = tmp_path / "straight"
    distill(config(tiny_ckpts["wavlm"], corpus, straight, family="wavlm", **common))

    interrupted = tmp_path / "interrupted"
    interrupt_at_step(monkeypatch, Trainer, "step_losses", 4)  # during step 5
    with pytest.raises(KeyboardInterrupt):
        distill(config(tiny_ckpts["wavlm"], corpus, interrupted, family="wavlm", **common))
    monkeypatch.undo()
    assert torch.load(interrupted / outputs.STATE, weights_only=True)["step"] == 3
    distill(config(tiny_ckpts["wavlm"], corpus, interrupted, family="wavlm", resume=True, **common))
    a, b = read_log(straight), read_log(interrupted)
    assert [r["step"] for r in b] == [str(i) for i in range(1, 8)]
    for ra, rb in zip(a, b):
        for column in ["loss", "loss_layer0", "loss_layer1", "loss_layer4"]:
            assert float(ra[column]) == pytest.approx(float(rb[column]), rel=1e-6, abs=1e-9), (ra["step"], column)
    wa = torch.load(straight / outputs.STUDENT, weights_only=True)
    wb = torch.load(interrupted / outputs.STUDENT, weights_only=True)
    for part in ("front_end", "student"):
        for key in wa[part]:
            torch.testing.assert_close(wa[part][key], wb[part][key], rtol=1e-6, atol=1e-7)


def test_cached_teacher_path_trains_the_light_front_end_the_same(corpus, tmp_path):
    """With a layer-norm CNN the teacher's features do not depend on padding, so the cache (each utterance
    computed alone) gives the same losses as running the teacher on the padded batch."""
    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    teacher = save_tiny_checkpoint("wav2vec2", tmp_path / "w2v.pt", extractor_mode="layer_norm")
    runs = {}
    for cache in (False, True):
        out = tmp_path / f"cache_{cache}"
        distill(config(teacher, corpus, out, family="wav2vec2", steps=4, front_end_steps=2, cache_teacher=cache))
        runs[cache] = read_log(out)
    for ra, rb in zip(runs[False], runs[True]):
        for column in ("loss", "loss_layer0", "loss_layer4"):
            assert float(ra[column]) == pytest.approx(float(rb[column]), rel=1e-4), (ra["step"], column)


@pytest.mark.parametrize("overrides, message", [
    (dict(front_end="tiny"), r"front_end: 'tiny': use one of teacher, light"),
    (dict(front_end="teacher", front_end_steps=2), r"front_end_steps: .*needs `front_end='light'`"),
    (dict(front_end_steps=6), r"front_end_steps: must be at least 0 and below `steps=6`"),
])
def test_bad_front_end_settings_are_refused_before_writing(overrides, message, corpus, tiny_ckpts, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserInputError, match=message):
        distill(config(tiny_ckpts["hubert"], corpus, out, **overrides))
    assert not out.exists()


def test_report_of_a_light_student_counts_each_front_end_and_lists_layer_0():
    from s3prl_redundancy.compression.cost import count_module_parameters
    from s3prl_redundancy.distill.report import WHOLE_UPSTREAM_HEADER, build_report, render_markdown, whole_upstream_rows

    ckpt = build_checkpoint("hubert")
    expert = FAMILIES["hubert"].expert_class()(checkpoint_buffer(ckpt)).eval()
    light = Student.from_teacher("hubert", ckpt, front_end="light", front_end_channels=8).eval()
    report = build_report(light, expert, "hubert", random_wavs((8000, 6000)), repeats=1, seconds=0.5)
    p = report["parameters"]
    teacher_front = count_module_parameters(FrontEnd.from_teacher_checkpoint("hubert", ckpt))
    assert p["teacher_front_end"] == teacher_front and p["front_end"] == count_module_parameters(light.front_end)
    assert p["teacher_upstream"] == teacher_front + p["teacher_stack"]
    layers = report["mimicking_error"]["layers"]
    assert [r["layer"] for r in layers] == [0, 1, 2, 3, 4] and layers[0]["input_cka"] == pytest.approx(1.0)
    assert "a light front end (8 channels)" in render_markdown(report)
    row = whole_upstream_rows({"light": report})[0]
    assert len(row) == len(WHOLE_UPSTREAM_HEADER) and row[1] == "light (8 channels)"
