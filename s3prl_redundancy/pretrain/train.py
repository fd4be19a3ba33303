"""The ``tiny_hubert`` pretraining loop: deterministic for a seed, checkpointed, resumable.

Every source of randomness is a function of ``(seed, step)``: the batch (clips and crop offsets) is
drawn from ``numpy.random.default_rng([seed, step])`` and the mask from ``SeedSequence([seed, step, 1])``;
the model has no dropout. So a run resumed from ``train_state.pt`` produces exactly the losses of an
uninterrupted run (same device and thread count), and two runs with the same seed are identical.

Files in ``out``: ``train_state.pt`` (model, optimiser, step, history; atomic), ``tiny_hubert.pt`` (the
model in s3prl's ``hubert_local`` format, fp16, written at every checkpoint), ``history.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..io import atomic_torch_save
from ..errors import UserInputError
from . import model as M
from .data import DataConfig, load_or_build
from .targets import HOP, WINDOW, build_targets, num_frames

STATE = "train_state.pt"
EXPORT = "tiny_hubert.pt"
HISTORY = "history.json"
N_VALIDATION = 64


@dataclass
class TrainConfig:
    seed: int = 0
    steps: Optional[int] = None
    minutes: Optional[float] = None
    batch_size: int = 8
    crop_seconds: float = 3.0
    lr: float = 1e-3
    warmup_frac: float = 0.05
    weight_decay: float = 0.01
    clip_norm: float = 10.0
    n_clusters: int = M.N_CLUSTERS
    mfcc_cmn: bool = True  # remove the per-utterance mean of the MFCCs before k-means
    # HuBERT iteration 2: k-means on hidden state `target_layer` of this checkpoint instead of MFCCs;
    # `targets_sha` is the sha256 of its bytes (part of the run identity and of the targets' cache name)
    targets_from: Optional[str] = None
    target_layer: int = 3
    targets_sha: Optional[str] = None
    checkpoint_every: int = 100
    eval_every: int = 250
    log_every: int = 25
    data: DataConfig = field(default_factory=DataConfig)
    model_cfg: Optional[dict] = None

    def identity(self) -> dict:
        """The fields a resumed run must share with the original one."""
        d = asdict(self)
        for k in ("steps", "minutes", "checkpoint_every", "eval_every", "log_every", "targets_from"):
            d.pop(k)
        return d


def lr_at(step: int, total: int, peak: float, warmup_frac: float) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to 0."""
    warm = max(1, int(round(total * warmup_frac)))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Corpus:
    """Waveforms + aligned cluster labels; the last :data:`N_VALIDATION` clips are held out for validation."""

    def __init__(self, wavs: List[np.ndarray], labels: List[np.ndarray], n_validation: int = N_VALIDATION):
        if len(wavs) != len(labels):
            raise ValueError("one label sequence per waveform is needed")
        for w, l in zip(wavs, labels):
            if num_frames(len(w)) != len(l):
                raise ValueError(f"labels of length {len(l)} do not match a {len(w)}-sample clip ({num_frames(len(w))} frames)")
        n_validation = min(n_validation, len(wavs) // 4)
        self.train_wavs, self.train_labels = wavs[: len(wavs) - n_validation], labels[: len(wavs) - n_validation]
        self.val_wavs, self.val_labels = wavs[len(wavs) - n_validation :], labels[len(wavs) - n_validation :]

    def batch(self, seed: int, step: int, batch_size: int, crop_samples: int):
        """(wav (B, S) float32, labels (B, T) int64) for ``step``: random clips, one common crop length."""
        rng = np.random.default_rng([seed, step])
        n = len(self.train_wavs)
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        crop = min(crop_samples, min(len(self.train_wavs[i]) for i in idx))
        crop = WINDOW + HOP * ((crop - WINDOW) // HOP)
        frames = num_frames(crop)
        wav = np.empty((len(idx), crop), np.float32)
        lab = np.empty((len(idx), frames), np.int64)
        for row, i in enumerate(idx):
            off = int(rng.integers(0, (len(self.train_wavs[i]) - crop) // HOP + 1))
            wav[row] = self.train_wavs[i][off * HOP : off * HOP + crop]
            lab[row] = self.train_labels[i][off : off + frames]
        return wav, lab


def prepare_corpus(cfg: TrainConfig, data_dir, log=print) -> Corpus:
    """Synthesise (or load) the speech and compute (or load) its k-means targets, cached in ``data_dir``."""
    data_dir = Path(data_dir)
    wavs, meta = load_or_build(cfg.data, data_dir, log=log)
    if cfg.targets_from is not None:
        kind = f"_it2_{cfg.targets_sha[:16]}_L{cfg.target_layer}"
    else:
        kind = "" if cfg.mfcc_cmn else "_nocmn"
    tpath = data_dir / f"targets_{cfg.data.key()}_k{cfg.n_clusters}_s{cfg.seed}{kind}.npz"
    if tpath.exists():
        with np.load(tpath, allow_pickle=False) as z:
            flat, offsets = z["labels"], z["offsets"]
        labels = [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    else:
        t0 = time.time()
        # k-means is fitted on the training clips only; validation clips are labelled with the same centres
        n_train = len(wavs) - min(N_VALIDATION, len(wavs) // 4)
        from .targets import assign, assign_with_centres, fit_kmeans, mfcc39, model_layer_features

        if cfg.targets_from is not None:
            log(f"HuBERT iteration 2: hidden state {cfg.target_layer} of {cfg.targets_from} on {len(wavs)} clips")
            feats = model_layer_features(cfg.targets_from, wavs, cfg.target_layer, log=log)
            km = fit_kmeans(feats[:n_train], cfg.n_clusters, cfg.seed)
            labels = [assign(km, f) for f in feats]
            centres = km.cluster_centers_.astype(np.float32)
        else:
            train_labels, centres = build_targets(wavs[:n_train], cfg.n_clusters, cfg.seed, cmn=cfg.mfcc_cmn)
            labels = train_labels + [assign_with_centres(mfcc39(w, cmn=cfg.mfcc_cmn), centres) for w in wavs[n_train:]]
        offsets = np.cumsum([0] + [len(l) for l in labels]).astype(np.int64)
        tmp = tpath.with_name(f".{tpath.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.savez(fh, labels=np.concatenate(labels), offsets=offsets, centres=centres)
        os.replace(tmp, tpath)
        log(f"MFCC + k-means (K={cfg.n_clusters}) in {time.time() - t0:.1f} s -> {tpath}")
    return Corpus(wavs, labels)


def _device_setup(device: str):
    import torch

    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError("--device cuda was asked for but torch.cuda.is_available() is False; use --device cpu")
        torch.backends.cuda.matmul.allow_tf32 = True
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device != "cpu":
        raise UserInputError(f"--device must be cpu or cuda, got {device!r}")
    return torch.device("cpu"), None


def evaluate(model, corpus: Corpus, seed: int, device, autocast_dtype=None, max_seconds: float = 4.0) -> Dict[str, float]:
    """Masked / unmasked accuracy and CE on the validation clips (fixed masks), frame-weighted."""
    import torch

    model.eval()
    sums = {"ce_masked": 0.0, "acc_masked": 0.0, "ce_unmasked": 0.0, "acc_unmasked": 0.0}
    n_m = n_u = 0
    with torch.no_grad():
        for k, (w, l) in enumerate(zip(corpus.val_wavs, corpus.val_labels)):
            crop = WINDOW + HOP * ((min(len(w), int(max_seconds * 16000)) - WINDOW) // HOP)
            frames = num_frames(crop)
            mask = M.mask_indices(model, 1, frames, [seed, 10**6 + k, 2])
            wav = torch.as_tensor(w[:crop]).unsqueeze(0).to(device)
            lab = torch.as_tensor(l[:frames].astype(np.int64)).unsqueeze(0).to(device)
            _, stats = M.masked_prediction(model, wav, lab, mask, autocast_dtype)
            m = int(mask.sum())
            u = mask.size - m
            sums["ce_masked"] += stats["ce_masked"] * m
            sums["acc_masked"] += stats["acc_masked"] * m
            sums["ce_unmasked"] += stats["ce_unmasked"] * u
            sums["acc_unmasked"] += stats["acc_unmasked"] * u
            n_m += m
            n_u += u
    model.train()
    return {"val_ce_masked": sums["ce_masked"] / max(1, n_m), "val_acc_masked": sums["acc_masked"] / max(1, n_m),
            "val_ce_unmasked": sums["ce_unmasked"] / max(1, n_u), "val_acc_unmasked": sums["acc_unmasked"] / max(1, n_u)}


def _calibrate(cfg: TrainConfig, corpus: Corpus, device, autocast_dtype, steps: int = 6) -> float:
    """Seconds per training step, measured on a throw-away copy of the model (for ``--minutes``)."""
    import torch

    model, _ = M.build_model(cfg.seed, cfg.model_cfg, cfg.n_clusters)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr * 0.01)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        _train_step(model, opt, corpus, cfg, step, device, autocast_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:] if steps > 3 else times))


def _train_step(model, opt, corpus: Corpus, cfg: TrainConfig, step: int, device, autocast_dtype):
    import torch

    wav, lab = corpus.batch(cfg.seed, step, cfg.batch_size, int(cfg.crop_seconds * 16000))
    mask = M.mask_indices(model, wav.shape[0], lab.shape[1], [cfg.seed, step, 1])
    loss, stats = M.masked_prediction(model, torch.as_tensor(wav).to(device), torch.as_tensor(lab).to(device), mask, autocast_dtype)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm))
    opt.step()
    return stats


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def train(cfg: TrainConfig, out, data_dir=None, device: str = "cpu", resume: bool = False, force: bool = False,
          stop_after: Optional[int] = None, log: Callable[[str], None] = print) -> Dict:
    """Train (or resume) into ``out``; returns the final state summary.

    ``stop_after``: return after that many steps in total (the schedule still spans ``cfg.steps``),
    as an interrupted run would; used to test ``resume``.
    """
    import torch

    out = Path(out)
    state_path = out / STATE
    if state_path.exists() and not (resume or force):
        raise UserInputError(f"{state_path} exists: pass --resume to continue that run or --force to start over")
    if resume and not state_path.exists():
        raise UserInputError(f"--resume: no {STATE} in {out}; run without --resume to start a new run")
    if cfg.steps is None and cfg.minutes is None and not resume:
        raise UserInputError("give --steps N or --minutes M")
    if cfg.targets_from is not None and cfg.targets_sha is None:
        import dataclasses
        import hashlib

        if not Path(cfg.targets_from).is_file():
            raise UserInputError(f"--targets-from: no such file: {cfg.targets_from}")
        cfg = dataclasses.replace(cfg, targets_sha=hashlib.sha256(Path(cfg.targets_from).read_bytes()).hexdigest())
    out.mkdir(parents=True, exist_ok=True)
    dev, autocast_dtype = _device_setup(device)
    corpus = prepare_corpus(cfg, data_dir if data_dir is not None else out / "data", log=log)

    model, model_cfg = M.build_model(cfg.seed, cfg.model_cfg, cfg.n_clusters)
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: List[Dict] = []
    evals: List[Dict] = []
    start, elapsed = 0, 0.0
    if resume and not force:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["identity"] != json.loads(json.dumps(cfg.identity())):
            raise UserInputError(f"--resume: {state_path} was written with a different configuration "
                                 f"(seed, data, batch, model); use the same options or --force to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, total, elapsed = int(state["step"]), int(state["total_steps"]), float(state["seconds"])
        history, evals = list(state["history"]), list(state["evals"])
        if cfg.steps is not None and cfg.steps != total:
            raise UserInputError(f"--resume: the run was planned for {total} steps (its learning-rate schedule); "
                                 f"got --steps {cfg.steps}. Drop --steps/--minutes when resuming")
        log(f"resuming at step {start}/{total}")
    elif cfg.steps is not None:
        total = int(cfg.steps)
    else:
        sps = _calibrate(cfg, corpus, dev, autocast_dtype)
        total = max(10, int(cfg.minutes * 60 / sps))
        log(f"{sps:.3f} s/step measured: {cfg.minutes} min -> {total} steps")
    if total < 1:
        raise UserInputError(f"--steps must be positive, got {total}")

    n_params = sum(p.numel() for p in model.parameters())

    def save(step: int):
        train_state = {"identity": json.loads(json.dumps(cfg.identity())), "model": model.state_dict(),
                       "optimizer": opt.state_dict(), "step": step, "total_steps": total, "seconds": elapsed,
                       "history": history, "evals": evals}
        atomic_torch_save(train_state, state_path)
        last_eval = evals[-1] if evals else {}
        extra = {"steps": step, "total_steps": total, "seed": cfg.seed, "train_seconds": round(elapsed, 1),
                 "device": dev.type, "parameters": n_params, "data_key": cfg.data.key(),
                 "val_acc_masked": last_eval.get("val_acc_masked"), "eval_step": last_eval.get("step"),
                 "n_clusters": cfg.n_clusters,
                 "targets": (f"k-means of hidden state {cfg.target_layer} of a model (sha256 {cfg.targets_sha[:16]})"
                             if cfg.targets_from else f"k-means of MFCC{'' if cfg.mfcc_cmn else ' (no mean removal)'}")}
        atomic_torch_save(M.hubert_local_checkpoint(model, model_cfg, cfg.n_clusters, half=True, extra=extra), out / EXPORT)
        _write_json(out / HISTORY, {"total_steps": total, "step": step, "seconds": elapsed, "parameters": n_params,
                                    "history": history, "evals": evals})

    end = total if stop_after is None else min(total, stop_after)
    last_save = time.time()
    t_log = time.time()
    for step in range(start, end):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_frac)
        stats = _train_step(model, opt, corpus, cfg, step, dev, autocast_dtype)
        elapsed += time.perf_counter() - t0
        stats.update(step=step, lr=opt.param_groups[0]["lr"], seconds=round(elapsed, 2))
        history.append(stats)
        if not math.isfinite(stats["loss"]):
            raise RuntimeError(f"the loss became {stats['loss']} at step {step}; lower --lr or check the data")
        done = step + 1
        if done % cfg.log_every == 0 or done == end:
            recent = history[-cfg.log_every:]
            log(json.dumps({"step": done, "of": total, "loss": round(float(np.mean([h["loss"] for h in recent])), 4),
                            "acc_masked": round(float(np.mean([h["acc_masked"] for h in recent])), 4),
                            "s_per_step": round((time.time() - t_log) / len(recent), 3), "elapsed_s": round(elapsed)}))
            t_log = time.time()
        if done % cfg.eval_every == 0 or done == end:
            ev = evaluate(model, corpus, cfg.seed, dev, autocast_dtype)
            ev["step"] = done
            evals.append(ev)
            log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in ev.items()}))
        if done % cfg.checkpoint_every == 0 or done == end or time.time() - last_save > 300:
            save(done)
            last_save = time.time()
    if start >= end:
        save(start)
    return {"step": end, "total_steps": total, "seconds": elapsed, "history": history, "evals": evals,
            "parameters": n_params, "state": str(state_path), "checkpoint": str(out / EXPORT), "targets_sha": cfg.targets_sha}
