"""Benchmarks of the similarity analysis (pytest-benchmark; skipped by the default test run).

    .venv/bin/python -m pytest benchmarks/bench_similarity.py --benchmark-only -p no:cacheprovider -s

(a) ``analyze`` with all metrics (cosine, cka, debiased_cka, mknn + block influence) relative to the bare
    forward over the same audio and batches, on the embedded ``tiny_hubert`` (6 x 256) and on a base-size
    HuBERT (s3prl's classes, random weights, 12 layers, 768 dims, 512-channel CNN). Forward and analysis
    alternate, round by round, so machine load affects both alike. Ratios per model: the whole analysis at
    this size (target <= 1.25); its pass alone (forward + metric updates, without the one-off ``compute`` and
    block search, which do not grow with the data), the ratio a long analysis tends to; and, from the same
    measured parts, the whole analysis extrapolated to one hour of audio.
(b) Peak resident memory (VmHWM) of a whole analysis at N ~ 2k and 10N ~ 20k frames of the tiny model, each in
    a fresh process (mknn's reservoir set to 1,024 frames, so that it is full at N as well; it holds
    ``max_frames * sum(D_l) * 4`` bytes whatever the number of frames).
(c) Exact streaming CKA (``LinearCKA``) versus ``testing.oracles.minibatch_cka`` (Gram CKA on minibatches
    of 128 frames, as public tools compute it: the mean of per-minibatch CKA, and debiased HSIC summed
    over minibatches) at 10k and 100k frames of two correlated 256-dim representations: time, and
    absolute error against the exact value in float64 (10k: centred n x n Gram matrices; 100k: the
    feature-space formula).

Every test prints one summary line (``-s`` shows them) and records its ratios and context with
``conftest.record_ratios`` / ``record_context`` (rendered into ``docs/performance.md`` by ``make bench``).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from s3prl_redundancy.testing.benchmarks import record_context, record_ratios

pytestmark = pytest.mark.benchmark(group="similarity", disable_gc=True, warmup=False)

ALL_METRICS = ("cosine", "cka", "debiased_cka", "mknn")


class SyntheticSpeech:
    """A map-style dataset of deterministic noisy harmonic "utterances", generated on access (no storage)."""

    def __init__(self, count: int, seconds: float, seed: int = 0) -> None:
        self.count, self.samples, self.seed = count, int(seconds * 16000), seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        t = torch.arange(self.samples) / 16000
        f0 = 100 + 150 * torch.rand(1, generator=g)
        wav = sum(torch.sin(2 * torch.pi * f0 * h * t) / h for h in (1, 2, 3)) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 4 * t))
        return f"synthetic{i}", (0.2 * wav + 0.02 * torch.randn(self.samples, generator=g)).float()


def _checkpoint(kind: str, folder: Path) -> Path:
    from s3prl_redundancy.testing.models import BASE_OVERRIDES, save_tiny_checkpoint

    if kind == "tiny":  # the embedded default model (trained weights)
        from s3prl_redundancy.upstreams.tiny.expert import DEFAULT_CKPT

        return DEFAULT_CKPT
    path = folder / f"{kind}_hubert.pt"
    if not path.exists():
        save_tiny_checkpoint("hubert", path, num_layers=12, seed=0, **BASE_OVERRIDES)
    return path


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_ckpts")


def _load(kind: str, folder: Path):
    import s3prl.hub as hub

    return hub.hubert_local(ckpt=str(_checkpoint(kind, folder))).eval()


def _bare_forward(upstream, dataset, batch_size: int, cpu_times: list = None) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for s in range(0, len(dataset), batch_size):
            upstream([dataset[i][1] for i in range(s, min(len(dataset), s + batch_size))])
    if cpu_times is not None:
        cpu_times.append(time.process_time() - cpu)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------
# (a) analysis / bare forward
# ----------------------------------------------------------------------------------------------------
SETTINGS = {
    # model: (utterances, seconds each, batch size, rounds)
    "tiny": (64, 4.0, 8, 3),  # 256 s of audio
    "base": (16, 4.0, 4, 3),  # 64 s of audio
}


@pytest.mark.parametrize("model", ["tiny", "base"])
def test_analysis_overhead_vs_bare_forward(benchmark, model, ckpt_dir):
    from s3prl_redundancy.similarity.analysis import analyze

    count, seconds, batch_size, rounds = SETTINGS[model]
    upstream = _load(model, ckpt_dir)
    dataset = SyntheticSpeech(count, seconds)
    _bare_forward(upstream, SyntheticSpeech(2, 1.0, seed=9), batch_size)  # warm-up (allocator, kernels)
    forward_times, analysis_times, pass_times, compute_times, forward_cpu, analysis_cpu = [], [], [], [], [], []
    report = {}

    def forward():  # pedantic's setup: untimed by pytest-benchmark, the side-by-side reference of each round
        forward_times.append(_bare_forward(upstream, dataset, batch_size, forward_cpu))

    def analysis():
        start, cpu = time.perf_counter(), time.process_time()
        report["r"] = analyze(upstream, dataset, metrics=ALL_METRICS, batch_size=batch_size, progress=False, plugin_manager=False)
        analysis_times.append(time.perf_counter() - start)
        analysis_cpu.append(time.process_time() - cpu)
        pass_times.append(report["r"].timings["pass"])
        compute_times.append(report["r"].timings["compute"] + report["r"].timings["blocks"])

    benchmark.pedantic(analysis, setup=forward, rounds=rounds, iterations=1)
    frames = report["r"].num_frames
    name = "tiny_hubert (6 x 256)" if model == "tiny" else "base-size HuBERT (12 x 768)"
    record_ratios(benchmark, f"analysis / forward, {name}", [a / f for a, f in zip(analysis_times, forward_times)],
                  reference="bare forward over the same audio and batches", target="<= 1.25")
    record_ratios(benchmark, f"pass (forward + updates) / forward, {name}", [p / f for p, f in zip(pass_times, forward_times)],
                  reference="bare forward over the same audio and batches", target="<= 1.25")
    hour = 3600.0 / (count * seconds)  # the one-off compute (mknn search, centring) spread over 1 h of audio
    record_ratios(benchmark, f"analysis / forward extrapolated to 1 h of audio, {name}",
                  [p / f + c / (f * hour) for p, c, f in zip(pass_times, compute_times, forward_times)],
                  reference="this round's pass ratio + its one-off compute over the forward of 1 h of audio",
                  target="<= 1.25")
    record_ratios(benchmark, f"analysis CPU time / forward CPU time, {name}", [a / f for a, f in zip(analysis_cpu, forward_cpu)],
                  reference="process CPU time of the bare forward")
    info = {
        "model": model,
        "utterances": count,
        "audio_seconds": count * seconds,
        "frames": frames,
        "hidden_states": len(report["r"].layers),
        "batch_size": batch_size,
        "forward_s_min": round(min(forward_times), 3),
        "analysis_s_min": round(min(analysis_times), 3),
        "compute_and_blocks_s_min": round(min(compute_times), 3),
    }
    record_context(benchmark, **{f"{model}: {k}": v for k, v in info.items() if k != "model"})
    print(f"\n[bench a] {json.dumps(info)} ratios {json.dumps({k: [round(x, 3) for x in v['values']] for k, v in benchmark.extra_info['ratios'].items()})}")
    assert frames > 0 and min(forward_times) > 0


# ----------------------------------------------------------------------------------------------------
# (b) peak memory at N and 10N frames (fresh process each)
# ----------------------------------------------------------------------------------------------------
def _peak_rss_mb(reset: bool = False) -> float:
    """Peak resident set of this process (VmHWM; ``reset`` restarts it from the current RSS).

    ``ru_maxrss`` is not used: Linux keeps it across ``exec``, so a child started by a large parent
    would report the parent's peak.
    """
    status = Path("/proc/self/status")
    if not status.exists():  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return value / (1024 * 1024 if sys.platform == "darwin" else 1024)
    if reset:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


MEMORY_MKNN = {"mknn": {"max_frames": 1024}}  # a reservoir full at N already: every statistic has its final size


def _memory_child(ckpt: str, utterances: int, seconds: float) -> None:
    import s3prl.hub as hub

    from s3prl_redundancy.similarity.analysis import analyze

    upstream = hub.hubert_local(ckpt=ckpt).eval()
    _bare_forward(upstream, SyntheticSpeech(8, seconds, seed=7), 8)  # the model's working memory is in the baseline
    baseline = _peak_rss_mb(reset=True)
    report = analyze(upstream, SyntheticSpeech(utterances, seconds), metrics=ALL_METRICS, batch_size=8, progress=False,
                     plugin_manager=False, metric_options=MEMORY_MKNN)
    print(json.dumps({"frames": report.num_frames, "baseline_mb": baseline, "peak_mb": _peak_rss_mb()}))


def _run_memory_child(ckpt: Path, utterances: int, seconds: float) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(ckpt), str(utterances), str(seconds)],
                         capture_output=True, text=True, env=env, timeout=400, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory_is_flat_in_the_number_of_frames(benchmark, ckpt_dir):
    ckpt = _checkpoint("tiny", ckpt_dir)
    small = _run_memory_child(ckpt, 20, 2.0)  # N ~ 2,000 frames (mknn keeps 1,024 of them)
    large = {}

    def ten_times():
        large.update(_run_memory_child(ckpt, 200, 2.0))  # 10 N ~ 20,000 frames

    benchmark.pedantic(ten_times, rounds=1, iterations=1)
    growth_small = small["peak_mb"] - small["baseline_mb"]
    growth_large = large["peak_mb"] - large["baseline_mb"]
    info = {
        "mknn_max_frames": MEMORY_MKNN["mknn"]["max_frames"],
        "frames_N": small["frames"],
        "frames_10N": large["frames"],
        "peak_rss_mb_N": round(small["peak_mb"], 1),
        "peak_rss_mb_10N": round(large["peak_mb"], 1),
        "analysis_growth_mb_N": round(growth_small, 1),
        "analysis_growth_mb_10N": round(growth_large, 1),
    }
    record_ratios(benchmark, "peak memory at 10N frames / at N frames", [large["peak_mb"] / small["peak_mb"]],
                  reference=f"peak resident memory of the same analysis at N = {small['frames']} frames", target="<= 1.10")
    record_context(benchmark, **info)
    print(f"\n[bench b] {json.dumps(info)}")
    assert large["frames"] >= 9 * small["frames"]
    assert large["peak_mb"] <= small["peak_mb"] * 1.10 + 16, info  # flat: 10x the frames, not 10x the memory


# ----------------------------------------------------------------------------------------------------
# (c) exact streaming CKA vs minibatch Gram CKA
# ----------------------------------------------------------------------------------------------------
def _pair(n: int, d: int = 256, seed: int = 0):
    """Two float32 representations (n, d) of the same frames: a shared 32-dim latent, different maps and noise."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 32, generator=g)
    x = latent @ torch.randn(32, d, generator=g) + 0.8 * torch.randn(n, d, generator=g) + 3.0
    y = torch.tanh(latent @ torch.randn(32, d, generator=g)) * 4 + 1.5 * torch.randn(n, d, generator=g) - 1.0
    return x.float(), y.float()


