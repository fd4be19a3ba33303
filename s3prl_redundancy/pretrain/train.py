"""The ``tiny_hubert`` pretraining loop: deterministic for a seed, checkpointed, resumable.

Every source of randomness is a function of ``(seed, step)``: the batch (clips and crop offsets) is
drawn from ``numpy.random.default_rng([seed, step])`` and the mask from ``SeedSequence([seed, step, 1])``;
the model has no dropout. So a run resumed from ``train_state.pt`` produces exactly the losses of an
uninterrupted run (same device and thread count), and two runs with the same seed are identical.

Layer consistency (``share_layers``, ``depth_range``; arXiv 2105.00812, ``docs/layer_consistency.md``): the
layers share G weight blocks and the depth of step ``s`` is ``sample_depth(seed, s, depth_range)`` (stream
``[seed, step, 3]``), the loss taken after that layer through the exit norm; the export is expanded to an
ordinary ``hubert_local`` checkpoint with the compact form and the configuration as extra keys.

Files in ``out``: ``train_state.pt`` (model, optimiser, step, history; atomic), ``tiny_hubert.pt`` (the
model in s3prl's ``hubert_local`` format, fp16, written at every checkpoint), ``history.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import UserInputError
from ..io import OutputDir, atomic_path
from ..layer_consistency import sample_depth
from . import model as M
from .data import DataConfig, load_or_build
from .targets import HOP, WINDOW, build_targets, num_frames

STATE = "train_state.pt"
EXPORT = "tiny_hubert.pt"
HISTORY = "history.json"
CURVE = "loss_curve.png"  # written by the command (``plot_history``)
DATA = "data"  # the default cache of the synthetic speech and its targets
OUTPUTS = (STATE, EXPORT, HISTORY, CURVE, DATA)
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
    # layer consistency (arXiv 2105.00812): G shared weight blocks (1 = all layers share one; None = no
    # sharing) and the range [lo, hi] the depth of every step is drawn from (None = always the full depth)
    share_layers: Optional[int] = None
    depth_range: Optional[Tuple[int, int]] = None
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
        for k in ("share_layers", "depth_range"):  # absent when unused: runs from before these options resume
            if d[k] is None:
                d.pop(k)
        return d

    def layer_consistency(self) -> Optional[dict]:
        """The sharing / depth-sampling configuration recorded in the export (``None`` for a standard run)."""
        if self.share_layers is None and self.depth_range is None:
            return None
        return {"share_layers": self.share_layers,
                "depth_range": None if self.depth_range is None else list(self.depth_range),
                "method": "layer consistency, arXiv 2105.00812"}


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


def targets_path(cfg: TrainConfig, data_dir) -> Path:
    """Where :func:`prepare_corpus` caches the k-means targets (labels, offsets, centres) of ``cfg``."""
    if cfg.targets_from is not None:
        kind = f"_it2_{cfg.targets_sha[:16]}_L{cfg.target_layer}"
    else:
        kind = "" if cfg.mfcc_cmn else "_nocmn"
    return Path(data_dir) / f"targets_{cfg.data.key()}_k{cfg.n_clusters}_s{cfg.seed}{kind}.npz"


def prepare_corpus(cfg: TrainConfig, data_dir, log=print) -> Corpus:
    """Synthesise (or load) the speech and compute (or load) its k-means targets, cached in ``data_dir``."""
    data_dir = Path(data_dir)
    wavs, meta = load_or_build(cfg.data, data_dir, log=log)
    tpath = targets_path(cfg, data_dir)
    if tpath.exists():
        with np.load(tpath, allow_pickle=False) as z:
            flat, offsets = z["labels"], z["offsets"]
        labels = [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    else:
        t0 = time.time()
        # k-means is fitted on the training clips only; validation clips are labelled with the same centres
        n_train = len(wavs) - min(N_VALIDATION, len(wavs) // 4)
        from .targets import assign, fit_kmeans, mfcc_labels, model_layer_features

        if cfg.targets_from is not None:
            log(f"HuBERT iteration 2: hidden state {cfg.target_layer} of {cfg.targets_from} on {len(wavs)} clips")
            feats = model_layer_features(cfg.targets_from, wavs, cfg.target_layer, log=log)
            km = fit_kmeans(feats[:n_train], cfg.n_clusters, cfg.seed)
            labels = [assign(km, f) for f in feats]
            centres = km.cluster_centers_.astype(np.float32)
        else:
            train_labels, centres = build_targets(wavs[:n_train], cfg.n_clusters, cfg.seed, cmn=cfg.mfcc_cmn)
            labels = train_labels + mfcc_labels(wavs[n_train:], centres, cmn=cfg.mfcc_cmn)
        offsets = np.cumsum([0] + [len(l) for l in labels]).astype(np.int64)
        with atomic_path(tpath) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, labels=np.concatenate(labels), offsets=offsets, centres=centres)
        log(f"MFCC + k-means (K={cfg.n_clusters}) in {time.time() - t0:.1f} s -> {tpath}")
    return Corpus(wavs, labels)


def _device_setup(device: str):
    import torch

    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError("cuda was asked for but torch.cuda.is_available() is False; use cpu", argument="device")
        torch.backends.cuda.matmul.allow_tf32 = True
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device != "cpu":
        raise UserInputError(f"must be cpu or cuda, got {device!r}", argument="device")
    return torch.device("cpu"), None


def evaluate(model, corpus: Corpus, seed: int, device, autocast_dtype=None, max_seconds: float = 4.0,
             depth: Optional[int] = None) -> Dict[str, float]:
    """Masked / unmasked accuracy and CE on the validation clips (fixed masks), frame-weighted; predicted
    from the output of the first ``depth`` layers through the exit norm (all layers if ``None``)."""
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
            _, stats = M.masked_prediction(model, wav, lab, mask, autocast_dtype, depth=depth)
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
            "val_ce_unmasked": sums["ce_unmasked"] / max(1, n_u), "val_acc_unmasked": sums["acc_unmasked"] / max(1, n_u),
            "val_masked_frames": int(n_m)}


def _calibrate(cfg: TrainConfig, corpus: Corpus, device, autocast_dtype, steps: int = 6) -> float:
    """Seconds per training step, measured on a throw-away copy of the model (for ``minutes``)."""
    import torch

    model, _ = M.build_model(cfg.seed, cfg.model_cfg, cfg.n_clusters, cfg.share_layers)
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
    depth = None if cfg.depth_range is None else sample_depth(cfg.seed, step, cfg.depth_range)
    loss, stats = M.masked_prediction(model, torch.as_tensor(wav).to(device), torch.as_tensor(lab).to(device), mask,
                                      autocast_dtype, depth=depth)
    if depth is not None:
        stats["depth"] = depth
    opt.zero_grad(set_to_none=True)
    loss.backward()
    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm))
    opt.step()
    return stats


def output_dir(out, resume: bool, force: bool) -> OutputDir:
    """``out`` under the project's output policy (command ``pretrain-tiny``), checked before any work."""
    folder = OutputDir(out, "pretrain-tiny", force=force, resume=resume, argument="out")
    return folder.check(outputs=OUTPUTS, resume_file=STATE)


