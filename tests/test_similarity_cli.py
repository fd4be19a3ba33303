"""``s3prl-redundancy similarity`` end to end on a tiny random HuBERT (hubert_local): files, refusals,
bad input, NaN hidden states, checkpoint / resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile
import torch

from s3prl_redundancy.cli import main
from s3prl_redundancy.hookspecs import hookimpl
from s3prl_redundancy.io import MARKER
from s3prl_redundancy.plugins import get_plugin_manager

METRICS = ("cosine", "cka", "debiased_cka", "mknn")


def _write(path, seconds, sr=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (120 + 30 * seed) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.03 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, x.astype(np.float32), sr)


@pytest.fixture
def audio(tmp_path):
    folder = tmp_path / "audio"
    for i, seconds in enumerate((0.6, 0.45, 0.8, 0.3, 0.7)):
        _write(folder / ("sub" if i % 2 else "") / f"utt{i}.wav", seconds, seed=i)
    _write(folder / "sub" / "narrowband.flac", 0.5, sr=8000, seed=9)  # resampled to 16 kHz, not an error
    return folder


def _argv(ckpt, data, out, *extra):
    return ["similarity", "--upstream", "hubert_local", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out),
            "--mknn-k", "5", "--quiet", *extra]


def test_cli_writes_every_file_and_refuses_to_overwrite(tiny_ckpts, audio, tmp_path, capsys):
    from s3prl_redundancy.audio import AudioDataset

    out = tmp_path / "out"
    assert main(_argv(tiny_ckpts["hubert"], audio, out, "--batch-size", "1")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = {"similarity.json", "similarity_all.png", "block_influence.png"} | {f"{m}.{e}" for m in METRICS for e in ("csv", "png")}
    assert {p.name for p in out.iterdir()} == expected | {MARKER}  # no .partial left, nothing else
    data = json.loads((out / "similarity.json").read_text())
    dataset = AudioDataset.from_data(audio)
    lengths = [len(dataset[i][1]) for i in range(len(dataset))]
    assert 7990 <= lengths[dataset.files.index(audio / "sub" / "narrowband.flac")] <= 8010  # 0.5 s at 16 kHz
    # batch size 1: T is the model's own frame count, (len - 400) // 320 + 1, and s3prl's round(len / 320) is capped at it
    frames = sum(min(round(n / 320), (n - 400) // 320 + 1) for n in lengths)
    assert data["num_utterances"] == 6 == summary["num_utterances"] and data["num_frames"] == frames == summary["num_frames"]
    assert data["upstream"] == "hubert_local" and data["layers"] == [0, 1, 2, 3, 4]
    for name in METRICS:
        m = np.array(data["metrics"][name])
        assert m.shape == (5, 5) and np.allclose(m, m.T) and np.allclose(np.diag(m), 1.0)
        assert data["blocks"][name]["blocks"][0][0] == 0 and data["blocks"][name]["blocks"][-1][1] == 4
        assert summary["blocks"][name] == data["blocks"][name]["blocks"]
    assert len(data["block_influence"]) == 4 and all(0 < v < 2 for v in data["block_influence"])
    assert data["metric_options"]["mknn"]["k"] == 5 and data["metric_options"]["mknn"]["seed"] == 0
    assert all((out / f).read_bytes()[:4] == b"\x89PNG" for f in expected if f.endswith(".png"))

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(_argv(tiny_ckpts["hubert"], audio, out, "--metrics", "cka")) == 2
    err = capsys.readouterr().err
    assert "already holds similarity results (similarity.json" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(_argv(tiny_ckpts["hubert"], audio, out, "--metrics", "cka", "--force")) == 0
    assert {p.name for p in out.iterdir()} == {MARKER, "similarity.json", "similarity_all.png", "block_influence.png", "cka.csv", "cka.png"}


def _nan_checkpoint(path):
    from s3prl_redundancy.io import atomic_torch_save
    from s3prl_redundancy.testing.models import hubert_checkpoint

    ckpt = hubert_checkpoint(num_layers=4, seed=0)
    ckpt["model_weight"]["encoder.layers.2.fc2.bias"][0] = float("nan")  # the output of layer 2 = hidden state 3
    return atomic_torch_save(ckpt, path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty_folder", "holds no audio files"),
        ("unreadable", "cannot read audio file {data}/broken.wav"),
        ("zero_length", "audio file {data}/silence.wav has no samples (zero length)"),
        ("unknown_metric", "unknown similarity metric(s) 'ckaa'; known metrics: block_influence, cka, cosine, debiased_cka, mknn"),
        ("missing_ckpt", "--ckpt {tmp}/nope.pt does not exist"),
        ("unknown_upstream", "--upstream 'hubert_locall' is not an s3prl hub entry; did you mean hubert_local"),
        ("nan", "hidden state 3 (the output of transformer layer 3) of utterance 'sub/narrowband.flac' (index 0) contains NaN"),
        ("interrupted", "holds the checkpoint of an interrupted run"),
        pytest.param("cuda", "--device cuda was asked for but torch.cuda.is_available() is False",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ],
)
def test_cli_bad_input_is_a_clear_error(case, message, tiny_ckpts, audio, tmp_path, capsys):
    data, ckpt, out, extra = audio, tiny_ckpts["hubert"], tmp_path / "out", []
    if case == "empty_folder":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "unreadable":
        (audio / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    elif case == "zero_length":
        soundfile.write(audio / "silence.wav", np.zeros(0, np.float32), 16000)
    elif case == "unknown_metric":
        extra = ["--metrics", "cka,ckaa"]
    elif case == "missing_ckpt":
        ckpt = tmp_path / "nope.pt"
    elif case == "unknown_upstream":
        extra = ["--upstream", "hubert_locall"]
    elif case == "nan":
        ckpt = _nan_checkpoint(tmp_path / "nan.pt")
    elif case == "cuda":
        extra = ["--device", "cuda"]
    elif case == "interrupted":
        (out / ".partial").mkdir(parents=True)
        (out / ".partial" / "rank0.pt").write_bytes(b"x")
    assert main(_argv(ckpt, data, out, "--batch-size", "2", *extra)) == 2
    err = capsys.readouterr().err
    assert message.format(data=data, tmp=tmp_path) in err, err
    assert err.startswith("s3prl-redundancy similarity: error: ")
    assert not (out / "similarity.json").exists()


class _CrashAfter:
    """A plugin that dies on the n-th batch (a killed job) and counts the batches it saw."""

    def __init__(self, n=None):
        self.n, self.seen = n, []

    @hookimpl
    def s3prl_redundancy_on_hidden_states(self, hidden_states, lengths, utterance_ids):
        self.seen.append(list(utterance_ids))
        if self.n is not None and len(self.seen) == self.n:
            raise KeyboardInterrupt


@pytest.fixture
def plugin():
    pm = get_plugin_manager()
    registered = []

    def add(obj):
        pm.register(obj, name=f"test-crash-{id(obj)}")
        registered.append(obj)
        return obj

    yield add
    for obj in registered:
        if pm.is_registered(obj):
            pm.unregister(obj)


def test_cli_checkpoint_and_resume_equals_a_straight_run(tiny_ckpts, audio, tmp_path, capsys, plugin):
    args = ("--batch-size", "2", "--checkpoint-every", "3", "--mknn-max-frames", "64", "--seed", "5")
    straight = tmp_path / "straight"
    assert main(_argv(tiny_ckpts["hubert"], audio, straight, *args)) == 0

    out = tmp_path / "resumed"
    crash = plugin(_CrashAfter(3))
    capsys.readouterr()
    assert main(_argv(tiny_ckpts["hubert"], audio, out, *args)) == 130  # Ctrl-C: one line, how to continue
    interrupted = capsys.readouterr().err.strip()
    assert interrupted.startswith("s3prl-redundancy similarity: interrupted; progress is saved in ")
    assert interrupted.endswith(" --checkpoint-every 3 --mknn-max-frames 64 --seed 5 --resume")
    state = torch.load(out / ".partial" / "rank0.pt", weights_only=True)
    assert state["position"] == 4 and state["num_utterances"] == 4  # batches of 2: saved after utterance 4
    assert set(state["metrics"]) == {"cosine", "debiased_cka", "mknn"}
    assert not (out / "similarity.json").exists()
    get_plugin_manager().unregister(crash)

    assert main(_argv(tiny_ckpts["hubert"], audio, out, *args)) == 2  # neither --resume nor --force
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert main(_argv(tiny_ckpts["hubert"], audio, out, "--batch-size", "3", *args[2:], "--resume")) == 2
    assert "belongs to a different run (differs in: batch_size)" in capsys.readouterr().err

    counter = plugin(_CrashAfter())
    assert main(_argv(tiny_ckpts["hubert"], audio, out, *args, "--resume")) == 0
    assert len(counter.seen) == 1 and len(counter.seen[0]) == 2  # only the last batch (utterances 5 and 6) was run
    assert not (out / ".partial").exists()
    assert (out / "similarity.json").read_bytes() == (straight / "similarity.json").read_bytes()
    for name in METRICS:
        assert (out / f"{name}.csv").read_bytes() == (straight / f"{name}.csv").read_bytes()


def test_out_errors_name_the_flag_on_the_cli_and_the_argument_in_python(tiny_ckpts, audio, tmp_path, capsys):
    from s3prl_redundancy.errors import UserInputError
    from s3prl_redundancy.similarity.analysis import check_output_dir

    out = tmp_path / "out"
    assert main(_argv(tiny_ckpts["hubert"], audio, out, "--metrics", "cka")) == 0
    capsys.readouterr()
    assert main(_argv(tiny_ckpts["hubert"], audio, out, "--metrics", "cka")) == 2
    err = capsys.readouterr().err
    assert f"error: --out: {out} already holds similarity results" in err and "pass --force to overwrite" in err
    assert "out_dir" not in err and "force=True" not in err
    with pytest.raises(UserInputError) as info:
        check_output_dir(out)
    assert info.value.argument == "out_dir"
    assert str(info.value).startswith(f"out_dir: {out} already holds") and "pass `force=True` to overwrite" in str(info.value)
    assert "--out" not in str(info.value) and "--force" not in str(info.value)


def test_unwritable_out_fails_before_the_model_is_loaded(tiny_ckpts, audio, tmp_path, capsys, monkeypatch):
    import s3prl_redundancy.upstream_loading as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(loading, "load_upstream", no_loading)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(_argv(tiny_ckpts["hubert"], audio, blocker / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith("s3prl-redundancy similarity: error: --out: ") and "is a file, not a folder" in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert main(_argv(tiny_ckpts["hubert"], audio, locked / "out")) == 2
            assert "is not writable" in capsys.readouterr().err
        finally:
            locked.chmod(0o700)


def test_force_deletes_only_what_similarity_wrote(tiny_ckpts, audio, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("--metrics", "cka", "--checkpoint-every", "100")
    assert main(_argv(tiny_ckpts["hubert"], audio, out, *args)) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["command"] == "similarity" and ".partial" not in marker["files"] and "cka.csv" in marker["files"]
    (out / "notes.txt").write_text("mine")
    assert main(_argv(tiny_ckpts["hubert"], audio, out, "--metrics", "cosine")) == 2  # results there: needs --force
    capsys.readouterr()
    assert main(_argv(tiny_ckpts["hubert"], audio, out, "--metrics", "cosine", "--force")) == 0
    left = {p.name for p in out.iterdir()}
    assert "notes.txt" in left and "cka.csv" not in left and "cosine.csv" in left
    assert (out / "notes.txt").read_text() == "mine"
