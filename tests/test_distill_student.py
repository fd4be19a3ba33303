"""The student: its front end reproduces the teacher's transformer input exactly, its mimickers compute
what docs/distillation.md says (checked against hand-written formulas), its checkpoint round-trips, and
the report's metrics match independent computations."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from s3prl_redundancy.checkpoints import checkpoint_buffer
from s3prl_redundancy.distill.front_end import FrontEnd
from s3prl_redundancy.compression.cost import count_module_parameters as count_parameters
from s3prl_redundancy.distill.mimickers import MimickerConfig, build_mimicker
from s3prl_redundancy.distill.report import LayerError, linear_cka, macs
from s3prl_redundancy.distill.student import Student, load_student, parse_targets, save_student, teacher_configs
from s3prl_redundancy.distill.teacher import TeacherStack
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.testing.audio import random_wavs
from s3prl_redundancy.testing.models import build_checkpoint

FAMS = ("hubert", "wav2vec2", "wavlm")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread


# lengths: one full, one ending mid-frame, one short, one a sample longer than the first
LENGTHS = (16000, 12345, 7001, 16001)


@functools.lru_cache(maxsize=None)
def _variant(family, variant):
    """(cached; never modified) A tiny checkpoint; ``prenorm``: pre-LN layers, layer-norm CNN, normalised waveforms (wav2vec2 large style)."""
    if variant == "base":
        return build_checkpoint(family)
    ckpt = build_checkpoint(family, layer_norm_first=True, extractor_mode="layer_norm")
    if family == "wavlm":
        ckpt["cfg"]["normalize"] = True
    else:
        ckpt["task_cfg"]["normalize"] = True
    return ckpt


def _expert(family, ckpt):
    return FAMILIES[family].expert_class()(checkpoint_buffer(ckpt)).eval()


def _model_padding_mask(family, expert, wavs):
    """The padding mask s3prl's model itself returns (its own code path, not ours)."""
    from torch.nn.utils.rnn import pad_sequence

    lengths = torch.tensor([len(w) for w in wavs])
    wav_mask = torch.arange(int(lengths.max()))[None, :] >= lengths[:, None]
    padded = pad_sequence(wavs, batch_first=True)
    with torch.no_grad():
        out = expert.model.extract_features(padded, padding_mask=wav_mask, mask=False)
    mask = out["padding_mask"] if isinstance(out, dict) else out[1]
    return mask


@pytest.mark.parametrize("variant", ["base", "prenorm"])
@pytest.mark.parametrize("family", FAMS)
def test_front_end_output_equals_teacher_hidden_state_0(family, variant):
    ckpt = _variant(family, variant)
    expert = _expert(family, ckpt)
    front = FrontEnd.from_teacher_checkpoint(family, ckpt)
    assert front.layer_norm_first == (variant == "prenorm") and front.normalize == (variant == "prenorm")
    for lengths in [LENGTHS, (16000,), (8001, 8001)]:
        wavs = random_wavs(lengths, seed=len(lengths))
        with torch.no_grad():
            teacher = expert(wavs)["hidden_states"]
            x0, mask = front(wavs)
        assert x0.shape == teacher[0].shape
        assert torch.equal(x0, teacher[0]), f"{lengths}: max diff {(x0 - teacher[0]).abs().max()}"
        model_mask = _model_padding_mask(family, expert, wavs)
        if model_mask is None:  # wav2vec 2.0 gives no mask when nothing is padded
            assert not mask.any()
        else:
            assert torch.equal(mask, model_mask[:, : mask.shape[1]])
        assert torch.equal(front.padding_mask_for_lengths(torch.tensor(lengths)), mask)
    # the mask really marks padding in the mixed batch: longer utterances have fewer padded frames
    _, mask = front(random_wavs(LENGTHS))
    pads = mask.sum(1).tolist()
    assert pads[0] <= pads[3] or pads[3] == 0
    assert pads[2] > pads[1] > pads[0] >= 0