def _exact_feature_space(x: torch.Tensor, y: torch.Tensor) -> float:
    xc = x.double() - x.double().mean(0)
    yc = y.double() - y.double().mean(0)
    return float((yc.T @ xc).square().sum() / ((xc.T @ xc).square().sum().sqrt() * (yc.T @ yc).square().sum().sqrt()))


def _exact_gram(x: torch.Tensor, y: torch.Tensor, rows: int = 2000) -> float:
    """Biased CKA from the centred n x n Gram matrices ``HKH = Xc Xc^T``, ``HLH``, built row block by row block."""
    xc = x.double() - x.double().mean(0)
    yc = y.double() - y.double().mean(0)
    kl = kk = ll = 0.0
    for s in range(0, x.shape[0], rows):
        k = xc[s : s + rows] @ xc.T
        l = yc[s : s + rows] @ yc.T
        kl, kk, ll = kl + float((k * l).sum()), kk + float(k.square().sum()), ll + float(l.square().sum())
    return kl / (kk**0.5 * ll**0.5)


@pytest.mark.parametrize("n", [10_000, 100_000])
def test_exact_streaming_cka_vs_minibatch_gram_cka(benchmark, n):
    from s3prl_redundancy.testing import oracles as ref
    from s3prl_redundancy.similarity.metrics import LinearCKA

    x, y = _pair(n)
    start = time.perf_counter()
    exact = _exact_gram(x, y) if n <= 10_000 else _exact_feature_space(x, y)
    exact_s = time.perf_counter() - start
    feature_space = _exact_feature_space(x, y)
    value = {}

    def streaming():
        metric = LinearCKA()
        for s in range(0, n, 1000):  # 1,000-frame batches, float32 in, as from the collector
            metric.update([x[s : s + 1000], y[s : s + 1000]])
        value["cka"] = float(metric.compute()[0, 1])

    benchmark.pedantic(streaming, rounds=3 if n <= 10_000 else 1, iterations=1)
    ours_s = benchmark.stats.stats.median
    batch = 128  # frames per minibatch (the redundancy paper's code uses 128 examples per Gram matrix)
    times, errors, values = {}, {}, {}
    for label, kwargs in {"minibatch_cka_mean": dict(debiased=False, aggregate="cka"),
                          "minibatch_debiased_hsic": dict(debiased=True, aggregate="hsic")}.items():
        start = time.perf_counter()
        values[label] = ref.minibatch_cka(x, y, batch_size=batch, **kwargs)
        times[label] = time.perf_counter() - start
        errors[label] = abs(values[label] - exact)
    info = {
        "frames": n,
        "dims": x.shape[1],
        "exact": exact,
        "exact_method": "centred Gram matrices, float64" if n <= 10_000 else "feature-space formula, float64",
        "exact_s": round(exact_s, 3),
        "feature_space_minus_gram": abs(feature_space - exact),
        "streaming_cka": value["cka"],
        "streaming_abs_error": abs(value["cka"] - exact),
        "streaming_s": round(ours_s, 3),
        "minibatch_size": batch,
        **{f"{k}_value": v for k, v in values.items()},
        **{f"{k}_abs_error": v for k, v in errors.items()},
        **{f"{k}_s": round(v, 3) for k, v in times.items()},
        **{f"{k}_s_over_streaming": round(v / ours_s, 2) for k, v in times.items()},
    }
    for label, t in times.items():
        record_ratios(benchmark, f"{label} time / exact streaming CKA time, {n:,} frames", [t / ours_s],
                      reference="exact streaming LinearCKA (1,000-frame batches)")
    record_context(benchmark, **{f"{n:,} frames: {k}": (v if isinstance(v, (int, str)) else float(f"{v:.3g}"))
                                 for k, v in info.items() if k not in ("frames",)})
    print(f"\n[bench c] {json.dumps(info)}")
    assert abs(value["cka"] - exact) < 1e-6  # float32 frames: float32 products summed in float64


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--memory-child":
    _memory_child(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
