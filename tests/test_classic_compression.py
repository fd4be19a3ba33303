"""Attention-head pruning, low-rank factorisation and magnitude pruning: outputs against independent
references (the dense model with the same change made by hand), parameters and MACs against hand counts."""

import importlib.util
import json

import pytest
import torch

from s3prl_redundancy.checkpoints import load_checkpoint
from s3prl_redundancy.cli import main
from s3prl_redundancy.compression import structure as St
from s3prl_redundancy.compression.cost import count_macs, parameter_counts
from s3prl_redundancy.compression.head_pruning import (
    output_norm_importance,
    prune_heads,
    select_heads,
    weight_norm_importance,
)
from s3prl_redundancy.compression.low_rank import factorise, low_rank_model, parse_modules, rank_for_energy
from s3prl_redundancy.compression.magnitude import NOTE, magnitude_prune
from s3prl_redundancy.testing.audio import write_labelled_audio
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.testing.audio import random_wavs


FAMS = ("hubert", "wav2vec2", "wavlm")
D, H, HEAD, FFN = 32, 2, 16, 64  # the tiny test models


def _hidden(upstream, wavs):
    with torch.no_grad():
        return upstream(wavs)["hidden_states"]


def _assert_same(a, b, atol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=atol)


def _compressed(ckpt, model):
    """Serialise a live (converted) model and load it back through the compressed expert."""
    family = St.family_of(ckpt)
    structure = St.describe_structure(model, family, list(range(len(model.encoder.layers))))
    out = St.model_to_checkpoint(model, ckpt, {"family": family}, structure)
    return out, St.make_upstream(out)


def _internal_frames(ckpt, seconds=1.0):
    """Frames the transformer layers see for one utterance (HuBERT / wav2vec 2.0 pad to an even count)."""
    up = St.make_upstream(ckpt)
    seen = []
    up.model.encoder.layers[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]) and None)
    _hidden(up, [torch.zeros(int(seconds * 16000))])
    return seen[0]


# --------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMS)
def test_all_heads_converted_equals_s3prl(family, tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts[family])
    wavs = random_wavs((16000, 11111))
    model = St.convert_attention(St.load_model(ckpt), family)
    _, upstream = _compressed(ckpt, model)
    assert isinstance(upstream.model.encoder.layers[0].self_attn, St.CompressedSelfAttention)
    _assert_same(_hidden(upstream, wavs), _hidden(St.make_upstream(ckpt), wavs), atol=1e-6)


@pytest.mark.parametrize("family", FAMS)
def test_removed_heads_equal_zeroed_out_projection_and_shrink_parameters(family, tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts[family])
    keep = {0: [0, 1], 1: [1], 2: [0], 3: [1]}  # head 0 gone from layers 1 and 3, head 1 from layer 2
    model = St.convert_attention(St.load_model(ckpt), family)
    prune_heads(model, keep)
    out, upstream = _compressed(ckpt, model)
    # independent reference: the dense s3prl model with the removed heads' out_proj columns set to zero
    reference = St.make_upstream(ckpt)
    with torch.no_grad():
        for layer, head in [(1, 0), (3, 0), (2, 1)]:
            reference.model.encoder.layers[layer].self_attn.out_proj.weight[:, head * HEAD : (head + 1) * HEAD] = 0
    wavs = random_wavs((16000, 11111))
    _assert_same(_hidden(upstream, wavs), _hidden(reference, wavs))
    fam = FAMILIES[family]
    before, after = parameter_counts(fam.weights(ckpt)), parameter_counts(fam.weights(out))
    per_head = 4 * HEAD * D + 3 * HEAD + (1 if family == "wavlm" else 0)  # q/k/v rows + biases, out_proj columns, grep_a
    assert before["inference"] - after["inference"] == 3 * per_head
    shapes = {k: tuple(v.shape) for k, v in fam.weights(out).items()}
    assert shapes["encoder.layers.1.self_attn.q_proj.weight"] == (HEAD, D)
    assert shapes["encoder.layers.1.self_attn.out_proj.weight"] == (D, HEAD)