@pytest.mark.parametrize("family", FAMS)
def test_front_end_is_frozen_and_holds_no_transformer_layer(family):
    ckpt = _variant(family, "base")
    front = FrontEnd.from_teacher_checkpoint(family, ckpt)
    assert not any(p.requires_grad for p in front.parameters())
    front.train()
    assert not front.training
    assert not any(".layers." in k for k in front.state_dict())
    # every front-end weight is the teacher's tensor (same values), under the documented key mapping
    weights = FAMILIES[family].weights(ckpt)
    for key, value in front.state_dict().items():
        teacher_key = "encoder." + key if key.startswith("pos_conv.") else key.replace("encoder_layer_norm.", "encoder.layer_norm.")
        assert torch.equal(value, weights[teacher_key]), key


@pytest.mark.parametrize("arch", ["mlp", "linear", "transformer"])
@pytest.mark.parametrize("family", FAMS)
def test_student_outputs_have_the_teachers_shapes_and_count(family, arch):
    ckpt = _variant(family, "base")
    student = Student.from_teacher(family, ckpt, arch=arch).eval()
    wavs = random_wavs(LENGTHS)
    with torch.no_grad():
        teacher = _expert(family, ckpt)(wavs)["hidden_states"]
        ours, mask = student(wavs)
    assert len(ours) == len(teacher) == 5
    assert [h.shape for h in ours] == [h.shape for h in teacher]
    assert torch.equal(ours[0], teacher[0])
    assert mask.shape == ours[0].shape[:2]
    subset = Student.from_teacher(family, ckpt, arch=arch, targets="2,4").eval()
    with torch.no_grad():
        hs, _ = subset(wavs)
    assert len(hs) == 3 and subset.targets == [2, 4]


