"""The plain-function forms of the similarity formulas (``similarity.functional``) against the Gram-matrix
oracles, and every other caller of linear CKA going through them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s3prl_redundancy.similarity import functional as F
from s3prl_redundancy.testing import oracles as ref


def pair(n=300, dx=10, dy=7, offset=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 4, generator=g, dtype=torch.float64)
    x = latent @ torch.randn(4, dx, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, dx, generator=g, dtype=torch.float64)
    y = latent @ torch.randn(4, dy, generator=g, dtype=torch.float64) + 0.8 * torch.randn(n, dy, generator=g, dtype=torch.float64)
    return x + offset * torch.randn(dx, generator=g, dtype=torch.float64), y + offset


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_cka_biased_and_debiased_equal_the_gram_oracles(seed):
    x, y = pair(seed=seed)
    assert float(F.linear_cka(x, y)) == pytest.approx(ref.cka(x, y), abs=1e-12)
    assert float(F.linear_cka(x, y, debiased=True)) == pytest.approx(ref.debiased_cka(x, y), abs=1e-12)
    assert float(F.linear_cka(x, x)) == pytest.approx(1.0, abs=1e-14)
    assert float(F.linear_cka(x.numpy(), y.numpy())) == pytest.approx(ref.cka(x, y), abs=1e-12)  # arrays too
    assert F.linear_cka(x, y).dtype == torch.float64 and F.linear_cka(x, y).dim() == 0


def test_cka_from_moments_equals_the_oracle_for_any_shift_and_batching():
    x, y = pair(offset=0.0)
    expected = ref.cka(x, y)
    for shift in (0.0, 5.0):
        xs, ys = x - shift, y + shift
        got = F.linear_cka_from_moments(len(x), xs.sum(0), ys.sum(0), xs.T @ xs, ys.T @ ys, ys.T @ xs)
        assert float(got) == pytest.approx(expected, abs=1e-11)


def test_cosine_and_mutual_knn_equal_direct_computation():
    x, y = pair(dx=8, dy=8)
    direct = torch.nn.functional.cosine_similarity(x, y, dim=1).mean()
    assert float(F.cosine_similarity(x, y)) == pytest.approx(float(direct), abs=1e-13)
    xu, yu = [torch.nn.functional.normalize(t, dim=1) for t in (x, y)]
    for chunk in (7, 1024):
        assert float(F.mutual_knn(x, y, k=5, chunk_size=chunk)) == pytest.approx(ref.mutual_knn(xu, yu, k=5), abs=1e-15)


def test_degenerate_inputs():
    x, _ = pair()
    constant = torch.ones(len(x), 3, dtype=torch.float64)
    assert math.isnan(float(F.linear_cka(x, constant)))
    with pytest.raises(ValueError, match="at least 4 frames"):
        F.linear_cka(x[:3], x[:3], debiased=True)
    with pytest.raises(ValueError, match="at least 2 frames"):
        F.linear_cka(x[:1], x[:1])
    with pytest.raises(ValueError, match="same number of frames"):
        F.linear_cka(x, x[:10])
    with pytest.raises(ValueError, match="k\\+1=6"):
        F.mutual_knn(x[:5], x[:5], k=5)
    with pytest.raises(ValueError, match="non-finite"):
        F.cosine_similarity(x.clone().fill_(float("nan")), x)


def test_bridges_and_pretrain_evaluate_cka_are_the_functional_one():
    from s3prl_redundancy.compression.bridges import linear_cka as bridges_cka
    from s3prl_redundancy.pretrain.evaluate import linear_cka as evaluate_cka

    x, y = pair(dx=6, dy=6)
    assert bridges_cka(x.float(), y.float()) == pytest.approx(ref.cka(x.float(), y.float()), abs=1e-12)
    assert evaluate_cka(x.numpy(), y.numpy()) == pytest.approx(ref.cka(x, y), abs=1e-12)


def test_distill_report_cka_is_well_conditioned_for_a_large_common_offset():
    """Raw sums of X^T X around a large offset cancel in X^T X - s s^T / n; the report shifts them first."""
    from s3prl_redundancy.distill.report import LayerError

    x, y = pair(offset=0.0)
    x, y = x + 1e6, y - 1e6
    error = LayerError()
    for start in range(0, len(x), 70):
        error.update(x[start : start + 70], y[start : start + 70])
    assert error.cka() == pytest.approx(ref.cka(x - 1e6, y + 1e6), abs=1e-9)
    np.testing.assert_allclose(error.sx.numpy() / len(x), (x - x[:70].mean(0)).mean(0).numpy(), atol=1e-6)


def test_registered_metrics_come_from_the_one_plugin_registry():
    from s3prl_redundancy import similarity
    from s3prl_redundancy.hookspecs import hookimpl
    from s3prl_redundancy.plugins import get_plugin_manager
    from s3prl_redundancy.similarity.analysis import metric_registry
    from s3prl_redundancy.plugins import build_metrics
    from s3prl_redundancy.similarity.metrics import CosineSimilarity

    class Twin(CosineSimilarity):
        name = "twin_cosine"

    class Plugin:
        @hookimpl
        def s3prl_redundancy_similarity_metrics(self):
            return {"twin_cosine": Twin}

    assert "twin_cosine" not in similarity.METRIC_NAMES
    pm = get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin, name="test-twin-cosine")
    try:
        assert "twin_cosine" in similarity.METRIC_NAMES and metric_registry()["twin_cosine"] is Twin
        assert isinstance(build_metrics(["cka", "twin_cosine"])["twin_cosine"], Twin)
    finally:
        pm.unregister(plugin)
    with pytest.raises(ValueError, match="unknown similarity metric"):
        build_metrics(["twin_cosine"])
