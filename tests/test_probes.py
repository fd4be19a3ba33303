"""The linear probe: chance on random labels, near-perfect on a separable set; group-wise splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.probes import group_split, linear_probe, probe_features


class ToyUpstream(torch.nn.Module):
    """Two "layers": the first carries the mean amplitude (label information), the second only noise."""

    def forward(self, wavs):
        g = torch.Generator().manual_seed(len(wavs))
        frames = max(len(w) for w in wavs) // 320
        base = torch.stack([torch.nn.functional.pad(w, (0, frames * 320 - len(w)))[: frames * 320].view(frames, 320).mean(1) for w in wavs])
        h0 = base.unsqueeze(-1).repeat(1, 1, 4)
        h1 = torch.randn(len(wavs), frames, 4, generator=g)
        return {"hidden_states": [h0, h1]}


def _items(n_groups=10, per_group=12, seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for g in range(n_groups):
        for k in range(per_group):
            label = k % 3
            wav = (rng.standard_normal(3200) * 0.05 + label).astype(np.float32)
            items.append((wav, label, f"voice{g}"))
    return items


def test_separable_set_is_near_perfect_and_noise_layer_is_chance():
    res = linear_probe(ToyUpstream(), _items(), seed=0)
    assert res["accuracy"][0] > 0.95 and res["best_layer"] == 0
    assert res["accuracy"][1] < 0.6
    assert res["chance"] == pytest.approx(1 / 3) and res["n_test"] + res["n_train"] == 120 and res["test_groups"] == 3


def test_random_labels_give_chance():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((600, 16))
    labels = rng.integers(0, 4, 600)
    groups = np.repeat(np.arange(20), 30)
    res = probe_features([X, X * 3 + 1], labels, groups)
    assert all(abs(a - 0.25) < 0.1 for a in res["accuracy"])


def test_group_split_keeps_groups_apart():
    groups = [g for g in "abcdefghij" for _ in range(5)]
    train, test = group_split(groups, 0.3, seed=4)
    assert not {g for g, t in zip(groups, test) if t} & {g for g, t in zip(groups, train) if t}
    assert test.sum() == 15
    assert (group_split(groups, 0.3, seed=4)[1] == test).all()
    with pytest.raises(UserInputError):
        group_split(["a"] * 5)
    with pytest.raises(UserInputError):
        linear_probe(ToyUpstream(), [])


def test_statistics_pooling_keeps_the_spread_over_time():
    """Labels carried only by the variance over time: invisible to mean pooling, found by mean+std."""
    from s3prl_redundancy.probes import pooled_features

    class Identity(torch.nn.Module):
        def forward(self, wavs):
            frames = max(len(w) for w in wavs) // 320
            x = torch.stack([torch.nn.functional.pad(w, (0, frames * 320 - len(w)))[: frames * 320].view(frames, 320)[:, :4] for w in wavs])
            return {"hidden_states": [x]}

    rng = np.random.default_rng(3)
    items = []
    for g in range(10):
        for k in range(12):
            label = k % 2
            wav = (rng.standard_normal(6400) * (0.1 if label == 0 else 1.0)).astype(np.float32)
            items.append((wav, label, f"voice{g}"))
    mean = linear_probe(Identity(), items, seed=0)
    stats = linear_probe(Identity(), items, seed=0, pooling="mean+std")
    assert mean["accuracy"][0] < 0.75 and stats["accuracy"][0] > 0.95
    feats = pooled_features(Identity(), [w for w, _, _ in items[:3]], pooling="mean+std")
    assert feats[0].shape == (3, 8)
    assert np.allclose(feats[0][:, :4], pooled_features(Identity(), [w for w, _, _ in items[:3]])[0])
    with pytest.raises(UserInputError, match="pooling"):
        linear_probe(Identity(), items, pooling="max")
