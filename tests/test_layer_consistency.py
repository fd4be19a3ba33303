"""Layer consistency (arXiv 2105.00812): shared layers, uniform depth sampling, LC fine-tuning (learns at every
depth, resumes exactly, two gloo ranks equal one process) and the shallow-layer-inference upstream."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from s3prl_redundancy import layer_consistency as lc
from s3prl_redundancy.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(encoder_layers=4, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
             conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2", conv_pos=16, conv_pos_groups=4,
             layer_norm_first=True, label_rate=50.0, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
             encoder_layerdrop=0.0, dropout_input=0.0, dropout_features=0.0, feature_grad_mult=1.0, mask_prob=0.8,
             mask_length=5)


def _small_model(share=None, seed=0):
    from s3prl_redundancy.pretrain.model import build_model

    return build_model(seed, SMALL, n_clusters=8, share_layers=share)


# ------------------------------------------------------------------------------------------- sharing
@pytest.mark.parametrize("groups", [1, 2])
def test_a_shared_model_holds_one_set_of_weights_per_group(groups):
    shared, _ = _small_model(share=groups)
    plain, _ = _small_model()
    keys = [k for k in shared.state_dict() if k.startswith("encoder.layers.")]
    blocks = {k.split(".")[3] for k in keys}
    assert blocks == {str(g) for g in range(groups)}
    assert all(k.startswith("encoder.layers.blocks.") for k in keys)
    per_layer = sum(p.numel() for p in plain.encoder.layers[0].parameters())
    assert lc.n_parameters(plain) - lc.n_parameters(shared) == (4 - groups) * per_layer
    assert len(shared.encoder.layers) == 4
    # consecutive groups: layer i uses block i * G // L
    assert [shared.encoder.layers[i] is shared.encoder.layers.blocks[i * groups // 4] for i in range(4)] == [True] * 4


def test_expanded_state_is_the_same_network_and_compacts_back():
    from s3prl_redundancy.pretrain.model import build_model

    shared, _ = _small_model(share=2, seed=1)
    state = shared.state_dict()
    expanded = lc.expand_shared_state(state, 4, 2)
    plain, _ = build_model(5, SMALL, n_clusters=8)
    plain.load_state_dict(expanded)  # strict: every key of the unshared architecture, nothing else
    torch.testing.assert_close(expanded["encoder.layers.1.fc1.weight"], state["encoder.layers.blocks.0.fc1.weight"])
    torch.testing.assert_close(expanded["encoder.layers.2.fc1.weight"], state["encoder.layers.blocks.1.fc1.weight"])
    back = lc.compact_state(expanded, 4, 2)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    wav = torch.randn(2, 8000)
    shared.eval(), plain.eval()
    with torch.no_grad():
        for depth in (1, 3, None):
            a = lc.encode_to_depth(shared, lc.transformer_input(shared, wav)[0], depth)
            b = lc.encode_to_depth(plain, lc.transformer_input(plain, wav)[0], depth)
            torch.testing.assert_close(a, b)


def test_export_is_an_s3prl_hubert_local_checkpoint_with_the_compact_form(tmp_path):
    from s3prl.upstream.hubert.convert import load_converted_model

    from s3prl_redundancy.pretrain.model import hubert_local_checkpoint

    shared, cfg = _small_model(share=1, seed=2)
    ckpt = hubert_local_checkpoint(shared, cfg, 8, half=False,
                                   layer_consistency={"share_layers": 1, "depth_range": [1, 4]})
    assert ckpt[lc.META_KEY]["share_layers"] == 1
    assert {k.split(".")[3] for k in ckpt[lc.COMPACT_KEY]} == {"0"}
    path = tmp_path / "lc.pt"
    torch.save(ckpt, path)
    assert torch.load(path, weights_only=True)[lc.META_KEY]["depth_range"] == [1, 4]
    model, _ = load_converted_model(str(path))  # s3prl's own hubert_local loader
    wav = torch.randn(1, 8000)
    shared.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.extract_features(wav)[0], shared.extract_features(wav)[0])


def test_options_are_checked():
    assert lc.parse_share_layers("all", 6) == 1 and lc.parse_share_layers("3", 6) == 3
    assert lc.parse_share_layers(None, 6) is None and lc.parse_share_layers("6", 6) is None
    assert lc.parse_depth_range("2,5", 6) == (2, 5)
    for bad in ("0", "7", "two"):
        with pytest.raises(UserInputError, match="share_layers|between|groups"):
            lc.parse_share_layers(bad, 6)
    for bad in ("0,3", "4,2", "1,7", "3"):
        with pytest.raises(UserInputError) as e:
            lc.parse_depth_range(bad, 6)
        assert e.value.argument == "depth_range"


# ------------------------------------------------------------------------------------------- depth sampling
@pytest.mark.parametrize("depth_range", [(1, 6), (2, 4)])
def test_sampled_depths_cover_their_range_uniformly(depth_range):
    from scipy.stats import chisquare

    lo, hi = depth_range
    draws = np.array([lc.sample_depth(0, step, depth_range) for step in range(6000)])
    assert draws.min() == lo and draws.max() == hi
    counts = np.bincount(draws - lo, minlength=hi - lo + 1)
    assert chisquare(counts).pvalue > 0.001, counts
    assert [lc.sample_depth(0, s, depth_range) for s in range(50)] == list(draws[:50])  # a function of (seed, step)
    assert [lc.sample_depth(1, s, depth_range) for s in range(50)] != list(draws[:50])


def test_exit_at_depth_k_is_the_first_k_layers_and_the_final_norm():
    model, _ = _small_model(seed=3)
    model.eval()
    x = torch.randn(2, 30, 32)
    with torch.no_grad():
        h = x + model.encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        h = h.transpose(0, 1)
        for layer in list(model.encoder.layers)[:2]:
            h, _ = layer(h, self_attn_padding_mask=None, need_weights=False)
        ref = model.encoder.layer_norm(h.transpose(0, 1))
        torch.testing.assert_close(lc.encode_to_depth(model, x, 2), ref)
        torch.testing.assert_close(lc.encode_to_depth(model, x, None), model.encoder(x)[0])
