"""Streaming similarity metrics against independent Gram-matrix / brute-force computations."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s3prl_redundancy.testing import oracles as ref
from s3prl_redundancy.plugins import build_metrics
from s3prl_redundancy.similarity.metrics import (
    BUILTIN_METRICS,
    BlockInfluence,
    CosineSimilarity,
    DebiasedLinearCKA,
    LinearCKA,
    MutualKNN,
    block_influence_from_cosine,
    hash_keys,
)

F64 = torch.float64
ALL = list(BUILTIN_METRICS)


def make_layers(n=240, dims=(12, 12, 12, 12, 12), seed=0, offset=3.0, dtype=F64):
    """Correlated layers of the same frames: a shared latent plus growing private noise.

    float64 by default: then every product is float64 too, and the streaming / merge / resume algebra is
    checked to float64 round-off.  The float32 path (float32 products) is checked in its own tests.
    """
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 6, generator=g)
    layers = []
    for i, d in enumerate(dims):
        mix = torch.randn(6, d, generator=g)
        noise = torch.randn(n, d, generator=g) * (0.2 + 0.6 * i)
        layers.append(latent @ mix + noise + offset * torch.randn(d, generator=g))
    return [h.to(dtype) for h in layers]


def options(name):
    return {"mknn": {"k": 5, "max_frames": 150, "dtype": F64}}.get(name, {})


def stream(metric, layers, sizes, keys=None):
    start = 0
    for size in sizes:
        sl = slice(start, start + size)
        metric.update([h[sl] for h in layers], None if keys is None else keys[sl])
        start += size
    assert start == layers[0].shape[0]
    return metric


UNEVEN = [1, 37, 0, 64, 5, 100, 33]  # sums to 240


# ---------------------------------------------------------------- exactness vs Gram form
def test_cka_equals_gram_formula_on_concatenated_frames():
    layers = make_layers(dims=(8, 16, 12, 16), dtype=torch.float32)  # different widths are allowed for CKA
    out = stream(LinearCKA(buffer_frames=64), layers, UNEVEN).compute()  # several buffer flushes
    expected = ref.cka_matrix(layers)
    assert out.dtype == F64 and out.shape == (4, 4)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)  # float32 frames: float32 products
    exact = stream(LinearCKA(products="float64"), layers, UNEVEN).compute()
    assert (exact - expected).abs().max() < 1e-10  # float64 products: float64 round-off only
    assert (stream(LinearCKA(), [h.double() for h in layers], UNEVEN).compute() - expected).abs().max() < 1e-10
    assert out[0, 3] < 0.9  # the layers are not trivially identical


def test_debiased_cka_equals_gram_unbiased_estimator():
    layers = make_layers(dims=(8, 16, 12, 16), n=180)
    out = stream(DebiasedLinearCKA(), layers, [50, 3, 0, 77, 50]).compute()
    song = ref.cka_matrix(layers, debiased=True)
    centring = torch.tensor([[ref.debiased_cka(a, b, method="centering") for b in layers] for a in layers], dtype=F64)
    torch.testing.assert_close(out, song, atol=1e-6, rtol=0)
    torch.testing.assert_close(song, centring, atol=1e-10, rtol=0)
    biased = ref.cka_matrix(layers)
    assert (out - biased).abs().max() > 1e-3  # the estimators genuinely differ


def test_debiased_metric_also_gives_biased_cka():
    layers = make_layers()
    deb = stream(DebiasedLinearCKA(), layers, UNEVEN)
    torch.testing.assert_close(deb.compute_biased(), stream(LinearCKA(), layers, UNEVEN).compute(), atol=1e-12, rtol=0)


def test_gram_oracles_unbiased_forms_agree_and_zero_the_diagonal_correctly():
    x, y = make_layers(n=40, dims=(5, 7))[:2]
    k, l = ref.gram_linear(x), ref.gram_linear(y)
    n = k.shape[0]
    song = ref.hsic_unbiased(k, l)
    nguyen = (ref.unbiased_center_gram(k) * ref.unbiased_center_gram(l)).sum() / (n * (n - 3))
    torch.testing.assert_close(song, nguyen, atol=1e-9 * abs(float(song)), rtol=1e-10)
    kt = ref.zero_diagonal(k)
    assert torch.all(kt.diagonal() == 0)
    off = ~torch.eye(n, dtype=torch.bool)
    assert torch.equal(kt[off], k[off])
    buggy = k - torch.diagonal(k)  # the broadcasting bug changes off-diagonal entries
    assert not torch.equal(buggy[off], k[off])


def test_cosine_and_block_influence_equal_direct_computation():
    layers = make_layers()
    cos = stream(CosineSimilarity(), layers, UNEVEN).compute()
    direct = torch.tensor(
        [[F.cosine_similarity(a.double(), b.double(), dim=1).mean().item() for b in layers] for a in layers], dtype=F64
    )
    torch.testing.assert_close(cos, direct, atol=1e-12, rtol=0)
    bi = stream(BlockInfluence(), layers, UNEVEN).compute()
    expected = torch.tensor(
        [1 - F.cosine_similarity(a.double(), b.double(), dim=1).mean().item() for a, b in zip(layers, layers[1:])],
        dtype=F64,
    )
    assert bi.shape == (len(layers) - 1,)
    torch.testing.assert_close(bi, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(block_influence_from_cosine(cos), expected, atol=1e-12, rtol=0)
    assert BlockInfluence.kind == "vector" and not BlockInfluence.higher_is_more_similar


def test_mknn_equals_brute_force_on_the_same_sample():
    layers = make_layers(n=400)
    metric = stream(MutualKNN(k=7, max_frames=160, chunk_size=50, dtype=F64, seed=3), layers, [150, 250])
    keys, hashes, feats = metric.sample()
    assert keys.shape == (160,)
    expected = ref.mutual_knn_matrix(feats, k=7)
    torch.testing.assert_close(metric.compute(), expected, atol=1e-12, rtol=0)
    # the unit-norm sampled features are those of the sampled frames
    torch.testing.assert_close(feats[2], F.normalize(layers[2][keys].double(), dim=1), atol=1e-12, rtol=0)
    assert 0.05 < expected[0, 1] < 1.0


def splitmix64_numpy(keys, seed):
    """Independent uint64 implementation of the documented hash."""
    with np.errstate(over="ignore"):

        def mix(z):
            z = z + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))

        seed_mix = mix(np.array([seed], dtype=np.uint64))[0]
        h = mix(keys.astype(np.uint64) ^ seed_mix)
        return (h & np.uint64((1 << 63) - 1)).astype(np.int64)


def test_hash_keys_matches_uint64_reference_and_sample_is_bottom_k():
    keys = torch.tensor([0, 1, 2, 3, 2**40 + 7, 2**62, -1, -(2**63)], dtype=torch.int64)
    for seed in (0, 1, 12345):
        got = hash_keys(keys, seed).numpy()
        assert (got >= 0).all()
        np.testing.assert_array_equal(got, splitmix64_numpy(keys.numpy(), seed))
    assert not torch.equal(hash_keys(keys, 0), hash_keys(keys, 1))
    layers = make_layers(n=300)
    metric = stream(MutualKNN(k=3, max_frames=50, seed=5), layers, [120, 180])
    all_h = splitmix64_numpy(np.arange(300), 5)
    expected = np.sort(np.argsort(all_h, kind="stable")[:50])
    np.testing.assert_array_equal(np.sort(metric.sample()[0].numpy()), expected)


def test_mknn_sample_independent_of_batching_and_order():
    layers = make_layers(n=300)
    keys = torch.arange(1000, 1300)
    one = stream(MutualKNN(k=5, max_frames=100), layers, [300], keys)
    many = stream(MutualKNN(k=5, max_frames=100), layers, [7, 93, 1, 99, 50, 50], keys)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    shuffled = stream(MutualKNN(k=5, max_frames=100), [h[perm] for h in layers], [200, 100], keys[perm])
    for other in (many, shuffled):
        assert torch.equal(one.sample()[0], other.sample()[0])
        for a, b in zip(one.sample()[2], other.sample()[2]):
            assert torch.equal(a, b)
        assert torch.equal(one.compute(), other.compute())
    different_seed = stream(MutualKNN(k=5, max_frames=100, seed=1), layers, [300], keys)
    assert not torch.equal(one.sample()[0], different_seed.sample()[0])


def test_mknn_chunking_does_not_change_result():
    layers = make_layers(n=200)
    small = stream(MutualKNN(k=6, max_frames=200, chunk_size=7, dtype=F64), layers, [200]).compute()
    large = stream(MutualKNN(k=6, max_frames=200, chunk_size=4096, dtype=F64), layers, [200]).compute()
    assert torch.equal(small, large)


# ---------------------------------------------------------------- invariances
@pytest.mark.parametrize("cls", [LinearCKA, DebiasedLinearCKA])
def test_cka_invariances(cls):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(300, 10, generator=g) @ torch.diag(torch.linspace(0.3, 3.0, 10))
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=F64))
    generic = torch.randn(10, 10, generator=g) @ torch.diag(torch.logspace(-1, 1, 10))
    variants = [x, x.double() @ q, 3.7 * x + 2.0, x.clone(), x @ generic]
    out = stream(cls(), variants, [100, 150, 50]).compute()
    assert torch.all(out[0, :4] > 1 - 1e-10), out[0]  # orthogonal, scale + shift, identical
    assert out[0, 4] < 0.97  # not invariant to a generic invertible linear map
    torch.testing.assert_close(out.diagonal(), torch.ones(5, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(out, out.T, atol=0, rtol=0)


@pytest.mark.parametrize("cls", [LinearCKA, DebiasedLinearCKA])
def test_cka_well_conditioned_for_large_offsets(cls):
    base = make_layers(n=200, offset=0.0, dims=(6, 9, 6))
    shifted = [h.double() + 1e5 * (1 + torch.arange(h.shape[1], dtype=F64)) for h in base]
    expected = ref.cka_matrix(base, debiased=cls is DebiasedLinearCKA)
    out = stream(cls(), shifted, [60, 70, 70]).compute()
    torch.testing.assert_close(out, expected, atol=1e-8, rtol=0)


# ---------------------------------------------------------------- streaming, merge, state
@pytest.mark.parametrize("name", ALL)
def test_streaming_uneven_batches_equals_one_batch(name):
    layers = make_layers()
    one = stream(build_metrics([name], **options(name))[name], layers, [240]).compute()
    many = stream(build_metrics([name], **options(name))[name], layers, UNEVEN).compute()
    torch.testing.assert_close(many, one, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_merge_of_two_halves_equals_one_stream(name):
    layers = make_layers()
    # second half from a shifted distribution: the halves get different reference points
    second = [h[130:] * 1.5 + 4.0 for h in layers]
    full = [torch.cat([h[:130], s]) for h, s in zip(layers, second)]
    keys = torch.arange(240)
    expected = stream(BUILTIN_METRICS[name](**options(name)), full, [40, 90, 110], keys).compute()
    a = stream(BUILTIN_METRICS[name](**options(name)), [h[:130] for h in full], [40, 90], keys[:130])
    b = stream(BUILTIN_METRICS[name](**options(name)), [h[130:] for h in full], [110], keys[130:])
    assert a.merge(b) is a
    torch.testing.assert_close(a.compute(), expected, atol=1e-11, rtol=0)
    empty = BUILTIN_METRICS[name](**options(name))
    torch.testing.assert_close(empty.merge(a).compute(), expected, atol=1e-11, rtol=0)
    torch.testing.assert_close(a.merge(BUILTIN_METRICS[name](**options(name))).compute(), expected, atol=1e-11, rtol=0)


def test_merge_rejects_mismatches():
    with pytest.raises(TypeError, match="cannot merge"):
        LinearCKA().merge(CosineSimilarity())
    with pytest.raises(ValueError, match="different options"):
        MutualKNN(k=3).merge(MutualKNN(k=4))
    a, b = LinearCKA(), LinearCKA()
    a.update(make_layers(dims=(4, 4)))
    b.update(make_layers(dims=(4, 5)))
    with pytest.raises(ValueError, match="layers"):
        a.merge(b)


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_resumes_the_stream(name):
    layers = make_layers()
    expected = stream(BUILTIN_METRICS[name](**options(name)), layers, UNEVEN).compute()
    first = stream(BUILTIN_METRICS[name](**options(name)), [h[:102] for h in layers], UNEVEN[:4])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = BUILTIN_METRICS[name](**options(name))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.frames_seen == 102
    stream(resumed, [h[102:] for h in layers], UNEVEN[4:])
    torch.testing.assert_close(resumed.compute(), expected, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="state of metric"):
        other = "cosine" if name != "cosine" else "cka"
        BUILTIN_METRICS[other]().load_state_dict(first.state_dict())


def test_state_dict_rejects_other_options_and_empty_round_trip():
    state = MutualKNN(k=3).state_dict()
    with pytest.raises(ValueError, match="options"):
        MutualKNN(k=4).load_state_dict(state)
    fresh = LinearCKA()
    fresh.load_state_dict(LinearCKA().state_dict())
    with pytest.raises(RuntimeError, match="no frames seen"):
        fresh.compute()


def test_reset_forgets_everything():
    layers = make_layers()
    metric = stream(LinearCKA(), layers, [240])
    before = metric.compute()
    metric.reset()
    with pytest.raises(RuntimeError, match="no frames seen"):
        metric.compute()
    metric.update([h * 2 for h in layers[:3]])  # a different layer count is fine after reset
    assert metric.compute().shape == (3, 3)
    assert before.shape == (5, 5)


# ---------------------------------------------------------------- sanity values
def test_independent_gaussian_features_biased_vs_debiased():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1024, 768, generator=g), torch.randn(1024, 768, generator=g)
    cka = stream(LinearCKA(), [x, y], [512, 512]).compute()[0, 1].item()
    deb = stream(DebiasedLinearCKA(), [x, y], [300, 724]).compute()[0, 1].item()
    assert abs(cka - 768 / (1024 + 768)) < 0.01 and abs(cka - 0.43) < 0.01  # biased: ~d/(n+d)
    assert abs(deb) < 0.02


def test_mknn_of_independent_inputs_is_chance_level():
    g = torch.Generator().manual_seed(0)
    n, k = 1000, 10
    layers = [torch.randn(n, 32, generator=g) for _ in range(3)]
    out = stream(MutualKNN(k=k, max_frames=n), layers, [500, 500]).compute()
    chance = k / (n - 1)
    off = out[~torch.eye(3, dtype=torch.bool)]
    assert torch.all((off - chance).abs() < 0.005), off
    assert torch.all(out.diagonal() == 1)


# ---------------------------------------------------------------- errors and validation
def test_debiased_needs_four_frames():
    metric = DebiasedLinearCKA()
    metric.update([torch.randn(3, 4), torch.randn(3, 4)])
    with pytest.raises(ValueError, match="at least 4 frames.*n=3"):
        metric.compute()
    metric.update([torch.randn(1, 4), torch.randn(1, 4)])
    assert torch.isfinite(metric.compute()).all()
    single = LinearCKA()
    single.update([torch.randn(1, 4)])
    with pytest.raises(ValueError, match="at least 2 frames"):
        single.compute()
    knn = MutualKNN(k=5)
    knn.update([torch.randn(5, 3)])
    with pytest.raises(ValueError, match="k\\+1=6"):
        knn.compute()


def test_unknown_metric_lists_known_ones_and_options_are_routed():
    with pytest.raises(ValueError) as info:
        build_metrics(["cka", "svcca"])
    message = str(info.value)
    assert "svcca" in message and all(name in message for name in ALL)
    metrics = build_metrics("cka, mknn,cka", k=3, max_frames=64)
    assert list(metrics) == ["cka", "mknn"]
    assert metrics["mknn"].k == 3 and metrics["mknn"].max_frames == 64
    with pytest.raises(ValueError, match=r"\['k'\] are not accepted"):
        build_metrics(["cka"], k=3)
    with pytest.raises(ValueError, match="known metrics"):
        build_metrics([])
    for name, cls in BUILTIN_METRICS.items():
        assert cls.name == name and cls.kind in ("matrix", "vector")


def test_input_validation_messages():
    metric = LinearCKA()
    with pytest.raises(ValueError, match="same number of frames"):
        metric.update([torch.randn(5, 3), torch.randn(4, 3)])
    with pytest.raises(ValueError, match="non-finite"):
        metric.update([torch.randn(5, 3), torch.full((5, 3), math.nan)])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        metric.update([torch.randn(5)])
    with pytest.raises(ValueError, match="same width"):
        CosineSimilarity().update([torch.randn(5, 3), torch.randn(5, 4)])
    with pytest.raises(ValueError, match="at least 2 layers"):
        BlockInfluence().update([torch.randn(5, 3)])
    with pytest.raises(ValueError, match="keys"):
        MutualKNN().update([torch.randn(5, 3)], keys=torch.arange(4))
    metric.update([torch.randn(5, 3), torch.randn(5, 3)])
    with pytest.raises(ValueError, match="widths changed"):
        metric.update([torch.randn(5, 3), torch.randn(5, 2)])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_batch_is_rejected_without_touching_the_state(name, bad):
    layers = make_layers(n=60)
    metric = stream(BUILTIN_METRICS[name](**options(name)), layers, [60])
    before = metric.compute()
    poisoned = [h[:10].clone() for h in layers]
    poisoned[3][4, 2] = bad
    with pytest.raises(ValueError, match=r"non-finite.*layer\(s\) \[3\]"):
        metric.update(poisoned)
    torch.testing.assert_close(metric.compute(), before, atol=0, rtol=0)


def test_low_precision_inputs_accumulate_in_float64_and_stacked_input():
    layers = make_layers(n=120)
    bf16 = [h.to(torch.bfloat16) for h in layers]
    out = stream(DebiasedLinearCKA(), bf16, [60, 60]).compute()
    assert out.dtype == F64
    # bfloat16 frames: float32 products (exact for 8-bit mantissas), float32 sums over 60 frames
    torch.testing.assert_close(out, ref.cka_matrix([h.double() for h in bf16], debiased=True), atol=1e-6, rtol=0)
    stacked = CosineSimilarity()
    stacked.update(torch.stack(layers))  # an (L, N, D) tensor is accepted too
    torch.testing.assert_close(stacked.compute(), ref.cosine_matrix(layers), atol=1e-12, rtol=0)


def test_zero_variance_layer_gives_nan_with_warning():
    layers = make_layers(n=50, dims=(4, 4))
    layers.append(torch.ones(50, 4))
    metric = stream(LinearCKA(), layers, [25, 25])
    with pytest.warns(RuntimeWarning, match="layer\\(s\\) \\[2\\]"):
        out = metric.compute()
    assert torch.isnan(out[2]).all() and torch.isfinite(out[:2, :2]).all()
