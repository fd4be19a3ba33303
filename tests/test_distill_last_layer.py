"""The last layer of pre-LN teachers (s3prl returns it after the encoder's final LayerNorm) and the per-layer
loss weighting: the student ends that prediction with a copy of the teacher's final norm; variance weighting
turns every term into a fraction of variance unexplained."""

from __future__ import annotations

import pytest
import torch

from s3prl_redundancy.checkpoints import checkpoint_buffer
from s3prl_redundancy.distill.mimickers import MimickerConfig, build_mimicker
from s3prl_redundancy.distill.student import Student, load_student, save_student, teacher_configs
from s3prl_redundancy.distill.trainer import masked_losses, target_variances
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.testing.audio import random_wavs
from s3prl_redundancy.testing.models import build_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread


@pytest.mark.parametrize("arch", ["mlp", "linear", "transformer"])
@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_pre_ln_last_target_starts_as_the_teachers_final_norm(family, arch, tmp_path):
    ckpt = build_checkpoint(family, layer_norm_first=True)
    fam = FAMILIES[family]
    with torch.no_grad():  # a final norm that is not the identity, so the copy is visible
        fam.weights(ckpt)["encoder.layer_norm.weight"].uniform_(0.5, 2.0)
    student = Student.from_teacher(family, ckpt, arch=arch).eval()
    assert student.config.final_norm
    wavs = random_wavs((16000, 9000))
    expert = fam.expert_class()(checkpoint_buffer(ckpt)).eval()
    with torch.no_grad():
        ours, _ = student(wavs)
        teacher = expert(wavs)["hidden_states"]
    # at the start every stage adds zero: the last prediction is the teacher's final norm of x0, the others x0
    norm = torch.nn.functional.layer_norm(teacher[0], (teacher[0].shape[-1],), fam.weights(ckpt)["encoder.layer_norm.weight"],
                                          fam.weights(ckpt)["encoder.layer_norm.bias"])
    torch.testing.assert_close(ours[-1], norm)
    assert torch.equal(ours[1], teacher[0])
    # saved and loaded with its norm; a subset that stops before the last layer has none
    path = save_student(student, dict(teacher_configs(family, ckpt), source="t.pt"), tmp_path / "s.pt")
    loaded, saved = load_student(path)
    assert saved["student_config"]["final_norm"] and "final_norm.weight" in saved["student"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(wavs)[0][-1], ours[-1])
    assert not Student.from_teacher(family, ckpt, arch=arch, targets="1,2").config.final_norm
    assert not Student.from_teacher(family, ckpt, arch=arch, final_norm=False).config.final_norm


def test_post_ln_teachers_get_no_final_norm():
    student = Student.from_teacher("hubert", build_checkpoint("hubert"))
    assert not student.config.final_norm and not hasattr(student.mimicker, "final_norm")
    # older student.pt files have no final_norm entry: read as False
    assert MimickerConfig.from_dict({"arch": "mlp", "dim": 8, "targets": [1]}).final_norm is False


def test_variance_weighting_gives_the_fraction_of_variance_unexplained():
    g = torch.Generator().manual_seed(0)
    targets = [torch.randn(2, 7, 5, generator=g) * s + 3.0 for s in (0.1, 10.0)]
    preds = [t + torch.randn(t.shape, generator=g) * 0.05 for t in targets]
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 5:] = False
    scales = target_variances(targets, valid)
    for t, scale in zip(targets, scales):
        real = t[valid].double()
        assert scale == pytest.approx(float(((real - real.mean(0)) ** 2).mean()), rel=1e-9)
    terms = masked_losses(preds, targets, valid, float(valid.sum()), 0.0, scales)
    for k, (p, t) in enumerate(zip(preds, targets)):
        fvu = float(((p - t)[valid] ** 2).sum() / ((t[valid] - t[valid].mean(0)) ** 2).sum())
        assert float(terms[k]) == pytest.approx(fvu, rel=1e-5)
    plain = masked_losses(preds, targets, valid, float(valid.sum()), 0.0)
    assert float(plain[1] / terms[1]) == pytest.approx(scales[1], rel=1e-5)


def test_mimicker_final_norm_applies_to_the_last_prediction_only():
    cfg = MimickerConfig(arch="linear", dim=6, targets=[1, 2], hidden=3, final_norm=True)
    mimicker = build_mimicker(cfg)
    x0 = torch.randn(1, 4, 6) * 5 + 2
    out = mimicker(x0)
    torch.testing.assert_close(out[0], x0)
    torch.testing.assert_close(out[1], torch.nn.functional.layer_norm(x0, (6,)))
