"""Linear bridges: the streamed closed-form fit against a direct solve, and exact recovery when the removed
run of layers is affine (pre-LN layers whose output projections are zeroed compute ``x + c``)."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from s3prl_redundancy.audio import AudioDataset
from s3prl_redundancy.cli import main
from s3prl_redundancy.compression.bridges import (
    MomentStatistics,
    linear_cka,
    removed_runs,
)
from s3prl_redundancy.compression.compress import compress
from s3prl_redundancy.compression.strategies import Target, plan_layers
from s3prl_redundancy.plugins import build_strategy
from s3prl_redundancy.compression.structure import LinearBridge, make_upstream
from s3prl_redundancy.testing.audio import write_labelled_audio
from s3prl_redundancy.testing.models import make_identity_layers
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.testing.audio import random_wavs
from s3prl_redundancy.testing.models import build_checkpoint



@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bridge_audio")
    write_labelled_audio(folder, classes=2, per_class=4, seconds=(0.5, 0.8), seed=1)
    return folder


def test_removed_runs():
    assert removed_runs([0, 3, 4], 7) == [(1, 2), (5, 6)]
    assert removed_runs([2], 4) == [(0, 1), (3, 3)]
    assert removed_runs([0, 1], 2) == []


def test_streamed_fit_recovers_a_linear_map_exactly():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 8, generator=g, dtype=torch.float64)
    c = torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.randn(500, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 8, generator=g, dtype=torch.float64) + 3.0
    y = x @ a.T + c
    stats = MomentStatistics(8, 6)
    for chunk in torch.split(torch.arange(500), 77):  # uneven batches
        stats.update(x[chunk], y[chunk])
    w, b, info = stats.fit(ridge=0.0)
    torch.testing.assert_close(w, a, rtol=0, atol=1e-8)
    torch.testing.assert_close(b, c, rtol=0, atol=1e-8)
    assert info["frames"] == 500


def test_ridge_fit_matches_a_direct_solve():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 5)) * [1, 2, 3, 4, 5]
    y = np.tanh(x @ rng.standard_normal((5, 4))) + 0.1 * rng.standard_normal((300, 4))
    stats = MomentStatistics(5, 4)
    for chunk in np.array_split(np.arange(300), 4):
        stats.update(torch.from_numpy(x[chunk]), torch.from_numpy(y[chunk]))
    w, b, info = stats.fit(ridge=0.1)
    xc, yc = x - x.mean(0), y - y.mean(0)
    lam = 0.1 * np.trace(xc.T @ xc / 300) / 5
    w_ref = np.linalg.solve(xc.T @ xc / 300 + lam * np.eye(5), xc.T @ yc / 300).T
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.numpy(), y.mean(0) - w_ref @ x.mean(0), rtol=1e-9, atol=1e-12)
    assert info["lambda"] == pytest.approx(lam)


def test_linear_cka_is_invariant_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, torch.randn(200, 6, generator=g)) < 0.3


@pytest.mark.parametrize("family, run", [("hubert", [1, 2]), ("wavlm", [0, 1])])
def test_bridge_over_an_affine_run_recovers_the_output_exactly(family, run, audio):
    """Layers ``run`` compute ``x + c`` exactly; removing them loses ``c``, a fitted bridge restores it. For
    WavLM the run includes layer 0, the owner of the relative position bias: the bias must survive too."""
    ckpt = make_identity_layers(build_checkpoint(family, num_layers=5, seed=4, layer_norm_first=True), run, keep_biases=True)
    keep = [l for l in range(5) if l not in run]
    plan = plan_layers(build_strategy("explicit", keep_layers=keep), 5, Target("layers", tuple(keep)))
    dataset = AudioDataset.from_data(audio)
    bridged = compress(ckpt, source="test", plan=plan, bridge="linear", bridge_ridge=0.0, bridge_data=dataset)
    plain = compress(ckpt, source="test", plan=plan)
    positions = bridged.checkpoint["s3prl_redundancy"]["structure"]["positions"]
    assert [p["kind"] for p in positions] == ["layer"] * (run[0]) + ["bridge"] + ["layer"] * (len(keep) - run[0])
    assert positions[run[0]]["replaces"] == run
    up = make_upstream(bridged.checkpoint)
    assert isinstance(up.model.encoder.layers[run[0]], LinearBridge)
    wavs = random_wavs((16000, 12000), seed=5)  # not the fitting audio
    with torch.no_grad():
        ref = make_upstream(ckpt)(wavs)["hidden_states"]
        ours = up(wavs)["hidden_states"]
        lost = make_upstream(plain.checkpoint)(wavs)["hidden_states"]
    assert len(ours) == len(keep) + 2  # one hidden state more: the bridge's output
    torch.testing.assert_close(ours[-1], ref[-1], rtol=1e-4, atol=2e-4)
    assert (lost[-1] - ref[-1]).abs().max() > 1e-2  # plain removal does lose the run's contribution


@pytest.mark.slow
def test_cli_bridge_reports_plain_removal_versus_bridge_on_held_out_audio(audio, tmp_path, capsys, monkeypatch):
    from s3prl_redundancy import cli

    ckpt = make_identity_layers(build_checkpoint("hubert", num_layers=4, seed=6, layer_norm_first=True), [2], keep_biases=True)
    path = tmp_path / "affine.pt"
    torch.save(ckpt, path)
    out = tmp_path / "out"
    assert main(["prune", "--upstream", "hubert_local", "--ckpt", str(path), "--keep-layers", "0,1,3", "--bridge", "linear",
                 "--bridge-ridge", "0", "--bridge-holdout", "0.25", "--data", str(audio), "--out", str(out),
                 "--no-latency", "--cost-seconds", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    held = manifest["bridges"]["held_out"]
    assert held["utterances"] == 2 and manifest["bridges"]["runs"] == [[2, 2]]
    assert held["bridged"]["mse"] < 1e-6 < held["plain_removal"]["mse"]
    assert held["bridged"]["cka"] > held["plain_removal"]["cka"]
    assert "compressed_entry" in manifest["load_with"] and "s3prl_local_entry" not in manifest["load_with"]
    import s3prl.hub as hub

    assert len(hub.compressed_hubert(ckpt=str(out / "pruned.pt")).eval()(random_wavs())["hidden_states"]) == 5


def test_bridge_errors():
    stats = MomentStatistics(3, 3)
    with pytest.raises(UserInputError, match="at least 2 frames"):
        stats.fit()
    stats.update(torch.ones(4, 3), torch.ones(4, 3))  # constant input: singular without ridge
    with pytest.raises(UserInputError, match="singular"):
        stats.fit(ridge=0.0)
    ckpt = build_checkpoint("hubert", num_layers=3)
    with pytest.raises(UserInputError, match="needs layers to remove"):
        compress(ckpt, source="x", bridge="linear")