def _randomise(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def test_mlp_mimicker_chains_stages_with_residual():
    dim, h = 24, 8
    x = torch.randn(2, 7, dim)
    for residual in (True, False):
        mim = _randomise(build_mimicker(MimickerConfig("mlp", dim, [1, 2, 3], hidden=h, residual=residual)))
        ys = mim(x)
        y = x
        for k, stage in enumerate(mim.stages):  # Linear -> LayerNorm -> ReLU -> Linear, written out
            hidden = F.relu(F.layer_norm(y @ stage.down.weight.T + stage.down.bias, (h,), stage.norm.weight, stage.norm.bias))
            out = hidden @ stage.up.weight.T + stage.up.bias
            y = y + out if residual else out
            torch.testing.assert_close(ys[k], y)
        # parameters per stage: 2 D h + h + D (Linear biases) + 2 h (LayerNorm)
        assert count_parameters(mim) == 3 * (2 * dim * h + h + dim + 2 * h)


def test_residual_mimickers_start_from_the_input():
    """Zero-initialised output layers: before training every prediction is the transformer input."""
    x = torch.randn(2, 5, 16)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    for arch in ("mlp", "linear", "transformer"):
        for y in build_mimicker(MimickerConfig(arch, 16, [1, 2], hidden=8))(x, mask):
            assert torch.equal(y, x), arch


def test_linear_mimicker_is_one_stage_low_rank_affine():
    dim, h = 20, 4
    x = torch.randn(3, 6, dim)
    mim = _randomise(build_mimicker(MimickerConfig("linear", dim, [2, 5], hidden=h)))
    for y, m in zip(mim(x), mim.maps):  # each from x0 alone, not from the previous prediction
        torch.testing.assert_close(y, x + x @ m.down.weight.T @ m.up.weight.T + m.up.bias)
        assert torch.linalg.matrix_rank((y - x - m.up.bias).reshape(-1, dim)) <= h


def test_transformer_mimicker_ignores_padded_frames():
    dim = 16
    mim = _randomise(build_mimicker(MimickerConfig("transformer", dim, [1, 2], hidden=8, heads=2))).eval()
    x = torch.randn(1, 9, dim)
    padded = torch.cat([x, 100 * torch.randn(1, 4, dim)], dim=1)
    mask = torch.zeros(1, 13, dtype=torch.bool)
    mask[:, 9:] = True
    alone = mim(x, torch.zeros(1, 9, dtype=torch.bool))
    batched = mim(padded, mask)
    for a, b in zip(alone, batched):
        torch.testing.assert_close(b[:, :9], a, rtol=1e-5, atol=1e-5)
    unmasked = mim(padded, torch.zeros(1, 13, dtype=torch.bool))
    assert not torch.allclose(unmasked[0][:, :9], alone[0], atol=1e-3)  # the mask is what makes the difference


@pytest.mark.parametrize(
    "spec, message",
    [
        ("0,2", r"out of range: the teacher has 4 transformer layers, so targets are hidden_states indices 1..4"),
        ("2,5", r"\[5\] out of range"),
        ("3,2", "strictly increasing"),
        ("2,2", "no duplicates"),
        ("a,b", "not a comma-separated list"),
        (",", "empty"),
    ],
)
def test_bad_targets(spec, message):
    with pytest.raises(UserInputError, match=message):
        parse_targets(spec, 4)


def test_targets_default_to_every_layer():
    assert parse_targets(None, 12) == list(range(1, 13)) == parse_targets("all", 12)
    assert parse_targets("4,8,12", 12) == [4, 8, 12]


def test_bad_mimicker_config():
    with pytest.raises(UserInputError, match="unknown mimicker architecture 'lstm'"):
        MimickerConfig("lstm", 32, [1])
    with pytest.raises(UserInputError, match="not divisible by 3 heads"):
        MimickerConfig("transformer", 32, [1], hidden=64, heads=3)


@pytest.mark.parametrize("family", FAMS)
def test_student_checkpoint_round_trip_without_the_teacher(family, tmp_path):
    ckpt = _variant(family, "base")
    student = Student.from_teacher(family, ckpt, arch="mlp", targets="1,3")
    _randomise(student.mimicker)
    path = save_student(student, dict(teacher_configs(family, ckpt), source="tiny.pt"), tmp_path / "student.pt")
    raw = torch.load(path, weights_only=True)  # plain dict: no pickled objects
    assert raw["teacher"]["family"] == family and raw["targets"] == [1, 3]
    assert raw["student_config"]["arch"] == "mlp" and raw["teacher"]["num_layers"] == 4
    loaded, _ = load_student(path, expected_family=family)
    wavs = random_wavs((16000, 9000))
    with torch.no_grad():
        a, _ = student.eval()(wavs)
        b, _ = loaded(wavs)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    with pytest.raises(UserInputError, match=f"student .* is a {family} checkpoint, not .*distilled_{family}"):
        load_student(path, expected_family="wavlm" if family != "wavlm" else "hubert")


def test_teacher_checkpoint_is_not_a_student(tiny_ckpts):
    with pytest.raises(UserInputError, match="not a distilled student checkpoint.*hubert_local"):
        load_student(tiny_ckpts["hubert"])


@pytest.mark.parametrize("variant", ["base", "prenorm"])
@pytest.mark.parametrize("family", FAMS)
def test_teacher_stack_reproduces_the_teacher_from_its_input(family, variant):
    ckpt = _variant(family, variant)
    expert = _expert(family, ckpt)
    wavs = random_wavs((16000,))
    with torch.no_grad():
        hs = expert(wavs)["hidden_states"]
        out = TeacherStack(expert.model, family)(hs[0])
    torch.testing.assert_close(out, hs[-1], rtol=1e-5, atol=1e-5)


def test_linear_cka_matches_the_kernel_formula_and_invariances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g, dtype=torch.float64)
    y = x @ torch.randn(12, 10, generator=g, dtype=torch.float64) + 0.5 * torch.randn(300, 10, generator=g, dtype=torch.float64)
    # independent: HSIC with the centring matrix on linear kernels, CKA = HSIC(K,L) / sqrt(HSIC(K,K) HSIC(L,L))
    n = x.shape[0]
    hmat = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = hmat @ x @ x.T @ hmat, hmat @ y @ y.T @ hmat
    expected = float((k * l).sum() / torch.sqrt((k * k).sum() * (l * l).sum()))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)
    acc = LayerError()  # streaming, in uneven chunks, with a y of the same width
    y12 = torch.cat([y, x[:, :2]], dim=1)
    for a, b in [(0, 7), (7, 150), (150, 300)]:
        acc.update(x[a:b], y12[a:b])
    assert acc.cka() == pytest.approx(linear_cka(x, y12), rel=1e-9)
    assert acc.mse() == pytest.approx(float(((x - y12) ** 2).mean()), rel=1e-12)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, torch.randn(300, 12, generator=g, dtype=torch.float64)) < 0.2


def test_macs_count_matrix_products():
    lin = torch.nn.Linear(32, 16)
    x = torch.randn(5, 32)
    assert macs(lambda: lin(x)) == 5 * 32 * 16
