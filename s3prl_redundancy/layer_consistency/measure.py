"""Measurements of ``docs/layer_consistency.md``: capacity at every depth, layer similarity, parameters, time.

``python -m s3prl_redundancy.layer_consistency.measure clips --out DIR --data-dir CACHE`` writes the
pretraining clips of ``tiny_hubert`` (its training split, from the synthetic corpus) as wav files, the
``--data`` of the LC fine-tuning runs, and names the k-means centres ``tiny_hubert`` was trained against
(their ``--targets``); ``... report --lc LC.pt --finetuned FT.pt [--finetuned-mp MP.pt] --out DIR`` measures
and plots the items below; ``... ks --superb RUNS --pairs A/B,...`` reads the KS runs of an
``s3prl-redundancy superb`` folder (accuracy, paired capacity; :func:`ks_comparison`).

- **capacity at depth k** (k = 1..L): a linear keyword probe (:mod:`s3prl_redundancy.probes`, mean pooling,
  test voices unseen) on the *last* hidden state each depth-k model serves, with a Wilson 95% interval
  (:func:`~s3prl_redundancy.superb.intervals.wilson_interval`) on the test clips, for the layer-consistent
  model with SLI, ``tiny_hubert`` cut by the no-post-training strategies ``backward`` (= ``shallow``) and
  ``forward`` (each kept layer set is ``prune_checkpoint``'s), and ``tiny_hubert`` after LC fine-tuning;
- **masked prediction at depth k** with each model's own head (:func:`masked_accuracy_by_depth`);
- **layer similarity**: linear CKA and cosine matrices (:func:`s3prl_redundancy.similarity.analysis.analyze`)
  of the full-depth models on held-out speech;
- **parameters** and **inference time at each depth** (:func:`~s3prl_redundancy.compression.cost.time_side_by_side`,
  interleaved rounds on 10 s of audio), and **training time per step** with and without depth sampling,
  measured side by side (:func:`train_step_times`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ..io import atomic_write_text

N_LAYERS = 6


def write_clips(out, data_dir, n_clips: int = 800, max_seconds: float = 4.0, seed: int = 0) -> Path:
    """The first ``n_clips`` training clips of the ``tiny_hubert`` corpus (seed ``seed``) as 16 kHz wav files in
    ``out``; the corpus and its k-means targets are built (or found) in ``data_dir``, as ``pretrain-tiny
    --data-dir`` does. Returns the targets file: its centres are ``lc-finetune --targets``."""
    import soundfile

    from ..pretrain.train import TrainConfig, prepare_corpus, targets_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(seed=seed)
    corpus = prepare_corpus(cfg, data_dir, log=lambda m: None)
    for i, w in enumerate(corpus.train_wavs[:n_clips]):
        soundfile.write(str(out / f"clip{i:04d}.wav"), w[: int(max_seconds * 16000)], 16000, subtype="PCM_16")
    return targets_path(cfg, data_dir)


def _upstreams_at_depth(kind: str, ckpt: str, k: int):
    """The depth-``k`` model of ``kind``: ``sli`` (lc entry, first k layers + exit norm), ``backward`` /
    ``forward`` (tiny_hubert with layers removed by that strategy, no post-training)."""
    from ..compression.strategies import Target, plan_layers
    from ..plugins import build_strategy
    from ..upstreams.lc.expert import LCHubertExpert
    from ..upstreams.pruned.expert import PrunedHubertExpert

    if kind == "sli":
        return LCHubertExpert(ckpt, {"depth": k})
    if k == N_LAYERS:
        return LCHubertExpert(ckpt, None)
    keep = plan_layers(build_strategy(kind), N_LAYERS, Target("keep", k)).keep
    return PrunedHubertExpert(ckpt, {"keep_layers": list(keep)})


def capacity_by_depth(models: Dict[str, tuple], items, log=print) -> Dict[str, List[Dict[str, Any]]]:
    """``{model: [per depth k: accuracy, Wilson interval, n_test]}`` of a keyword probe on the last hidden state."""
    from ..probes import pooled_features, probe_features
    from ..superb.intervals import wilson_interval

    wavs, labels, groups = zip(*items)
    out: Dict[str, List[Dict[str, Any]]] = {}
    for name, (kind, ckpt) in models.items():
        rows = []
        for k in range(1, N_LAYERS + 1):
            up = _upstreams_at_depth(kind, ckpt, k)
            last = pooled_features(up, list(wavs))[-1]
            res = probe_features([last], labels, groups, test_fraction=0.3, seed=0)
            n = res["n_test"]
            correct = int(round(res["accuracy"][0] * n))
            ci = wilson_interval(correct, n)
            rows.append({"depth": k, "accuracy": correct / n, "low": ci.low, "high": ci.high, "n_test": n})
            log(f"{name} depth {k}: {correct}/{n} = {correct / n:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
        out[name] = rows
    return out


def similarity(ckpts: Dict[str, str], wavs) -> Dict[str, Dict[str, Any]]:
    """CKA and cosine matrices of each full-depth model's hidden states (the project's ``analyze``)."""
    import torch

    from ..similarity.analysis import analyze
    from ..upstreams.lc.expert import LCHubertExpert

    data = [(f"u{i}", torch.as_tensor(w)) for i, w in enumerate(wavs)]
    out = {}
    for name, ckpt in ckpts.items():
        report = analyze(LCHubertExpert(ckpt, None), data, metrics=["cka", "cosine"], progress=False)
        out[name] = {m: np.asarray(report.metrics[m]).round(4).tolist() for m in ("cka", "cosine")}
    return out



def train_step_times(corpus, rounds: int = 20, seed: int = 0, depth_range=(1, N_LAYERS)) -> Dict[str, Any]:
    """Seconds per ``pretrain-tiny`` training step, side by side (:func:`~s3prl_redundancy.compression.cost.time_rounds`):
    the standard model, the all-shared model at full depth, and the all-shared model with sampled depth.
    Every configuration trains on the same batches (batch ``r`` of the run) with its own optimiser."""
    import torch

    from ..compression.cost import time_rounds
    from ..pretrain import model as M
    from ..pretrain.train import TrainConfig
    from . import sample_depth

    cfg = TrainConfig(seed=seed)
    configs = {"standard": (None, None), "shared_full_depth": (1, None), "shared_sampled_depth": (1, depth_range)}
    fns, counters = {}, {}
    for name, (share, dr) in configs.items():
        model, _ = M.build_model(seed, None, M.N_CLUSTERS, share)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        counters[name] = [0]

        def step(model=model, opt=opt, dr=dr, counter=counters[name]):
            r = counter[0]
            counter[0] += 1
            wav, lab = corpus.batch(seed, r, cfg.batch_size, int(cfg.crop_seconds * 16000))
            mask = M.mask_indices(model, wav.shape[0], lab.shape[1], [seed, r, 1])
            depth = None if dr is None else sample_depth(seed, r, dr)
            loss, _ = M.masked_prediction(model, torch.as_tensor(wav), torch.as_tensor(lab), mask, depth=depth)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        fns[name] = step
    times = time_rounds(fns, repeats=rounds, warmup=1, grad=True)
    out = {n: {"mean_s": float(np.mean(t)), "median_s": float(np.median(t)), "rounds": len(t)} for n, t in times.items()}
    ratio = np.asarray(times["shared_sampled_depth"]) / np.asarray(times["shared_full_depth"])
    out["sampled_over_full_mean_ratio"] = float(np.mean(times["shared_sampled_depth"]) / np.mean(times["shared_full_depth"]))
    out["sampled_over_full_median_per_round"] = float(np.median(ratio))
    out["threads"] = torch.get_num_threads()
    return out


def inference_times(ckpt: str, seconds: float = 10.0, repeats: int = 7) -> Dict[int, float]:
    """Median seconds of the SLI entry at every depth on ``seconds`` of audio, timed side by side."""
    from ..compression.cost import reference_waveform, time_side_by_side
    from ..upstreams.lc.expert import LCHubertExpert

    wav = reference_waveform(seconds)
    ups = {k: LCHubertExpert(ckpt, {"depth": k}).eval() for k in range(1, N_LAYERS + 1)}
    fns = {str(k): (lambda up=up: up([wav])) for k, up in ups.items()}
    return {int(k): v for k, v in time_side_by_side(fns, repeats=repeats, warmup=1).items()}


def parameters(ckpts: Dict[str, str]) -> Dict[str, Dict[str, int]]:
    """Stored (distinct) parameters of each checkpoint: the compact form of a shared model, else all weights."""
    import torch

    from . import COMPACT_KEY

    out = {}
    for name, path in ckpts.items():
        ck = torch.load(path, map_location="cpu", weights_only=True)
        weights = ck["model_weight"]
        total = sum(v.numel() for v in weights.values())
        layers = sum(v.numel() for k, v in weights.items() if k.startswith("encoder.layers."))
        if COMPACT_KEY in ck:
            layers_distinct = sum(v.numel() for v in ck[COMPACT_KEY].values())
        else:
            layers_distinct = layers
        out[name] = {"total_as_served": total, "transformer_layers_as_served": layers,
                     "distinct": total - layers + layers_distinct, "distinct_transformer_layers": layers_distinct}
    return out



def masked_accuracy_by_depth(ckpts: Dict[str, str], corpus, seed: int = 0) -> Dict[str, Dict[int, Dict[str, float]]]:
    """Held-out masked-prediction accuracy / CE of each ``pretrain-tiny`` checkpoint (its own prediction
    head) from the output of the first k layers through the exit norm, k = 1..L (``pretrain.train.evaluate``)."""
    import torch

    from ..checkpoints import load_family_checkpoint
    from ..pretrain.train import evaluate
    from ..superb.intervals import wilson_interval

    out = {}
    for name, path in ckpts.items():
        family, ckpt = load_family_checkpoint(path)
        model = family.trained_model(ckpt)
        out[name] = {k: evaluate(model, corpus, seed, torch.device("cpu"), depth=k) for k in range(1, N_LAYERS + 1)}
        for row in out[name].values():  # frames are correlated within a clip: the interval is optimistic
            n = row["val_masked_frames"]
            ci = wilson_interval(int(round(row["val_acc_masked"] * n)), n)
            row.update(low=ci.low, high=ci.high)
    return out


LABELS = {"lc_sli": "layer-consistent (shared, sampled depth), SLI",
          "tiny_backward": "tiny_hubert, first k layers (backward = shallow)",
          "tiny_forward": "tiny_hubert, layers removed forward",
          "tiny_lc_finetuned": "tiny_hubert + LC fine-tuning, SLI",
          "tiny_lc_finetuned_mp": "tiny_hubert + LC fine-tuning with masked prediction, SLI"}
COLORS = {"lc_sli": "C0", "tiny_backward": "C1", "tiny_forward": "C2", "tiny_lc_finetuned": "C3",
          "tiny_lc_finetuned_mp": "C4"}
MASKED_NAMES = {"lc": "lc_sli", "tiny_hubert": "tiny_backward"}


def _errorbar_series(ax, series: Dict[str, List[Dict[str, Any]]], key: str) -> None:
    for i, (name, rows) in enumerate(series.items()):
        d = np.array([r["depth"] for r in rows]) + (i - (len(series) - 1) / 2) * 0.06
        acc = np.array([r[key] for r in rows])
        err = np.array([[r[key] - r["low"] for r in rows], [r["high"] - r[key] for r in rows]])
        ax.errorbar(d, acc, yerr=err, marker="o", ms=4, capsize=2, label=LABELS.get(name, name), color=COLORS.get(name))
    ax.set_xlabel("depth k (transformer layers run)")


def plot_capacity(capacity: Dict[str, List[Dict[str, Any]]], masked: Dict[str, Dict[int, Dict[str, float]]],
                  times: Dict[str, Dict[int, float]], path) -> None:
    """Keyword-probe and masked-prediction accuracy (Wilson 95%) and SLI inference time against depth."""
    import matplotlib

    from ..io import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 3.8), dpi=90, gridspec_kw={"width_ratios": [3, 3, 2]})
    _errorbar_series(a1, capacity, "accuracy")
    a1.set_ylabel("keyword probe accuracy (last state)")
    a1.set_title("keyword probe, unseen voices, 120 test clips", fontsize=9)
    a1.legend(fontsize=6)
    rows = {n: [dict(r, depth=int(k)) for k, r in by_k.items()] for n, by_k in masked.items()}
    _errorbar_series(a2, {MASKED_NAMES.get(n, n): r for n, r in rows.items()}, "val_acc_masked")
    a2.set_ylabel("held-out masked-prediction accuracy")
    a2.set_title("own prediction head, 2559 masked frames", fontsize=9)
    a2.legend(fontsize=6)
    for name, t in times.items():
        a3.plot([int(k) for k in t], [1000 * v for v in t.values()], "o-", label=LABELS.get(name, name),
                color=COLORS.get(name))
    a3.set_xlabel("depth k")
    a3.set_ylabel("ms per 10 s of audio (CPU, 1 thread)")
    a3.set_title("inference time (median, side by side)", fontsize=9)
    a3.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def plot_similarity(sim: Dict[str, Dict[str, Any]], path) -> None:
    """CKA and cosine matrices of the models side by side."""
    import matplotlib

    from ..io import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sim)
    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 6), dpi=90, squeeze=False)
    for col, name in enumerate(names):
        for row, metric in enumerate(("cka", "cosine")):
            m = np.asarray(sim[name][metric])
            ax = axes[row][col]
            im = ax.imshow(m, vmin=min(0.5, float(np.nanmin(m))), vmax=1.0, cmap="viridis")
            for i in range(len(m)):
                for j in range(len(m)):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5, color="w")
            ax.set_title(f"{name}: {metric}", fontsize=8)
            ax.set_xlabel("hidden state", fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path)


def report(lc_ckpt: str, finetuned: Dict[str, str], tiny_ckpt: str, out, ks_voices: int = 40, data_dir=None,
           log=print) -> Dict[str, Any]:
    """Every measurement of the doc into ``out/layer_consistency.json`` and the two figures. ``finetuned``:
    ``{name: lc-finetune output of tiny_hubert}`` (names ``tiny_lc_finetuned``, ``tiny_lc_finetuned_mp``);
    ``data_dir``: the ``pretrain-tiny`` speech cache (default ``out/data``; built there if absent)."""
    import time

    from ..pretrain.data import ks_probe_set, sid_probe_set
    from ..pretrain.train import TrainConfig, prepare_corpus

    out = Path(out)
    t0 = time.time()
    result: Dict[str, Any] = {"ckpts": {"lc": lc_ckpt, "tiny": tiny_ckpt, **finetuned}}
    result["parameters"] = parameters({"lc": lc_ckpt, "tiny": tiny_ckpt, **finetuned})
    items = ks_probe_set(ks_voices)
    models = {"lc_sli": ("sli", lc_ckpt), "tiny_backward": ("backward", tiny_ckpt),
              "tiny_forward": ("forward", tiny_ckpt), **{n: ("sli", c) for n, c in finetuned.items()}}
    result["capacity"] = capacity_by_depth(models, items, log=log)
    sid = sid_probe_set(24, 10)
    result["similarity"] = similarity({"lc": lc_ckpt, "tiny_hubert": tiny_ckpt, **finetuned}, [w for w, _, _ in sid[::3]])
    result["inference_s_10s_audio"] = {n: inference_times(c) for n, c in
                                       (("lc_sli", lc_ckpt), ("tiny_backward", tiny_ckpt))}
    corpus = prepare_corpus(TrainConfig(seed=0), data_dir or out / "data", log=log)
    result["masked_prediction_by_depth"] = masked_accuracy_by_depth({"lc": lc_ckpt, "tiny_hubert": tiny_ckpt, **finetuned},
                                                                    corpus)
    result["train_step"] = train_step_times(corpus)
    result["seconds"] = round(time.time() - t0, 1)
    atomic_write_text(out / "layer_consistency.json", json.dumps(result, indent=1, default=str))
    plot_capacity(result["capacity"], result["masked_prediction_by_depth"], result["inference_s_10s_audio"],
                  out / "lc_capacity.png")
    plot_similarity(result["similarity"], out / "lc_similarity.png")
    return result


def ks_comparison(superb_out, pairs: List[str], resamples: int = 10_000) -> Dict[str, Any]:
    """KS test accuracy (Wilson 95%) of every finished run under the ``s3prl-redundancy superb`` folder
    ``superb_out``, and for each ``"A/B"`` of ``pairs`` the capacity A keeps of B and the difference A - B in
    points, paired bootstrap over the same test clips (:func:`~s3prl_redundancy.superb.intervals.paired_capacity`)."""
    from ..superb.intervals import paired_capacity, wilson_interval
    from ..superb.runs import STATUS_FINISHED, run_records
    from ..superb.uncertainty import run_items

    items = {}
    for run_dir, record in run_records(superb_out):
        if record.get("task") == "ks" and record.get("status") == STATUS_FINISHED:
            found = run_items("ks", dict(record, _run_dir=str(run_dir)))
            if found is not None:
                items[record["upstream"]] = found
    out: Dict[str, Any] = {"test_clips": len(next(iter(items.values()))) if items else 0, "accuracy_percent": {},
                           "paired": {}}
    for name, it in sorted(items.items()):
        ci = wilson_interval(int(it.numer.sum()), len(it))
        out["accuracy_percent"][name] = [round(100 * v, 2) for v in (ci.point, ci.low, ci.high)]
    for pair in pairs:
        a, b = pair.split("/")
        cap = paired_capacity(items[b], items[a], resamples=resamples)
        out["paired"][pair] = {"kept": [round(v, 3) for v in (cap.point, cap.low, cap.high)],
                               "difference_points": [round(v, 2) for v in (cap.difference.point, cap.difference.low,
                                                                           cap.difference.high)],
                               "verdict": cap.verdict}
    return out


KS_SERIES = {"lc": "lc_sli", "std": "tiny_backward", "ft": "tiny_lc_finetuned", "mp": "tiny_lc_finetuned_mp"}


def plot_ks(ks: Dict[str, Any], path) -> None:
    """KS test accuracy (Wilson 95%) against the layers run, one series per model; run names ``<model>_d<k>``
    (``KS_SERIES`` maps the model part to the labels of the other figures)."""
    import re

    import matplotlib

    from ..io import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[str, List[Dict[str, Any]]] = {}
    for name, (acc, low, high) in sorted(ks["accuracy_percent"].items()):
        found = re.fullmatch(r"(.+)_d(\d+)", name)
        if found:
            key = KS_SERIES.get(found.group(1), found.group(1))
            series.setdefault(key, []).append({"depth": int(found.group(2)), "acc": acc, "low": low, "high": high})
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=90)
    _errorbar_series(ax, {k: sorted(v, key=lambda r: r["depth"]) for k, v in series.items()}, "acc")
    ax.set_xticks(sorted({r["depth"] for rows in series.values() for r in rows}))
    ax.set_ylabel("KS test accuracy, % (run_downstream)")
    ax.set_title(f"SUPERB KS through s3prl's run_downstream, {ks['test_clips']} test clips", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="measurements of docs/layer_consistency.md")
    sub = parser.add_subparsers(dest="what", required=True)
    clips = sub.add_parser("clips", help="write tiny_hubert's pretraining clips as wav files (lc-finetune --data)")
    clips.add_argument("--out", required=True)
    clips.add_argument("--data-dir", required=True, help="pretrain-tiny's speech cache (built there if absent)")
    clips.add_argument("--clips", type=int, default=800)
    rep = sub.add_parser("report", help="capacity, similarity, parameters and time")
    rep.add_argument("--lc", required=True, help="layer-consistent checkpoint (pretrain-tiny --share-layers)")
    rep.add_argument("--finetuned", required=True, help="lc-finetune output of tiny_hubert (self-distillation)")
    rep.add_argument("--finetuned-mp", help="lc-finetune output of tiny_hubert with --targets (masked prediction too)")
    rep.add_argument("--tiny", required=True, help="the standard tiny_hubert checkpoint")
    rep.add_argument("--out", required=True, help="folder for layer_consistency.json and the figures")
    rep.add_argument("--ks-voices", type=int, default=40)
    rep.add_argument("--data-dir", help="pretrain-tiny's speech cache (e.g. RUN/data; default OUT/data, built if absent)")
    ks = sub.add_parser("ks", help="KS accuracy and paired capacity of the runs of an `s3prl-redundancy superb` folder")
    ks.add_argument("--superb", required=True, help="the superb --out folder")
    ks.add_argument("--pairs", default="", help="comma-separated A/B: capacity A keeps of B, and A - B")
    ks.add_argument("--out", help="write the result as JSON here, and its plot next to it (default: print it)")
    args = parser.parse_args(argv)
    if args.what == "clips":
        print(f"targets (k-means centres, lc-finetune --targets): {write_clips(args.out, args.data_dir, args.clips)}")
    elif args.what == "ks":
        result = ks_comparison(args.superb, [p for p in args.pairs.split(",") if p])
        if args.out:
            atomic_write_text(args.out, json.dumps(result, indent=1))
            plot_ks(result, Path(args.out).with_suffix(".png"))
        else:
            print(json.dumps(result, indent=1))
    else:
        finetuned = {"tiny_lc_finetuned": args.finetuned}
        if args.finetuned_mp:
            finetuned["tiny_lc_finetuned_mp"] = args.finetuned_mp
        report(args.lc, finetuned, args.tiny, args.out, args.ks_voices, args.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