def test_head_pruning_macs_fall_as_computed_by_hand(tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    t = _internal_frames(ckpt)
    model = St.convert_attention(St.load_model(ckpt), "hubert")
    prune_heads(model, {0: [0, 1], 1: [1], 2: [0], 3: [1]})
    out, upstream = _compressed(ckpt, model)
    saved = count_macs(St.make_upstream(ckpt), 1.0) - count_macs(upstream, 1.0)
    # per removed head and frame: q, k, v and out projections (4 d D) + scores and weighted sum (2 T d)
    assert saved == 3 * t * (4 * HEAD * D + 2 * t * HEAD)


def test_wavlm_bias_table_keeps_only_heads_still_in_use(tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["wavlm"])
    model = St.convert_attention(St.load_model(ckpt), "wavlm")
    prune_heads(model, {p: [0] for p in range(4)})  # head 1 gone everywhere
    out, upstream = _compressed(ckpt, model)
    w = out["model"]
    assert w["encoder.layers.0.self_attn.relative_attention_bias.weight"].shape == (32, 1)
    assert out["s3prl_redundancy"]["structure"]["bias_heads"] == [0]
    assert all(w[f"encoder.layers.{i}.self_attn.grep_a"].shape == (1, 1, 1, 1) for i in range(4))
    reference = St.make_upstream(ckpt)
    with torch.no_grad():
        for layer in reference.model.encoder.layers:
            layer.self_attn.out_proj.weight[:, HEAD:] = 0
    wavs = random_wavs((16000, 9999))
    _assert_same(_hidden(upstream, wavs), _hidden(reference, wavs))


def test_output_norm_importance_finds_a_silent_head(tiny_ckpts, tmp_path):
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    ckpt["model_weight"] = dict(ckpt["model_weight"])
    w = ckpt["model_weight"]["encoder.layers.2.self_attn.out_proj.weight"].clone()
    w[:, HEAD:] = 0  # head 1 of layer 2 contributes nothing
    ckpt["model_weight"]["encoder.layers.2.self_attn.out_proj.weight"] = w
    from s3prl_redundancy.audio import AudioDataset

    write_labelled_audio(tmp_path, classes=2, per_class=2, seconds=(0.3, 0.5))
    scores = output_norm_importance(St.make_upstream(ckpt), "hubert", AudioDataset.from_data(tmp_path), batch_size=2)
    assert scores[2][1] == 0.0 and all(v > 0 for p, s in scores.items() for h, v in s.items() if (p, h) != (2, 1))
    choice = select_heads(scores, drop=1)
    assert choice["removed"][0][:2] == (2, 1) and choice["keep"][2] == [0]


def test_select_heads_respects_the_minimum_per_layer():
    importance = {0: {0: 1.0, 1: 2.0, 2: 3.0}, 1: {0: 5.0, 1: 5.0, 2: 5.0}}
    choice = select_heads(importance, drop=4, min_per_layer=1)
    assert [len(v) for v in choice["keep"].values()] == [1, 1]
    with pytest.raises(UserInputError, match="at most 4 can go"):
        select_heads(importance, drop=5)
    with pytest.raises(UserInputError, match="exactly one of `heads_drop` N or `heads_ratio` R"):
        select_heads(importance)
    assert len(select_heads(importance, ratio=0.34)["removed"]) == 2


def test_weight_norm_importance_is_the_l1_norm_of_the_head_rows(tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["wav2vec2"])
    model = St.convert_attention(St.load_model(ckpt), "wav2vec2")
    scores = weight_norm_importance(model)
    w = ckpt["model_weight"]
    expected = sum(w[f"encoder.layers.3.self_attn.{p}_proj.{x}"][HEAD:].abs().sum().item() for p in "qkv" for x in ("weight", "bias"))
    assert scores[3][1] == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------------------
# Low rank
# --------------------------------------------------------------------------------------
def test_full_rank_factorisation_equals_the_dense_model(tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["wavlm"])
    model = St.convert_attention(St.load_model(ckpt), "wavlm")
    report = low_rank_model(model, rank=10_000, only_if_smaller=False)
    assert all(v["rank"] == v["full_rank"] for v in report.values())
    _, upstream = _compressed(ckpt, model)
    assert isinstance(upstream.model.encoder.layers[0].fc1, St.LowRankLinear)
    wavs = random_wavs((16000, 11111))
    _assert_same(_hidden(upstream, wavs), _hidden(St.make_upstream(ckpt), wavs), atol=1e-5)


def test_low_rank_parameters_and_macs_fall_as_computed_by_hand(tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    t = _internal_frames(ckpt)
    model = St.convert_attention(St.load_model(ckpt), "hubert")
    low_rank_model(model, rank=4)
    out, upstream = _compressed(ckpt, model)
    r = 4
    per_layer = 4 * (D * D - r * (D + D)) + 2 * (D * FFN - r * (D + FFN))
    assert per_layer == 6400
    before, after = parameter_counts(ckpt["model_weight"]), parameter_counts(out["model_weight"])
    assert before["inference"] - after["inference"] == 4 * per_layer
    assert count_macs(St.make_upstream(ckpt), 1.0) - count_macs(upstream, 1.0) == 4 * per_layer * t


def test_rank_for_energy_and_the_truncation_error():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    s = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    w = u[:, :5] @ torch.diag(s) @ v.T
    assert rank_for_energy(s, 0.9) == 2  # (9 + 4) / 14.26 = 0.912
    assert rank_for_energy(s, 0.5) == 1 and rank_for_energy(s, 1.0) == 5
    linear = torch.nn.Linear(5, 6).double()
    linear.weight.data = w.clone()
    low, info = factorise(linear, energy=0.9)
    assert info["rank"] == 2 and low.down.weight.shape == (2, 5) and low.up.weight.shape == (6, 2)
    assert torch.linalg.matrix_norm(low.effective_weight() - w, ord=2).item() == pytest.approx(1.0, rel=1e-9)
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(low(x), x @ low.effective_weight().T + linear.bias)


def test_low_rank_refuses_a_rank_that_saves_nothing(tiny_ckpts):
    model = St.convert_attention(St.load_model(load_checkpoint(tiny_ckpts["hubert"])), "hubert")
    with pytest.raises(UserInputError, match="changed no matrix"):
        low_rank_model(model, rank=22)  # 22 * (32 + 32) >= 32 * 32 and 22 * (32 + 64) >= 32 * 64: nothing smaller
    assert parse_modules("ffn,q_proj") == ("fc1", "fc2", "self_attn.q_proj")
    with pytest.raises(UserInputError, match="unknown module 'conv'"):
        parse_modules("conv")


# --------------------------------------------------------------------------------------
# Magnitude
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["module", "global"])
def test_magnitude_sparsity_is_as_requested_and_removes_the_smallest(scope, tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["wav2vec2"])
    model = St.load_model(ckpt)
    before = {n: m.weight.detach().clone() for n, m in model.encoder.layers.named_modules() if isinstance(m, torch.nn.Linear)}
    report = magnitude_prune(model, 0.3, scope)
    after = {n: m.weight.detach() for n, m in model.encoder.layers.named_modules() if isinstance(m, torch.nn.Linear)}
    total = sum(w.numel() for w in before.values())
    if scope == "module":
        for n, w in before.items():
            zeroed = after[n] == 0
            assert int(zeroed.sum()) == int(0.3 * w.numel())
            assert w[zeroed].abs().max() <= w[~zeroed].abs().min()
    else:
        zeroed = torch.cat([(after[n] == 0).flatten() for n in before])
        values = torch.cat([w.abs().flatten() for w in before.values()])
        assert int(zeroed.sum()) == int(0.3 * total) and values[zeroed].max() <= values[~zeroed].min()
    assert report["zeros"] == int(0.3 * total) if scope == "global" else True
    assert report["note"] == NOTE
    torch.testing.assert_close(report["sparsity_achieved"], 0.3, atol=1e-2, rtol=0)


def test_cli_techniques_write_a_compressed_model_the_hub_entry_loads(tiny_ckpts, tmp_path, capsys, monkeypatch):
    from s3prl_redundancy import cli

    out = tmp_path / "out"
    assert main(["prune", "--upstream", "hubert_local", "--ckpt", str(tiny_ckpts["hubert"]), "--technique", "heads,lowrank",
                 "--heads-drop", "2", "--head-importance", "weight-norm", "--rank", "4", "--lowrank-modules", "ffn",
                 "--out", str(out), "--no-latency", "--cost-seconds", "1"]) == 0
    magnitude = tmp_path / "mag"
    assert main(["prune", "--upstream", "wavlm_local", "--ckpt", str(tiny_ckpts["wavlm"]), "--technique", "magnitude",
                 "--sparsity", "0.5", "--out", str(magnitude), "--no-latency", "--cost-seconds", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["heads"]["removed"]) == 2 and "compressed_entry" in manifest["load_with"]
    assert manifest["cost"]["ratios"]["parameters"] < 1 and manifest["cost"]["ratios"]["macs"] < 1
    assert {p["lowrank"].get("fc1") for p in manifest["structure"]["positions"]} == {4}
    import s3prl.hub as hub

    upstream = hub.compressed_hubert(ckpt=str(out / "pruned.pt")).eval()
    assert len(_hidden(upstream, random_wavs())) == 5
    mag = json.loads((magnitude / "manifest.json").read_text())
    assert mag["magnitude"]["note"] == NOTE and "structure" not in mag
    assert mag["cost"]["after"]["parameters"]["inference"] == mag["cost"]["before"]["parameters"]["inference"]
    assert mag["cost"]["ratios"]["nonzero_parameters"] < 0.8
    dense_entry = hub.wavlm_local(ckpt=str(magnitude / "pruned.pt")).eval()  # unchanged shapes: s3prl's entry loads it
    assert len(_hidden(dense_entry, random_wavs())) == 5


def test_compressed_entry_needs_a_checkpoint_and_no_model_config():
    import s3prl.hub as hub

    with pytest.raises(UserInputError, match="needs -k CHECKPOINT"):
        hub.compressed_wavlm()
    with pytest.raises(UserInputError, match="takes no -g"):
        hub.compressed_wavlm(ckpt="x.pt", model_config="keep.yaml")


def test_pruned_entry_refuses_reshaped_checkpoints_with_the_right_entry(tiny_ckpts, tmp_path, capsys):
    out = tmp_path / "heads"
    assert main(["prune", "--upstream", "hubert_local", "--ckpt", str(tiny_ckpts["hubert"]), "--technique", "heads",
                 "--heads-drop", "1", "--head-importance", "weight-norm", "--out", str(out), "--no-latency"]) == 0
    import s3prl.hub as hub

    with pytest.raises(UserInputError, match="load it with -u compressed_hubert instead of pruned_hubert"):
        hub.pruned_hubert(ckpt=str(out / "pruned.pt"))
