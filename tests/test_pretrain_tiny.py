"""Pretraining of tiny_hubert: deterministic data, aligned targets, a short run that learns, exact resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.superb.tts import espeak_available

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

SMALL_MODEL = dict(
    encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=2,
    conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2", conv_pos=16, conv_pos_groups=4,
    layer_norm_first=True, label_rate=50.0, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    encoder_layerdrop=0.0, dropout_input=0.0, dropout_features=0.0, feature_grad_mult=1.0, mask_prob=0.8, mask_length=5,
)


def _small_cfg(**kw):
    from s3prl_redundancy.pretrain.data import DataConfig
    from s3prl_redundancy.pretrain.train import TrainConfig

    base = dict(seed=3, steps=20, batch_size=4, crop_seconds=1.0, lr=3e-3, n_clusters=8, checkpoint_every=10,
                eval_every=1000, log_every=1000, data=DataConfig(seed=3, n_sentences=14, n_phrases=2),
                model_cfg=SMALL_MODEL)
    base.update(kw)
    return TrainConfig(**base)


@needs_espeak
def test_pretraining_data_is_deterministic_and_varied():
    from s3prl_redundancy.pretrain.data import HELDOUT_VARIANTS, DataConfig, plan_clips, synthesize_clips
    from s3prl_redundancy.superb.corpus import _ER_SENTENCES, KS_COMMANDS

    cfg = DataConfig(seed=5, n_sentences=6, n_phrases=2)
    a, plans_a = synthesize_clips(cfg, workers=2)
    b, plans_b = synthesize_clips(cfg, workers=1)
    assert plans_a == plans_b
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    other, _ = synthesize_clips(dataclasses.replace(cfg, seed=6), workers=2)
    assert not np.array_equal(a[0][: len(other[0])], other[0][: len(a[0])])
    assert all(x.dtype == np.float32 and np.isfinite(x).all() and 0.05 < np.abs(x).max() <= 1.0 for x in a)

    big = plan_clips(DataConfig(seed=0))
    assert len(big) == 1900
    texts = {p.text.lower() for p in big}
    assert not texts & ({s.lower() for s in _ER_SENTENCES} | set(KS_COMMANDS))  # no test-corpus test utterance
    assert not {p.voice.variant for p in big} & set(HELDOUT_VARIANTS)  # probe voices stay unseen
    assert len({p.voice for p in big}) > 1500 and len({p.voice.variant for p in big}) > 50
    assert len({p.voice.name for p in big}) == 8


def test_targets_align_with_the_conv_front_end():
    import torch

    from s3prl_redundancy.pretrain.model import build_model
    from s3prl_redundancy.pretrain.targets import WINDOW, mfcc39, num_frames

    model, _ = build_model(0, SMALL_MODEL, n_clusters=8)
    rng = np.random.default_rng(0)
    for n in (WINDOW, WINDOW + 319, WINDOW + 320, 16000, 16001, 23456, 48000):
        wav = (rng.standard_normal(n) * 0.1).astype(np.float32)
        feats = mfcc39(wav)
        with torch.no_grad():
            conv = model.forward_features(torch.from_numpy(wav)[None])
        assert feats.shape == (num_frames(n), 39)
        assert conv.shape[2] == num_frames(n), n
        assert np.allclose(feats.mean(0), 0, atol=1e-3)  # per-utterance mean removed
        raw = mfcc39(wav, cmn=False)
        assert np.allclose(raw - raw.mean(0), feats, atol=1e-3) and np.abs(raw.mean(0)).max() > 1.0
    # frame t covers samples [320 t, 320 t + 400): an impulse in frame 10's exclusive span changes frame 10 first
    wav = np.zeros(16000, np.float32)
    wav[3200 + 200] = 1.0
    energy = np.abs(mfcc39(wav + 1e-4 * rng.standard_normal(16000).astype(np.float32))[:, 0])
    assert int(np.argmax(energy)) in (9, 10)
    with pytest.raises(ValueError):
        mfcc39(np.zeros(100, np.float32))


@needs_espeak
def test_short_run_learns_and_resume_is_exact(tmp_path):
    from s3prl_redundancy.pretrain.train import EXPORT, STATE, train

    import torch

    data_dir = tmp_path / "data"
    full = train(_small_cfg(), tmp_path / "full", data_dir=data_dir, log=lambda m: None)
    losses = [h["loss"] for h in full["history"]]
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses

    part = train(_small_cfg(), tmp_path / "part", data_dir=data_dir, stop_after=10, log=lambda m: None)
    assert len(part["history"]) == 10
    with pytest.raises(UserInputError, match="out: .*a previous \"pretrain-tiny\" run .*`resume=True`"):
        train(_small_cfg(), tmp_path / "part", data_dir=data_dir, log=lambda m: None)
    with pytest.raises(UserInputError, match="different configuration"):
        train(_small_cfg(lr=1e-3, steps=None), tmp_path / "part", data_dir=data_dir, resume=True, log=lambda m: None)
    resumed = train(_small_cfg(steps=None), tmp_path / "part", data_dir=data_dir, resume=True, log=lambda m: None)
    assert [h["loss"] for h in resumed["history"]] == losses  # bit-identical to the uninterrupted run

    state = torch.load(tmp_path / "part" / STATE, map_location="cpu", weights_only=True)
    assert state["step"] == 20
    ck = torch.load(tmp_path / "part" / EXPORT, map_location="cpu", weights_only=True)
    assert set(ck) >= {"task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"}
    assert len(ck["dictionaries_symbols"][0]) == 8
    full_ck = torch.load(tmp_path / "full" / EXPORT, map_location="cpu", weights_only=True)
    assert all(torch.equal(ck["model_weight"][k], full_ck["model_weight"][k]) for k in ck["model_weight"])


@needs_espeak
def test_layer_consistent_run_shares_samples_depths_and_resumes_exactly(tmp_path):
    """``share_layers`` + ``depth_range``: one layer's weights in the state, the depths of the history are the
    (seed, step) draws and cover their range, the export is an expanded hubert_local checkpoint, resume is exact."""
    import torch
    from s3prl.upstream.hubert.convert import load_converted_model

    from s3prl_redundancy import layer_consistency as lc
    from s3prl_redundancy.pretrain.train import EXPORT, STATE, train

    kw = dict(share_layers=1, depth_range=(1, 2), steps=12, checkpoint_every=4)
    data_dir = tmp_path / "data"
    full = train(_small_cfg(**kw), tmp_path / "full", data_dir=data_dir, log=lambda m: None)
    depths = [h["depth"] for h in full["history"]]
    assert depths == [lc.sample_depth(3, s, (1, 2)) for s in range(12)] and set(depths) == {1, 2}
    state = torch.load(tmp_path / "full" / STATE, weights_only=True)
    layer_keys = {k for k in state["model"] if k.startswith("encoder.layers.")}
    assert layer_keys and all(k.startswith("encoder.layers.blocks.0.") for k in layer_keys)
    assert state["identity"]["share_layers"] == 1 and state["identity"]["depth_range"] == [1, 2]
    ck = torch.load(tmp_path / "full" / EXPORT, weights_only=True)
    assert ck[lc.META_KEY]["share_layers"] == 1 and ck[lc.META_KEY]["depth_range"] == [1, 2]
    assert torch.equal(ck["model_weight"]["encoder.layers.0.fc1.weight"], ck["model_weight"]["encoder.layers.1.fc1.weight"])
    load_converted_model(str(tmp_path / "full" / EXPORT))  # s3prl's hubert_local loader reads the expanded form

    train(_small_cfg(**kw), tmp_path / "part", data_dir=data_dir, stop_after=6, log=lambda m: None)
    with pytest.raises(UserInputError, match="different configuration"):  # sharing is part of the run's identity
        train(_small_cfg(**dict(kw, share_layers=None, steps=None)), tmp_path / "part", data_dir=data_dir,
              resume=True, log=lambda m: None)
    resumed = train(_small_cfg(**dict(kw, steps=None)), tmp_path / "part", data_dir=data_dir, resume=True,
                    log=lambda m: None)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]


def test_lr_schedule_and_argument_errors(tmp_path):
    from s3prl_redundancy.pretrain.train import lr_at, train

    lrs = [lr_at(s, 100, 1e-3, 0.05) for s in range(100)]
    assert lrs[4] == pytest.approx(1e-3) and lrs[0] == pytest.approx(2e-4)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] < 1e-5
    with pytest.raises(UserInputError, match="no train_state.pt"):
        train(_small_cfg(), tmp_path / "none", resume=True, log=lambda m: None)
    with pytest.raises(UserInputError, match="steps: give `steps` or `minutes`"):
        train(_small_cfg(steps=None), tmp_path / "none", log=lambda m: None)


def test_cli_command_is_discovered():
    from s3prl_redundancy.cli import discover_commands, _summary

    commands = discover_commands()
    assert "pretrain-tiny" in commands
    assert "tiny_hubert" in _summary(commands["pretrain-tiny"])


@needs_espeak
def test_second_iteration_targets_from_a_checkpoint(tmp_path):
    """--targets-from: k-means on a model's hidden state, aligned with the clips, cached by checkpoint hash."""
    import torch

    from s3prl_redundancy.io import atomic_torch_save
    from s3prl_redundancy.pretrain.data import load_or_build
    from s3prl_redundancy.pretrain.model import build_model, hubert_local_checkpoint
    from s3prl_redundancy.pretrain.targets import model_layer_features, num_frames
    from s3prl_redundancy.pretrain.train import EXPORT, prepare_corpus, train

    model, cfg = build_model(7, SMALL_MODEL, n_clusters=8)
    src = atomic_torch_save(hubert_local_checkpoint(model, cfg, 8, half=False), tmp_path / "it1.pt")
    data_dir = tmp_path / "data"
    wavs, _ = load_or_build(_small_cfg().data, data_dir, log=lambda m: None)
    feats = model_layer_features(src, wavs[:3], layer=1)
    assert [f.shape for f in feats] == [(num_frames(len(w)), 64) for w in wavs[:3]]
    with pytest.raises(ValueError, match="hidden states 0..2"):
        model_layer_features(src, wavs[:1], layer=3)

    res = train(_small_cfg(steps=4, targets_from=str(src), target_layer=1), tmp_path / "it2", data_dir=data_dir,
                log=lambda m: None)
    assert len(res["history"]) == 4 and all(np.isfinite(h["loss"]) for h in res["history"])
    assert len(list(data_dir.glob("targets_*_it2_*_L1.npz"))) == 1
    corpus = prepare_corpus(_small_cfg(targets_from=str(src), target_layer=1, targets_sha=res["targets_sha"]), data_dir)
    assert all(len(l) == num_frames(len(w)) and l.max() < 8 for w, l in zip(corpus.train_wavs, corpus.train_labels))
    meta = torch.load(tmp_path / "it2" / EXPORT, map_location="cpu", weights_only=True)["tiny_hubert"]
    assert "hidden state 1" in meta["targets"]


