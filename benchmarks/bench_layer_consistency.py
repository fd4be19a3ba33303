"""Layer consistency (arXiv 2105.00812): training step time with a sampled depth, and shallow layer inference.

Model: the ``tiny_hubert`` architecture (6 pre-LN layers, 256 dims) with all layers sharing one set of
weights (``pretrain-tiny --share-layers all``), random weights (time does not depend on them).

1. Training step: one ``pretrain-tiny`` step (masked-prediction loss, backward, AdamW) with the depth drawn
   uniformly from 1..6 (``--depth-range 1,6``: the draw of round ``r`` is ``sample_depth(0, r, (1, 6))``)
   against the same step at full depth, side by side on the same batch. Expected ratio: the CNN front end
   and the head are paid at every depth, the layers on average 3.5 of 6 times.
2. Shallow layer inference: the ``lc_hubert`` entry at depth 3 against depth 6 (``BENCH_AUDIO_SECONDS`` of
   audio), the CNN front end alone as the floor.
"""

from __future__ import annotations

import numpy as np
import torch

from s3prl_redundancy.compression.cost import time_rounds
from s3prl_redundancy.testing.benchmarks import ROUNDS, SECONDS, record_context, record_ratios, round_ratios, waveforms

BATCH, CROP_SECONDS, CLUSTERS = 8, 3.0, 100


def _train_step_fn(model, depth_of_round):
    from s3prl_redundancy.pretrain import model as M

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    wav = torch.randn(BATCH, int(CROP_SECONDS * 16000), generator=gen) * 0.1
    frames = model.forward_features(wav[:1]).shape[2]
    labels = torch.randint(0, CLUSTERS, (BATCH, frames), generator=gen)
    mask = M.mask_indices(model, BATCH, frames, [0, 0, 1])
    counter = [0]

    def step():
        depth = depth_of_round(counter[0])
        counter[0] += 1
        loss, _ = M.masked_prediction(model, wav, labels, mask, depth=depth)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def test_training_step_with_sampled_depth(benchmark):
    from s3prl_redundancy.layer_consistency import sample_depth
    from s3prl_redundancy.pretrain import model as M

    benchmark.group = "layer consistency: training step, sampled depth vs full depth"
    full, _ = M.build_model(0, None, CLUSTERS, share_layers=1)
    sampled, _ = M.build_model(0, None, CLUSTERS, share_layers=1)
    fns = {"full_depth": _train_step_fn(full, lambda r: None),
           "sampled_depth": _train_step_fn(sampled, lambda r: sample_depth(0, r, (1, 6)))}
    times = benchmark.pedantic(time_rounds, args=(fns,), kwargs=dict(repeats=ROUNDS, warmup=1, grad=True),
                               rounds=1, iterations=1)
    record_ratios(benchmark, "sampled_over_full_depth", round_ratios(times, "sampled_depth", "full_depth"),
                  reference="the same step at full depth (6 layers)", target="<= 0.9")
    record_context(benchmark, batch=BATCH, crop_seconds=CROP_SECONDS,
                   full_depth_step_s=float(np.median(times["full_depth"])),
                   sampled_depth_step_s=float(np.median(times["sampled_depth"])))


def test_shallow_layer_inference(benchmark, tmp_path):
    from s3prl_redundancy.pretrain import model as M
    from s3prl_redundancy.upstreams.lc.expert import LCHubertExpert

    benchmark.group = "layer consistency: SLI at depth 3 vs depth 6"
    model, cfg = M.build_model(0, None, CLUSTERS, share_layers=1)
    path = tmp_path / "lc.pt"
    torch.save(M.hubert_local_checkpoint(model, cfg, CLUSTERS, half=False, layer_consistency={"share_layers": 1}), path)
    deep, shallow = LCHubertExpert(str(path), {"depth": 6}).eval(), LCHubertExpert(str(path), {"depth": 3}).eval()
    wavs = waveforms(1)
    front = deep.model.feature_extractor
    fns = {"depth6": lambda: deep(wavs), "depth3": lambda: shallow(wavs), "front_end": lambda: front(wavs[0][None])}
    times = benchmark.pedantic(time_rounds, args=(fns,), kwargs=dict(repeats=ROUNDS, warmup=1), rounds=1, iterations=1)
    floor = float(np.median(round_ratios(times, "front_end", "depth6")))
    record_ratios(benchmark, "depth3_over_depth6", round_ratios(times, "depth3", "depth6"),
                  reference="the same entry at depth 6", target="< 1.0", floor=floor)
    record_context(benchmark, audio_seconds=SECONDS, depth6_s=float(np.median(times["depth6"])))
