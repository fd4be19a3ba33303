"""Evaluate a ``tiny_hubert`` checkpoint against a random init of the same architecture.

- keyword probe: the 10 command words x held-out voices (1 s clips), test voices unseen by the probe;
- speaker probe: held-out voices as speakers, test sentences unseen by the probe;
- both per hidden state (:mod:`s3prl_redundancy.probes`) with two poolings over time, ``mean`` (the
  probe's default) and ``mean+std`` (statistics pooling, the x-vector standard for speaker ID), the same
  for the trained and the random model; plus a pooled-MFCC (mean + std) baseline;
- layer-by-layer linear CKA on held-out frames (float64, closed form), trained and random, and the
  CKA of each layer of the trained model with the same layer of the random one.

``python -m s3prl_redundancy.pretrain.evaluate --ckpt upstreams/tiny/tiny_hubert.pt --out eval.json``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` in float64 (frames as rows)."""
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    num = np.linalg.norm(Y.T @ X) ** 2
    den = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
    return float(num / den) if den > 0 else float("nan")


def cka_matrix(layers: Sequence[np.ndarray]) -> np.ndarray:
    n = len(layers)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = linear_cka(layers[i], layers[j])
    return out


def frames_of(upstream, wavs, max_frames: int = 3000, seed: int = 0) -> List[np.ndarray]:
    """Per hidden state, (max_frames, D) frames sampled (the same frames for every layer) from ``wavs``."""
    import torch

    upstream.eval()
    per_layer = None
    with torch.no_grad():
        for w in wavs:
            hs = upstream([torch.as_tensor(np.asarray(w, np.float32))])["hidden_states"]
            if per_layer is None:
                per_layer = [[] for _ in hs]
            for li, h in enumerate(hs):
                per_layer[li].append(h[0].double().numpy())
    stacked = [np.concatenate(l) for l in per_layer]
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(stacked[0]), min(max_frames, len(stacked[0])), replace=False))
    return [s[idx] for s in stacked]


def block_summary(m: np.ndarray) -> Dict[str, float]:
    n = len(m)
    off = m[~np.eye(n, dtype=bool)]
    adjacent = [m[i, i + 1] for i in range(n - 1)]
    far = [m[i, j] for i in range(n) for j in range(n) if j - i >= 3]
    return {"offdiag_mean": float(off.mean()), "offdiag_min": float(off.min()), "adjacent_mean": float(np.mean(adjacent)),
            "distance_ge3_mean": float(np.mean(far)) if far else float("nan")}


def random_init_upstream(seed: int):
    """s3prl's HuBERT expert on a freshly initialised model of the tiny architecture (fp32)."""
    import torch

    from s3prl.upstream.hubert.expert import UpstreamExpert

    from ..io import atomic_torch_save
    from . import model as M

    model, cfg = M.build_model(seed)
    ckpt = M.hubert_local_checkpoint(model, cfg, M.N_CLUSTERS, half=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = atomic_torch_save(ckpt, Path(tmp) / "random.pt")
        return UpstreamExpert(str(path))


def mfcc_features(wavs) -> np.ndarray:
    from .targets import mfcc39

    out = []
    for w in wavs:
        f = mfcc39(np.asarray(w, np.float32))
        out.append(np.concatenate([f.mean(0), f.std(0)]))
    return np.stack(out).astype(np.float64)


def evaluate(ckpt: str, ks_voices: int = 40, sid_speakers: int = 24, sid_sentences: int = 10, seed: int = 0,
             random_seed: int = 1234, log=print) -> Dict:
    from s3prl.upstream.hubert.expert import UpstreamExpert

    from ..probes import pooled_features, probe_features
    from .data import ks_probe_set, sid_probe_set

    ks = ks_probe_set(ks_voices)
    sid = sid_probe_set(sid_speakers, sid_sentences)
    log(f"probe sets: KS {len(ks)} clips ({ks_voices} held-out voices), SID {len(sid)} clips ({sid_speakers} speakers)")
    models = {"trained": UpstreamExpert(ckpt), "random": random_init_upstream(random_seed)}
    result: Dict = {"ckpt": str(ckpt), "ks": {}, "sid": {}, "cka": {}}
    layer_frames = {}
    for name, up in models.items():
        for task, items in (("ks", ks), ("sid", sid)):
            wavs, labels, groups = zip(*items)
            stats = pooled_features(up, list(wavs), pooling="mean+std")  # [mean, std]: the mean is the first half
            mean = [f[:, : f.shape[1] // 2] for f in stats]
            result[task][name] = probe_features(mean, labels, groups, test_fraction=0.3, seed=seed)
            result[task][name + "_meanstd"] = probe_features(stats, labels, groups, test_fraction=0.3, seed=seed)
            for key in (name, name + "_meanstd"):
                log(f"{task} {key}: " + " ".join(f"{a:.3f}" for a in result[task][key]["accuracy"]))
        layer_frames[name] = frames_of(up, [w for w, _, _ in sid[::3]], seed=seed)
        m = cka_matrix(layer_frames[name])
        result["cka"][name] = {"matrix": m.round(4).tolist(), **block_summary(m)}
    result["cka"]["trained_vs_random_same_layer"] = [
        linear_cka(a, b) for a, b in zip(layer_frames["trained"], layer_frames["random"])]
    for task, items in (("ks", ks), ("sid", sid)):
        wavs, labels, groups = zip(*items)
        result[task]["mfcc_mean_std"] = probe_features([mfcc_features(wavs)], labels, groups, test_fraction=0.3, seed=seed)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--ks-voices", type=int, default=40)
    parser.add_argument("--sid-speakers", type=int, default=24)
    args = parser.parse_args(argv)
    res = evaluate(args.ckpt, ks_voices=args.ks_voices, sid_speakers=args.sid_speakers)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