def test_cli_target_options_are_checked(tmp_path):
    import argparse

    from s3prl_redundancy.commands import pretrain_tiny

    parser = argparse.ArgumentParser()
    pretrain_tiny.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "o"), "--steps", "5", "--targets-from", str(tmp_path / "missing.pt")])
    assert args.target_layer == 3 and args.clusters == 100
    with pytest.raises(UserInputError, match="no such file"):
        pretrain_tiny.run(args)
    (tmp_path / "it1.pt").write_bytes(b"x")
    args = parser.parse_args(["--out", str(tmp_path / "o"), "--steps", "5", "--targets-from", str(tmp_path / "it1.pt"), "--no-cmn"])
    with pytest.raises(UserInputError, match="no_cmn: .*`targets_from`"):
        pretrain_tiny.run(args)
    with pytest.raises(UserInputError, match="clusters: must be at least 2"):
        pretrain_tiny.run(parser.parse_args(["--out", str(tmp_path / "o"), "--steps", "5", "--clusters", "1"]))


def test_out_follows_the_output_policy_before_any_work(tmp_path, monkeypatch):
    """Another command's folder is refused even with `force`; `resume` without a state names `force=True`;
    nothing is synthesised or trained first."""
    import s3prl_redundancy.pretrain.train as train_module
    from s3prl_redundancy.io import OutputDir

    def no_work(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(train_module, "prepare_corpus", no_work)
    pruned = tmp_path / "pruned"
    OutputDir(pruned, "prune").write_json("manifest.json", {"what": "a pruned model"})
    with pytest.raises(UserInputError, match='out: .*outputs of a "prune" run, not of "pretrain-tiny"'):
        train_module.train(_small_cfg(), pruned, force=True, log=lambda m: None)
    assert (pruned / "manifest.json").exists()
    attempt = tmp_path / "attempt"
    OutputDir(attempt, "pretrain-tiny").write_text(train_module.HISTORY, "{}")  # an earlier run, no state yet
    with pytest.raises(UserInputError, match="resume: .*no train_state.pt .*stopped before writing it.*`force=True`"):
        train_module.train(_small_cfg(), attempt, resume=True, log=lambda m: None)
    with pytest.raises(UserInputError, match="out: .*history.json.*`force=True`"):
        train_module.train(_small_cfg(), attempt, log=lambda m: None)
