"""The hidden-state collector and ``analyze``: padding trimmed, upstream output untouched, numbers equal to
independent Gram-matrix computations, plugin hook and plugin metrics, checkpoints, report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from s3prl_redundancy.hookspecs import hookimpl
from s3prl_redundancy.io import MARKER
from s3prl_redundancy.plugins import get_plugin_manager
from s3prl_redundancy.testing import oracles as ref
from s3prl_redundancy.similarity.analysis import MetricSet, SimilarityReport, analyze
from s3prl_redundancy.similarity.blocks import find_blocks
from s3prl_redundancy.similarity.collector import (
    KEY_STRIDE,
    HiddenStateCollector,
    NonFiniteHiddenStatesError,
    frame_counts,
)
from s3prl_redundancy.similarity.metrics import CosineSimilarity, LinearCKA
from s3prl_redundancy.testing.audio import random_wavs

F64 = torch.float64
LENGTHS = (16000, 12345, 8100, 5000, 14321)  # round(len/320): 50, 39, 25, 16, 45 frames
OPTIONS = {"mknn": {"k": 4, "max_frames": 64, "seed": 3}}  # a real sample: 64 of 175 frames


class FramewiseUpstream(nn.Module):
    """A test upstream that returns ``hidden_states`` itself (like s3prl's distiller).

    Each utterance is computed on its own (so its frames cannot depend on the batch): frame ``t`` is
    samples ``[320 t, 320 (t + 1))`` (zero-padded), then 3 residual tanh layers of width 16. Every
    padding position of the batch is NaN, so any padding frame that enters a statistic makes it NaN.
    ``nan_layer``: that hidden state is NaN for utterances whose first sample is exactly 0.5.
    """

    def __init__(self, dim: int = 16, num_layers: int = 3, nan_layer: int = -1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.proj = nn.Parameter(torch.randn(320, dim, generator=g) * 0.2)
        self.layers = nn.ParameterList([nn.Parameter(torch.randn(dim, dim, generator=g) * 0.6) for _ in range(num_layers)])
        self.nan_layer = nan_layer

    def get_downsample_rates(self, key: str) -> int:
        return 320

    def _one(self, wav: torch.Tensor):
        t = math.ceil(len(wav) / 320)
        frames = torch.nn.functional.pad(wav, (0, t * 320 - len(wav))).view(t, 320)
        h = [torch.tanh(frames @ self.proj)]
        for w in self.layers:
            h.append(h[-1] + torch.tanh(h[-1] @ w))
        if self.nan_layer >= 0 and float(wav[0]) == 0.5:
            h[self.nan_layer] = h[self.nan_layer] * float("nan")
        return h

    def forward(self, wavs):
        per = [self._one(w) for w in wavs]
        t_max = max(p[0].shape[0] for p in per)
        hidden = []
        for layer in range(len(per[0])):
            out = torch.full((len(wavs), t_max, per[0][layer].shape[1]), float("nan"))
            for i, p in enumerate(per):
                out[i, : p[layer].shape[0]] = p[layer]
            hidden.append(out)
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1], "extra": "kept"}


def _dataset(lengths=LENGTHS, seed=0):
    return [(f"utt{i}.wav", w) for i, w in enumerate(random_wavs(lengths, seed=seed))]


def _feed(upstream, dataset, batch_size, names=("cosine", "cka", "debiased_cka", "mknn"), indices=None):
    metric_set = MetricSet(names, OPTIONS)
    collector = HiddenStateCollector(upstream, [metric_set], plugin_manager=False)
    stats = collector.run(dataset, batch_size=batch_size, indices=indices, progress=False)
    return metric_set, stats


# float32 hidden states: the metrics' products are float32 (``metrics.product_dtype``), so differently
# grouped or shifted passes agree to float32 round-off (~1e-7), not float64's
F32_PRODUCTS_ATOL = 1e-6


def _assert_same_statistics(a: MetricSet, b: MetricSet, atol=F32_PRODUCTS_ATOL):
    va, vb = a.compute(), b.compute()
    assert set(va) == set(vb)
    for name in va:
        assert torch.isfinite(va[name]).all(), name
        if name == "mknn":
            assert torch.equal(va[name], vb[name]), name
        else:
            torch.testing.assert_close(va[name], vb[name], atol=atol, rtol=0)


# --------------------------------------------------------------------------------------
# collector
# --------------------------------------------------------------------------------------
def test_padding_never_enters_a_statistic_batch_equals_each_utterance_alone():
    up = FramewiseUpstream().eval()
    data = _dataset()
    batched, stats = _feed(up, data, batch_size=len(data))
    single, stats1 = _feed(up, data, batch_size=1)
    expected_frames = sum(round(n / 320) for n in LENGTHS)
    assert stats.num_frames == stats1.num_frames == expected_frames == 175
    assert (stats.num_batches, stats1.num_batches) == (1, 5)
    # the padding is NaN: one padding frame anywhere would make every statistic NaN
    _assert_same_statistics(batched, single)
    # and the sample of mknn (64 of 175 frames) is the same frames, whatever the batching
    kb = batched.instances["mknn"].sample()[0]
    ks = single.instances["mknn"].sample()[0]
    assert torch.equal(kb, ks) and len(kb) == 64


def test_batch_frames_and_keys_are_the_valid_frames_in_order():
    up = FramewiseUpstream().eval()
    data = _dataset()
    seen = []
    collector = HiddenStateCollector(up, [seen.append], plugin_manager=False)
    collector.run(data[1:4], batch_size=3, indices=[11, 12, 13], progress=False)
    (batch,) = seen
    assert batch.lengths == frame_counts([len(w) for _, w in data[1:4]], batch.hidden_states[0].shape[1], 320) == [39, 25, 16]
    for layer, frames in enumerate(batch.frames):
        manual = torch.cat([batch.hidden_states[layer][i, :n] for i, n in enumerate(batch.lengths)])
        assert torch.equal(frames, manual) and torch.isfinite(frames).all()
    expected = torch.cat([idx * KEY_STRIDE + torch.arange(n) for idx, n in zip([11, 12, 13], batch.lengths)])
    assert torch.equal(batch.keys, expected) and batch.keys.dtype == torch.int64
    assert batch.utterance_ids == ["utt1.wav", "utt2.wav", "utt3.wav"]


def test_sharded_passes_merge_to_the_single_pass():
    up = FramewiseUpstream().eval()
    data = _dataset()
    whole, _ = _feed(up, data, batch_size=2)
    parts = []
    for rank in range(2):  # AudioDataset.shard's layout: every 2nd item, with its global index
        idx = list(range(rank, len(data), 2))
        parts.append(_feed(up, [data[i] for i in idx], batch_size=3, indices=idx)[0])
    for name, metric in parts[0].instances.items():
        metric.merge(parts[1].instances[name])
    _assert_same_statistics(whole, parts[0])


def test_output_of_a_self_returning_upstream_is_unchanged():
    up = FramewiseUpstream().eval()
    wavs = [w for _, w in _dataset()[:3]]
    plain = up(wavs)
    got = []
    out = HiddenStateCollector(up, [got.append], plugin_manager=False).forward(wavs)
    assert set(out) == set(plain) and out["extra"] == "kept"
    for a, b in zip(out["hidden_states"], plain["hidden_states"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert out["last_hidden_state"] is out["hidden_states"][-1]
    assert all(a is b for a, b in zip(got[0].hidden_states, out["hidden_states"]))  # consumers see the same tensors
    assert torch.isnan(out["hidden_states"][0]).any()  # the padding is still there: nothing was trimmed in place


def test_hook_based_expert_output_unchanged_and_frames_trimmed(tiny_ckpts):
    import s3prl.hub as hub

    up = hub.hubert_local(ckpt=str(tiny_ckpts["hubert"])).eval()
    wavs = random_wavs((16000, 8100, 12345), seed=4)

    def hook_count():
        return len(up.hooks), sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in up.modules())

    before = hook_count()
    with torch.inference_mode():
        plain = up(wavs)
        got = []
        out = HiddenStateCollector(up, [got.append], plugin_manager=False).forward(wavs)
        again = up(wavs)
    assert hook_count() == before  # no hook added, none left behind
    assert len(plain["hidden_states"]) == len(out["hidden_states"]) == len(again["hidden_states"]) == 5
    assert set(out) == set(plain) == set(again)
    for key in plain:
        if key == "_hidden_states_info":
            assert out[key] == plain[key]
            continue
        a, b = plain[key], out[key]
        for x, y in zip(a if isinstance(a, (list, tuple)) else [a], b if isinstance(b, (list, tuple)) else [b]):
            assert torch.equal(x, y), key
    (batch,) = got
    t = plain["hidden_states"][0].shape[1]
    assert t == 49 and batch.lengths == [49, 25, 39]  # round(len / 320) = 50, 25, 39, capped at T
    assert batch.lengths == [min(round(n / 320), t) for n in (16000, 8100, 12345)]
    for layer in range(5):
        manual = torch.cat([plain["hidden_states"][layer][i, :n] for i, n in enumerate(batch.lengths)])
        assert torch.equal(batch.frames[layer], manual)


def test_s3prl_upstream_wrapper_uses_its_own_lengths(tiny_ckpts):
    from s3prl.nn import S3PRLUpstream

    up = S3PRLUpstream("hubert_local", path_or_url=str(tiny_ckpts["hubert"])).eval()
    wavs = random_wavs((16000, 8100), seed=5)
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    lens = torch.tensor([len(w) for w in wavs])
    got = []
    with torch.inference_mode():
        all_hs, all_lens = up(padded, lens)
        out = HiddenStateCollector(up, [got.append], plugin_manager=False).forward(wavs)
    assert isinstance(out, tuple) and len(out[0]) == len(all_hs) == 5
    assert got[0].lengths == all_lens[0].tolist() == [50, 26]  # (len - 1) // 320 + 1
    for layer in range(5):
        manual = torch.cat([all_hs[layer][i, :n] for i, n in enumerate(got[0].lengths)])
        assert torch.equal(got[0].frames[layer], manual)


def test_non_finite_hidden_states_stop_before_any_statistic():
    up = FramewiseUpstream(nan_layer=2).eval()
    data = _dataset()
    bad = data[3][1].clone()
    bad[0] = 0.5
    data[3] = ("speaker/bad one.wav", bad)
    metric_set = MetricSet(["cka", "mknn"], {"mknn": {"k": 4, "max_frames": 64}})
    collector = HiddenStateCollector(up, [metric_set], plugin_manager=False)
    with pytest.raises(NonFiniteHiddenStatesError) as info:
        collector.run(data, batch_size=2, progress=False)
    message = str(info.value)
    assert "hidden state 2" in message and "'speaker/bad one.wav'" in message and "index 3" in message and "NaN" in message
    assert (info.value.layer, info.value.utterance_index) == (2, 3)
    # the first batch (utterances 0, 1) entered the statistics, the failing one did not
    assert metric_set.instances["cka"].frames_seen == 50 + 39


# --------------------------------------------------------------------------------------
# plugins
# --------------------------------------------------------------------------------------
class _RecordingPlugin:
    def __init__(self):
        self.calls = []

    @hookimpl
    def s3prl_redundancy_on_hidden_states(self, hidden_states, lengths, utterance_ids):
        self.calls.append(([tuple(h.shape) for h in hidden_states], list(lengths), list(utterance_ids),
                           [h[0, : lengths[0]].clone() for h in hidden_states]))


class _MetricPlugin:
    class DoubledCosine(CosineSimilarity):
        name = "doubled_cosine"

        def _compute(self):
            return 2 * super()._compute()

    @hookimpl
    def s3prl_redundancy_similarity_metrics(self):
        return {"doubled_cosine": self.DoubledCosine}


@pytest.fixture
def registered():
    pm = get_plugin_manager()
    added = []

    def register(plugin, name):
        pm.register(plugin, name=name)
        added.append(plugin)
        return plugin

    yield register
    for plugin in added:
        pm.unregister(plugin)


def test_on_hidden_states_hook_receives_every_batch(registered):
    plugin = registered(_RecordingPlugin(), "test-recorder")
    up = FramewiseUpstream().eval()
    data = _dataset()
    report = analyze(up, data, metrics=["cosine"], batch_size=2, progress=False)
    assert len(plugin.calls) == 3  # 5 utterances in batches of 2
    assert [c[2] for c in plugin.calls] == [["utt0.wav", "utt1.wav"], ["utt2.wav", "utt3.wav"], ["utt4.wav"]]
    assert [c[1] for c in plugin.calls] == [[50, 39], [25, 16], [45]]
    assert [c[0][0] for c in plugin.calls] == [(2, 50, 16), (2, 26, 16), (1, 45, 16)]
    assert all(len(c[0]) == 4 for c in plugin.calls)
    alone = up([data[2][1]])["hidden_states"]
    for layer in range(4):
        assert torch.equal(plugin.calls[1][3][layer], alone[layer][0, :25])
    assert report.num_frames == 175


def test_plugin_metric_is_available_by_name(registered):
    registered(_MetricPlugin(), "test-metric")
    up = FramewiseUpstream().eval()
    report = analyze(up, _dataset(), metrics="cosine,doubled_cosine", batch_size=4, progress=False)
    np.testing.assert_allclose(report.metrics["doubled_cosine"], 2 * report.metrics["cosine"], rtol=0, atol=1e-12)
    assert report.blocks["doubled_cosine"]["blocks"]


# --------------------------------------------------------------------------------------
# analyze against independent computations
# --------------------------------------------------------------------------------------
def test_analyze_equals_gram_matrix_formulas_on_independently_collected_frames(tiny_ckpts):
    import s3prl.hub as hub

    up = hub.hubert_local(ckpt=str(tiny_ckpts["hubert"])).eval()
    data = _dataset((16000, 12345, 8100, 5000, 14321, 9000, 11000), seed=1)
    k = 5
    report = analyze(up, data, batch_size=3, metric_options={"mknn": {"k": k, "max_frames": 4096}}, progress=False)

    # the same batches through a plain forward, trimmed by hand with s3prl's rule
    frames = [[] for _ in range(5)]
    with torch.inference_mode():
        for s in range(0, len(data), 3):
            wavs = [w for _, w in data[s : s + 3]]
            hs = up(wavs)["hidden_states"]
            for i, w in enumerate(wavs):
                n = min(round(len(w) / 320), hs[0].shape[1])
                for layer in range(5):
                    frames[layer].append(hs[layer][i, :n])
    frames = [torch.cat(f).to(F64) for f in frames]
    n = frames[0].shape[0]
    assert report.num_frames == n == 235  # sum of round(len / 320) = 237, two utterances capped at their batch's T
    assert report.num_utterances == 7 and report.layers == [0, 1, 2, 3, 4]

    expected = {
        "cka": ref.cka_matrix(frames),
        "debiased_cka": ref.cka_matrix(frames, debiased=True),
        "cosine": ref.cosine_matrix(frames),
        "mknn": ref.mutual_knn_matrix(frames, k=k),
    }
    assert list(report.metrics) == ["cosine", "cka", "debiased_cka", "mknn"]
    for name, matrix in expected.items():
        got = report.metrics[name]
        assert got.shape == (5, 5)
        tol = 1.0 / (k * n) + 1e-12 if name == "mknn" else F32_PRODUCTS_ATOL  # mknn: float32 sample, at most one neighbour swap
        np.testing.assert_allclose(got, matrix.numpy(), rtol=0, atol=tol, err_msg=name)
        assert report.blocks[name]["blocks"] == [list(b) for b in find_blocks(matrix).blocks]
        assert len(report.blocks[name]["redundancy"]) == 5
    bi = 1.0 - torch.diagonal(expected["cosine"], offset=1)
    np.testing.assert_allclose(report.block_influence, bi.numpy(), rtol=0, atol=F32_PRODUCTS_ATOL)
    assert not np.allclose(report.metrics["cka"], report.metrics["debiased_cka"])  # two different estimators


def test_cka_shared_with_debiased_statistics_equals_a_separate_linear_cka():
    up = FramewiseUpstream().eval()
    data = _dataset()
    shared, _ = _feed(up, data, batch_size=2)
    assert "cka" not in shared.instances and shared.outputs["cka"] == ("debiased_cka", "compute_biased")
    assert "block_influence" not in shared.instances and shared.outputs["block_influence"][0] == "cosine"
    alone, _ = _feed(up, data, batch_size=2, names=("cka",))
    assert isinstance(alone.instances["cka"], LinearCKA) and "block_influence" in alone.instances
    torch.testing.assert_close(shared.compute()["cka"], alone.compute()["cka"], atol=1e-12, rtol=0)
    torch.testing.assert_close(shared.compute()["block_influence"], alone.compute()["block_influence"], atol=F32_PRODUCTS_ATOL, rtol=0)


@pytest.mark.parametrize(
    "names, options, message",
    [
        (["cka", "bogus"], None, "unknown similarity metric(s) 'bogus'; known metrics: block_influence, cka, cosine"),
        ([], None, "no similarity metric requested"),
        (["mknn"], {"mknn": {"kk": 3}}, "does not take option(s) ['kk']; it accepts: k, max_frames"),
        (["mknn"], {"bogus": {}}, "metric_options: given for unknown metric(s) ['bogus']"),
        (["mknn"], {"mknn": {"k": 20, "max_frames": 10}}, "max_frames must be larger than k"),
        (["mknn"], {"k": 3}, "must map metric names to option dicts"),
    ],
)
def test_metric_set_rejects_bad_names_and_options(names, options, message):
    from s3prl_redundancy.errors import UserInputError

    with pytest.raises(UserInputError) as info:
        MetricSet(names, options)
    assert message in str(info.value)


def test_checkpoint_resume_gives_identical_statistics(tmp_path):
    up = FramewiseUpstream().eval()
    data = _dataset()
    straight = analyze(up, data, batch_size=2, metric_options=OPTIONS, progress=False)

    class Crash(Exception):
        pass

    seen = []

    def crash_on_third_batch(batch):
        seen.append(batch.utterance_ids)
        if len(seen) == 3:
            raise Crash

    ckpt = tmp_path / "partial"
    with pytest.raises(Crash):
        analyze(up, data, batch_size=2, metric_options=OPTIONS, progress=False, consumers=[crash_on_third_batch],
                checkpoint_dir=ckpt, checkpoint_every=3)
    state = torch.load(ckpt / "rank0.pt", weights_only=True)
    assert state["position"] == 4  # saved at the end of the batch that completed 3+ utterances
    seen.clear()
    resumed = analyze(up, data, batch_size=2, metric_options=OPTIONS, progress=False, consumers=[seen.append],
                      checkpoint_dir=ckpt, checkpoint_every=3, resume=True)
    assert [b.utterance_ids for b in seen] == [["utt4.wav"]]  # only what was left
    assert resumed.to_dict() == straight.to_dict()  # bit-identical numbers
    # a checkpoint of other options is refused with a clear message
    from s3prl_redundancy.errors import UserInputError

    with pytest.raises(UserInputError, match="belongs to a different run .differs in: batch_size"):
        analyze(up, data, batch_size=3, metric_options=OPTIONS, progress=False, checkpoint_dir=ckpt, resume=True)


def test_report_write_load_csv_and_overwrite_rules(tmp_path):
    import pandas as pd

    from s3prl_redundancy.errors import UserInputError

    up = FramewiseUpstream().eval()
    report = analyze(up, _dataset(), batch_size=4, metric_options=OPTIONS, progress=False, upstream_name="framewise")
    files = report.write(tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted([MARKER, "similarity.json", "similarity_all.png", "block_influence.png"]
                           + [f"{m}.{e}" for m in ("cosine", "cka", "debiased_cka", "mknn") for e in ("csv", "png")])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in files.values() if p.suffix == ".png")
    data = json.loads((tmp_path / "out" / "similarity.json").read_text())
    assert list(data)[:7] == ["upstream", "num_utterances", "num_frames", "layers", "metrics", "blocks", "block_influence"]
    assert data["upstream"] == "framewise" and data["num_frames"] == 175 and data["layers"] == [0, 1, 2, 3]
    assert data["metric_options"]["mknn"] == {"k": 4, "max_frames": 64, "seed": 3, "dtype": "torch.float32"}
    csv = pd.read_csv(tmp_path / "out" / "cka.csv", index_col=0)
    assert list(csv.columns) == ["0", "1", "2", "3"] and csv.index.name == "layer"
    np.testing.assert_array_equal(csv.to_numpy(), np.array(data["metrics"]["cka"]))
    np.testing.assert_array_equal(SimilarityReport.load(tmp_path / "out").metrics["mknn"], report.metrics["mknn"])

    before = (tmp_path / "out" / "similarity.json").read_bytes()
    with pytest.raises(UserInputError, match="already holds similarity results .*pass `force=True`"):
        report.write(tmp_path / "out")
    assert (tmp_path / "out" / "similarity.json").read_bytes() == before
    smaller = analyze(up, _dataset(), metrics=["cka"], batch_size=4, progress=False)
    smaller.write(tmp_path / "out", force=True)
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == sorted([MARKER, "block_influence.png", "cka.csv", "cka.png", "similarity.json", "similarity_all.png"])


def test_analyze_by_hub_name_on_an_audio_folder(tiny_ckpts, tmp_path):
    import soundfile

    for i, n in enumerate((9000, 7000, 11000)):
        soundfile.write(tmp_path / f"a{i}.wav", random_wavs((n,), seed=i)[0].numpy(), 16000)
    report = analyze("hubert_local", tmp_path, metrics="cka", ckpt=tiny_ckpts["hubert"], batch_size=1, progress=False)
    assert report.upstream == "hubert_local" and report.num_utterances == 3
    assert report.num_frames == sum(min(round(n / 320), (n - 400) // 320 + 1) for n in (9000, 7000, 11000))
    assert list(report.metrics) == ["cka"] and len(report.block_influence) == 4
    assert set(report.timings) == {"pass", "compute", "blocks"}


def test_audio_read_in_dataloader_workers_gives_the_same_batches():
    up = FramewiseUpstream().eval()
    data = _dataset()
    inline, workers = [], []
    HiddenStateCollector(up, [inline.append], plugin_manager=False).run(data, batch_size=2, start=1, progress=False)
    HiddenStateCollector(up, [workers.append], plugin_manager=False).run(data, batch_size=2, start=1, progress=False,
                                                                         num_workers=1)
    assert [b.utterance_ids for b in workers] == [b.utterance_ids for b in inline] == [["utt1.wav", "utt2.wav"],
                                                                                        ["utt3.wav", "utt4.wav"]]
    for a, b in zip(inline, workers):
        assert torch.equal(a.keys, b.keys) and all(torch.equal(x, y) for x, y in zip(a.frames, b.frames))
