"""Upstream latency of compressed base-size HuBERTs against the full model and against their floors.

A base-size HuBERT (12 layers, 768 dims, 12 heads, FFN 3072, 512-channel CNN; random weights, s3prl's own
classes) and its variants (``conftest.build_variants``): layer-pruned to the first k of L = 12 layers,
distilled (frozen front end + the paper's MLP mimicker, h = 64, 12 targets), head-pruned (half of the 144
heads, weight-norm importance) and low-rank (every attention projection and FFN matrix at rank 192). All of
them and the front end alone (CNN, feature projection, positional convolution, layer norm) run
``BENCH_AUDIO_SECONDS`` of audio per utterance, at batch 1 and batch 8, taking turns within every round
(:func:`s3prl_redundancy.compression.cost.time_rounds`). Each round gives one ratio ``t_variant / t_full``.

The floor of a variant is what it could reach at best if the stack's time were exactly proportional to the
work left in it and the front end were untouched, from the same round's front-end and full-model times:

* pruned to k layers: ``(t_front + k / L * (t_full - t_front)) / t_full``;
* distilled: ``t_front / t_full`` (the mimicker counted as free);
* head-pruned and low-rank: ``(t_front + m * (t_full - t_front)) / t_full`` with ``m`` the fraction of the
  stack's MACs the variant keeps (counted by ``FlopCounterMode``).

A pruned model's target is its floor + 0.05 (removing layers must buy their share of the stack); the
others are reported against their floors without a target. The CUDA cases (``device=cuda``, synchronised
around every call, three warm-up rounds) run only when a GPU is visible.
"""

from __future__ import annotations

import pytest
import torch

from s3prl_redundancy.testing.benchmarks import (KEEP, LAYERS, ROUNDS, SECONDS, device_params, median, record_context, record_ratios,
                      round_ratios, waveforms)
from s3prl_redundancy.compression.cost import time_rounds

BATCHES = (1, 8)
WARMUP = {"cpu": 1, "cuda": 3}  # whole warm-up rounds (CUDA: kernels chosen, caches filled)
PRUNED_TARGET = 0.05  # a pruned model may be at most 5 points above its linear floor


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("device", device_params())
def test_upstream_latency(benchmark, variants, variant_macs, device, batch):
    benchmark.group = f"latency, batch {batch}, {device}"
    dev = torch.device(device)
    modules = {name: module for name, (_, module) in variants.items()}
    order = ["front", "full", *(f"pruned_{k}" for k in KEEP), "distilled", "head_pruned", "low_rank"]
    # moved in place and back (a deep copy would keep s3prl's hidden-state hooks pointing at the original)
    for m in modules.values():
        m.to(dev)
    try:
        wavs = waveforms(batch, device=dev)
        fns = {name: (lambda m=modules[name]: m(wavs)) for name in order}
        times = benchmark.pedantic(time_rounds, args=(fns,), kwargs=dict(repeats=ROUNDS, warmup=WARMUP[dev.type], device=dev),
                                   rounds=1, iterations=1)
    finally:
        for m in modules.values():
            m.to("cpu")
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    front_share = round_ratios(times, "front", "full")
    stack_macs_full = variant_macs["full"] - variant_macs["front"]

    def floor_for(stack_fraction: float) -> float:
        return median([f + stack_fraction * (1 - f) for f in front_share])

    ref = f"full 12-layer model, batch {batch}, same round"
    for k in KEEP:
        floor = floor_for(k / LAYERS)
        record_ratios(benchmark, f"pruned {k}/{LAYERS} layers", round_ratios(times, f"pruned_{k}", "full"), ref,
                      target=f"<= {floor + PRUNED_TARGET:.3f}", floor=floor)
    record_ratios(benchmark, "distilled (MLP mimicker, h=64)", round_ratios(times, "distilled", "full"), ref,
                  floor=median(front_share))
    for name, label in (("head_pruned", "head-pruned (72 of 144 heads)"), ("low_rank", "low-rank (rank 192)")):
        fraction = (variant_macs[name] - variant_macs["front"]) / stack_macs_full
        record_ratios(benchmark, label, round_ratios(times, name, "full"), ref, floor=floor_for(fraction))
    record_ratios(benchmark, "front end alone", front_share, ref)

    audio = batch * SECONDS
    record_context(benchmark, audio_seconds_per_utterance=SECONDS, batch=batch, rounds=ROUNDS,
                   threads=torch.get_num_threads(),
                   **{f"{n}_s_per_audio_s": median(times[n]) / audio for n in order})
    benchmark.extra_info["device"] = dev.type
    full = median(times["full"])
    assert all(median(times[f"pruned_{k}"]) < full for k in KEEP)
    assert median(times["distilled"]) < full and 0 < median(times["front"]) < full