def _check_targets_model(cfg: TrainConfig) -> None:
    """``targets_from`` is a HuBERT checkpoint with a hidden state ``target_layer`` (0..layers), checked
    before the speech is synthesised (errors name `ckpt`: the command maps it to its flag)."""
    from ..checkpoints import load_family_checkpoint

    family, ckpt = load_family_checkpoint(cfg.targets_from, expected_family="hubert")
    layers = family.num_layers(ckpt)
    if not 0 <= cfg.target_layer <= layers:
        raise UserInputError(f"{cfg.target_layer}: the model of `targets_from` has hidden states 0..{layers} "
                             f"(0 = the transformer input, {layers} = the last layer)", argument="target_layer")


def _check_config(cfg: TrainConfig, resume: bool) -> TrainConfig:
    """The settings, before any work; fills ``targets_sha`` (the hash of ``targets_from``)."""
    if cfg.steps is None and cfg.minutes is None and not resume:
        raise UserInputError("give `steps` or `minutes`", argument="steps")
    n_layers = int((cfg.model_cfg or M.MODEL_CFG)["encoder_layers"])
    if cfg.share_layers is not None and not 1 <= cfg.share_layers <= n_layers:
        raise UserInputError(f"must be between 1 and the {n_layers} layers, got {cfg.share_layers}", argument="share_layers")
    if cfg.depth_range is not None and not 1 <= cfg.depth_range[0] <= cfg.depth_range[1] <= n_layers:
        raise UserInputError(f"must satisfy 1 <= lo <= hi <= {n_layers}, got {cfg.depth_range}", argument="depth_range")
    if cfg.targets_from is not None and cfg.targets_sha is None:
        import dataclasses
        import hashlib

        if not Path(cfg.targets_from).is_file():
            raise UserInputError(f"no such file: {cfg.targets_from}", argument="targets_from")
        _check_targets_model(cfg)
        cfg = dataclasses.replace(cfg, targets_sha=hashlib.sha256(Path(cfg.targets_from).read_bytes()).hexdigest())
    return cfg


