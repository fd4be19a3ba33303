"""distilled_hubert / distilled_wav2vec2 / distilled_wavlm: s3prl hub entries that load student.pt and
return hidden states with the teacher's order, meaning, shapes and padding."""

from __future__ import annotations

import pytest
import torch

from s3prl_redundancy.distill.student import Student, save_student, teacher_configs
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.testing.audio import random_wavs
from s3prl_redundancy.testing.models import build_checkpoint
from s3prl_redundancy.upstreams.distilled.hubconf import distilled_hubert, distilled_wav2vec2, distilled_wavlm

FAMS = ("hubert", "wav2vec2", "wavlm")
LENGTHS = (16000, 12345, 7001)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread


def _save(family, teacher_ckpt, path, arch="mlp", targets=None, seed=1):
    student = Student.from_teacher(family, teacher_ckpt, arch=arch, targets=targets, hidden=16)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # trained-looking weights: every stage changes its input
        for p in student.mimicker.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    save_student(student, dict(teacher_configs(family, teacher_ckpt), source="teacher.pt"), path)
    return path


@pytest.fixture(scope="module")
def students(tiny_ckpts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("students")
    out = {}
    for family in FAMS:
        ckpt = torch.load(tiny_ckpts[family], weights_only=True)
        out[family] = _save(family, ckpt, folder / f"{family}.pt")
    return out


@pytest.mark.parametrize("family", FAMS)
def test_entry_gives_the_teachers_layout(family, students, tiny_ckpts):
    import s3prl.hub as hub

    upstream = getattr(hub, f"distilled_{family}")(ckpt=str(students[family])).eval()
    teacher = getattr(hub, f"{family}_local")(ckpt=str(tiny_ckpts[family])).eval()
    wavs = random_wavs(LENGTHS)
    with torch.no_grad():
        ours = upstream(wavs)
        ref = teacher(wavs)["hidden_states"]
    hs = ours["hidden_states"]
    assert len(hs) == len(ref) == 5
    assert [h.shape for h in hs] == [h.shape for h in ref]  # padded batch: same T for every utterance
    assert torch.equal(hs[0], ref[0])  # the transformer input is the teacher's
    assert ours["last_hidden_state"] is hs[-1]
    # each entry is its stage applied to the previous one: y_k = y_{k-1} + up(relu(norm(down(y_{k-1}))))
    y = ref[0]
    for k, stage in enumerate(upstream.student.mimicker.stages):
        y = y + stage.up(torch.relu(stage.norm(stage.down(y))))
        torch.testing.assert_close(hs[k + 1], y)
    assert not torch.allclose(hs[1], hs[0])
    assert upstream.get_downsample_rates("hidden_states") == 320
    assert upstream.targets == [1, 2, 3, 4] and upstream.teacher_info["family"] == family


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_featurizer_weighted_sum_and_lengths_match_the_teacher(family, students, tiny_ckpts):
    from s3prl.upstream.interfaces import Featurizer
    import s3prl.hub as hub

    upstream = getattr(hub, f"distilled_{family}")(ckpt=str(students[family])).eval()
    teacher = getattr(hub, f"{family}_local")(ckpt=str(tiny_ckpts[family])).eval()
    wavs = random_wavs((16000, 8000, 12345))
    ours = Featurizer(upstream, "hidden_states", upstream_device="cpu")
    ref = Featurizer(teacher, "hidden_states", upstream_device="cpu")
    with torch.no_grad():
        feats = ours(wavs, upstream(wavs))
        ref_feats = ref(wavs, teacher(wavs))
    assert len(ours.weights) == len(ref.weights) == 5
    assert [f.shape for f in feats] == [f.shape for f in ref_feats] == [(49, 32), (25, 32), (39, 32)]
    only_last = Featurizer(upstream, "last_hidden_state", upstream_device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(only_last(wavs, upstream(wavs))[0], upstream(wavs)["hidden_states"][-1][0, :49])


@pytest.mark.parametrize("family", FAMS)
def test_light_front_end_student_gives_the_teachers_layout_and_featurizes(family, tiny_ckpts, tmp_path):
    from s3prl.upstream.interfaces import Featurizer
    import s3prl.hub as hub

    ckpt = torch.load(tiny_ckpts[family], weights_only=True)
    student = Student.from_teacher(family, ckpt, hidden=16, front_end="light", front_end_channels=16)
    path = save_student(student, dict(teacher_configs(family, ckpt), source="teacher.pt"), tmp_path / "light.pt")
    upstream = getattr(hub, f"distilled_{family}")(ckpt=str(path)).eval()
    teacher = getattr(hub, f"{family}_local")(ckpt=str(tiny_ckpts[family])).eval()
    assert upstream.student.front_end.kind == "light" and upstream.front_end == {"kind": "light", "channels": 16,
                                                                                 "context": 31}
    wavs = random_wavs((16000, 8000, 12345))
    with torch.no_grad():
        hs, ref = upstream(wavs)["hidden_states"], teacher(wavs)["hidden_states"]
        feats = Featurizer(upstream, "hidden_states", upstream_device="cpu")(wavs, upstream(wavs))
        ref_feats = Featurizer(teacher, "hidden_states", upstream_device="cpu")(wavs, teacher(wavs))
    assert len(hs) == len(ref) == 5
    assert [h.shape for h in hs] == [h.shape for h in ref]
    assert [f.shape for f in feats] == [f.shape for f in ref_feats]


def test_s3prl_upstream_wrapper_loads_a_target_subset(tiny_ckpts, tmp_path):
    from s3prl.nn import S3PRLUpstream

    ckpt = torch.load(tiny_ckpts["wav2vec2"], weights_only=True)
    path = _save("wav2vec2", ckpt, tmp_path / "student.pt", arch="linear", targets="2,4")
    upstream = S3PRLUpstream("distilled_wav2vec2", path_or_url=str(path)).eval()
    assert upstream.num_layers == 3 and upstream.downsample_rates == [320] * 3
    wavs = torch.stack(random_wavs((16000, 16000)))
    with torch.no_grad():
        hs, lens = upstream(wavs, torch.tensor([16000, 9000]))
    assert [h.shape[1] for h in hs] == [50] * 3 and lens[0].tolist() == [50, 29]


def test_real_frames_do_not_depend_on_the_batch(tmp_path):
    """With a teacher whose front end is padding-independent (layer-norm CNN, length mask), a transformer
    mimicker's real frames are the same in a padded batch as alone: attention ignores padded frames."""
    import s3prl.hub as hub

    ckpt = build_checkpoint("wav2vec2", extractor_mode="layer_norm")
    path = _save("wav2vec2", ckpt, tmp_path / "s.pt", arch="transformer")
    upstream = hub.distilled_wav2vec2(ckpt=str(path)).eval()
    wavs = random_wavs((16000, 7001))
    with torch.no_grad():
        batch = upstream(wavs)["hidden_states"]
        alone = upstream([wavs[1]])["hidden_states"]
    frames = alone[0].shape[1]
    assert batch[0].shape[1] > frames
    for b, a in zip(batch, alone):
        torch.testing.assert_close(b[1:, :frames], a, rtol=1e-4, atol=1e-5)


def test_wrong_family_and_bad_arguments_are_refused(students, tiny_ckpts, tmp_path):
    entries = {"hubert": distilled_hubert, "wav2vec2": distilled_wav2vec2, "wavlm": distilled_wavlm}
    with pytest.raises(UserInputError, match=r"is a wavlm checkpoint, not hubert; use the wavlm entry \(e.g. distilled_wavlm\)"):
        entries["hubert"](ckpt=str(students["wavlm"]))
    with pytest.raises(UserInputError, match=r"is a hubert checkpoint, not wav2vec2; use the hubert entry \(e.g. distilled_hubert\)"):
        entries["wav2vec2"](ckpt=str(students["hubert"]))
    with pytest.raises(UserInputError, match="not a distilled student checkpoint.*-u hubert_local"):
        entries["hubert"](ckpt=str(tiny_ckpts["hubert"]))
    with pytest.raises(UserInputError, match="distilled_wavlm needs -k student.pt"):
        entries["wavlm"]()
    with pytest.raises(UserInputError, match="takes no -g model config"):
        entries["hubert"](ckpt=str(students["hubert"]), model_config="keep.yaml")
    with pytest.raises(UserInputError, match="does not exist"):
        entries["hubert"](ckpt=str(tmp_path / "missing.pt"))


def test_hubconf_lists_exactly_the_three_entries():
    from s3prl_redundancy.upstreams import hubconf_modules
    from s3prl_redundancy.upstreams.distilled import hubconf

    assert "s3prl_redundancy.upstreams.distilled.hubconf" in hubconf_modules()
    assert hubconf.__all__ == ["distilled_hubert", "distilled_wav2vec2", "distilled_wavlm"]