_STATE_KEYS = ("identity", "model", "optimizer", "step", "total_steps", "seconds", "history", "evals")


def read_state(cfg: TrainConfig, state_path: Path) -> Dict[str, Any]:
    """``train_state.pt``, checked against ``cfg`` (the same configuration, the same step budget) before any
    data is synthesised: a bad file is refused in a second, not after the corpus is built."""
    from ..checkpoints import load_checkpoint

    state = load_checkpoint(state_path, what="training state", argument="resume")
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserInputError(f"{state_path} is not a pretrain-tiny training state (no {', '.join(missing)}); run it "
                             "`resume=False` with `force=True` to start over", argument="resume")
    if state["identity"] != json.loads(json.dumps(cfg.identity())):
        raise UserInputError(f"{state_path} was written with a different configuration (seed, data, batch, "
                             "model); use the same options, or run it `resume=False` with `force=True` to start "
                             "over", argument="resume")
    if cfg.steps is not None and cfg.steps != int(state["total_steps"]):
        raise UserInputError(f"the run was planned for {int(state['total_steps'])} steps (its learning-rate schedule); "
                             f"got `steps={cfg.steps}`. Leave out `steps` / `minutes` when resuming", argument="resume")
    return state


class _Run:
    """The mutable state of one training run: model, optimiser, step counters, history; and how to save it."""

    def __init__(self, cfg: TrainConfig, output: OutputDir, dev, autocast_dtype):
        import torch

        self.cfg, self.output, self.dev, self.autocast_dtype = cfg, output, dev, autocast_dtype
        self.model, self.model_cfg = M.build_model(cfg.seed, cfg.model_cfg, cfg.n_clusters, cfg.share_layers)
        self.model.to(dev).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.history: List[Dict] = []
        self.evals: List[Dict] = []
        self.start, self.total, self.elapsed = 0, 0, 0.0
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def identity(self) -> Dict[str, Any]:
        return json.loads(json.dumps(self.cfg.identity()))

    def load(self, state: Dict[str, Any]) -> None:
        """Continue from ``train_state.pt``, read and checked by :func:`read_state`."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.start, self.total, self.elapsed = int(state["step"]), int(state["total_steps"]), float(state["seconds"])
        self.history, self.evals = list(state["history"]), list(state["evals"])

    def save(self, step: int) -> None:
        """``train_state.pt``, the ``hubert_local`` export and ``history.json``, each atomic."""
        cfg = self.cfg
        train_state = {"identity": self.identity(), "model": self.model.state_dict(),
                       "optimizer": self.opt.state_dict(), "step": step, "total_steps": self.total,
                       "seconds": self.elapsed, "history": self.history, "evals": self.evals}
        self.output.save_torch(STATE, train_state)
        last_eval = self.evals[-1] if self.evals else {}
        extra = {"steps": step, "total_steps": self.total, "seed": cfg.seed, "train_seconds": round(self.elapsed, 1),
                 "device": self.dev.type, "parameters": self.n_params, "data_key": cfg.data.key(),
                 "val_acc_masked": last_eval.get("val_acc_masked"), "eval_step": last_eval.get("step"),
                 "n_clusters": cfg.n_clusters,
                 "targets": (f"k-means of hidden state {cfg.target_layer} of a model (sha256 {cfg.targets_sha[:16]})"
                             if cfg.targets_from else f"k-means of MFCC{'' if cfg.mfcc_cmn else ' (no mean removal)'}")}
        self.output.save_torch(EXPORT, M.hubert_local_checkpoint(self.model, self.model_cfg, cfg.n_clusters, half=True,
                                                                 extra=extra,
                                                                 layer_consistency=cfg.layer_consistency()))
        self.output.write_text(HISTORY, json.dumps({"total_steps": self.total, "step": step, "seconds": self.elapsed,
                                                    "parameters": self.n_params, "history": self.history,
                                                    "evals": self.evals}, indent=1))

    def step(self, step: int, corpus: Corpus) -> Dict:
        """One optimiser step at the scheduled learning rate; its statistics, appended to the history."""
        t0 = time.perf_counter()
        for group in self.opt.param_groups:
            group["lr"] = lr_at(step, self.total, self.cfg.lr, self.cfg.warmup_frac)
        stats = _train_step(self.model, self.opt, corpus, self.cfg, step, self.dev, self.autocast_dtype)
        self.elapsed += time.perf_counter() - t0
        stats.update(step=step, lr=self.opt.param_groups[0]["lr"], seconds=round(self.elapsed, 2))
        self.history.append(stats)
        if not math.isfinite(stats["loss"]):
            raise RuntimeError(f"the loss became {stats['loss']} at step {step}; lower `lr` or check the data")
        return stats


def _plan_steps(run: _Run, corpus: Corpus, resume: bool, log) -> None:
    """The step budget: from the checkpoint, ``steps``, or ``minutes`` over a measured step time."""
    cfg = run.cfg
    if resume:
        log(f"resuming at step {run.start}/{run.total}")
    elif cfg.steps is not None:
        run.total = int(cfg.steps)
    else:
        sps = _calibrate(cfg, corpus, run.dev, run.autocast_dtype)
        run.total = max(10, int(cfg.minutes * 60 / sps))
        log(f"{sps:.3f} s/step measured: {cfg.minutes} min -> {run.total} steps")
    if run.total < 1:
        raise UserInputError(f"must be positive, got {run.total}", argument="steps")


def _log_progress(run: _Run, done: int, t_log: float, log) -> None:
    recent = run.history[-run.cfg.log_every:]
    log(json.dumps({"step": done, "of": run.total, "loss": round(float(np.mean([h["loss"] for h in recent])), 4),
                    "acc_masked": round(float(np.mean([h["acc_masked"] for h in recent])), 4),
                    "s_per_step": round((time.time() - t_log) / len(recent), 3), "elapsed_s": round(run.elapsed)}))


def _loop(run: _Run, corpus: Corpus, end: int, log) -> None:
    """Steps ``run.start .. end - 1``: log, evaluate and checkpoint when due (and every 5 minutes)."""
    cfg = run.cfg
    last_save = t_log = time.time()
    for step in range(run.start, end):
        run.step(step, corpus)
        done = step + 1
        if done % cfg.log_every == 0 or done == end:
            _log_progress(run, done, t_log, log)
            t_log = time.time()
        if done % cfg.eval_every == 0 or done == end:
            ev = evaluate(run.model, corpus, cfg.seed, run.dev, run.autocast_dtype)
            ev["step"] = done
            run.evals.append(ev)
            log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in ev.items()}))
        if done % cfg.checkpoint_every == 0 or done == end or time.time() - last_save > 300:
            run.save(done)
            last_save = time.time()
    if run.start >= end:
        run.save(run.start)


def train(cfg: TrainConfig, out, data_dir=None, device: str = "cpu", resume: bool = False, force: bool = False,
          stop_after: Optional[int] = None, log: Callable[[str], None] = print) -> Dict:
    """Train (or resume) into ``out``; returns the final state summary.

    ``out`` follows :class:`~s3prl_redundancy.io.OutputDir` (command ``pretrain-tiny``); ``force`` deletes
    what an earlier run wrote there, the default speech cache ``out/data`` included (give ``data_dir`` to
    keep a cache across runs). ``stop_after``: return after that many steps in total (the schedule still
    spans ``cfg.steps``), as an interrupted run would; used to test ``resume``.
    """
    output = output_dir(out, resume, force)
    cfg = _check_config(cfg, resume)
    state = read_state(cfg, output.path / STATE) if resume else None
    dev, autocast_dtype = _device_setup(device)
    output.prepare()
    output.record(CURVE)  # plotted by the command once training returns
    if data_dir is None:
        data_dir = output.file(DATA)
    corpus = prepare_corpus(cfg, data_dir, log=log)
    run = _Run(cfg, output, dev, autocast_dtype)
    if state is not None:
        run.load(state)
    _plan_steps(run, corpus, resume, log)
    end = run.total if stop_after is None else min(run.total, stop_after)
    _loop(run, corpus, end, log)
    return {"step": end, "total_steps": run.total, "seconds": run.elapsed, "history": run.history, "evals": run.evals,
            "parameters": run.n_params, "state": str(output.path / STATE), "checkpoint": str(output.path / EXPORT),
            "targets_sha": cfg.targets_sha}
