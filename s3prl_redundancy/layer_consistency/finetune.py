"""Layer-consistency fine-tuning of an unshared pretrained model (``s3prl-redundancy lc-finetune``).

The model keeps its architecture and keeps training with a *sampled exit depth*: at step ``s`` the depth
``k = sample_depth(seed, s, depth_range)`` is drawn, the model runs its first ``k`` layers and the exit
norm (:func:`~s3prl_redundancy.layer_consistency.encode_to_depth`), and that output is trained against the
*frozen original's* final output on the same frames (self-distillation):
``mse_weight * ||y_k - h||^2 / (N D) + cosine_weight * mean_frames(1 - cos(y_k, h))``. So every prefix of
``k`` layers comes to yield features like the full model's: what a shallow-layer-inference upstream
(``lc_hubert`` / ``lc_wav2vec2`` / ``lc_wavlm`` with ``depth: k``) serves. The convolutional front end is
frozen (as s3prl runs it); where the family normalises waveforms, both models see them normalised.

Where targets exist (``targets``: the k-means centres of MFCC frames a HuBERT model was pretrained against,
e.g. ``pretrain-tiny``'s ``targets_*.npz``), the masked-prediction loss is added at the sampled depth, as in
the layer-consistent pretraining: the student's encoder input is masked with HuBERT's span mask, its
depth-k output (exit norm) goes through the model's own prediction head, and
``mp_weight * CE(masked frames)`` joins the distillation loss (taken on all frames, masked ones included,
against the frozen original on the unmasked input).

Determinism: the batch (utterances and crop offsets) and the depth are functions of ``(seed, step)``; the
crop length is common to the global batch, so there is no padding and a batch split over ranks computes
the same frames. ``train_state.pt`` holds model, optimiser, RNG states, step and history: a run stopped
(``stop_after``, or killed after a checkpoint) and resumed gives the identical loss curve. Under
``torchrun`` each rank takes its share of every global batch and the gradients are summed over ranks
(:func:`~s3prl_redundancy.distributed.all_reduce_sum` semantics, tensor by tensor): the ranks train the
same model as one process with the same global batch.

The training audio is held in memory (bound it with ``max_utterances`` / ``max_seconds``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .. import distributed
from ..errors import UserInputError
from ..families import FAMILIES
from ..io import OutputDir
from ..pretrain.model import apply_mask
from ..pretrain.targets import HOP, WINDOW, num_frames
from . import META_KEY, encode_to_depth, parse_depth_range, sample_depth, transformer_input
from .sli import sli_entry

COMMAND = "lc-finetune"
STATE = "train_state.pt"
# the fine-tuned checkpoint, in the family's s3prl local format, named after the SLI entry that serves it
EXPORTS = {name: f"{sli_entry(name)}.pt" for name in FAMILIES}  # lc_hubert.pt, lc_wav2vec2.pt, lc_wavlm.pt
HISTORY = "history.json"
MANIFEST = "manifest.json"
CURVE = "loss_curve.png"
OUTPUTS = (STATE, *EXPORTS.values(), HISTORY, MANIFEST, CURVE)
STATE_FORMAT = "s3prl_redundancy.lc_finetune_state"
# set on the student and the teacher when the family layer-normalises each waveform before the CNN, as
# s3prl's expert does (HuBERT / wav2vec 2.0: the task config; WavLM: the model config)
NORMALIZE_ATTR = "lc_normalize_waveform"


@dataclass
class LCFinetuneConfig:
    upstream: str
    data: str
    out: str
    ckpt: Optional[str] = None
    steps: int = 200
    batch_size: int = 8
    crop_seconds: float = 2.0
    lr: float = 1e-4
    weight_decay: float = 0.0
    clip_norm: float = 10.0
    depth_range: Optional[Sequence[int]] = None  # None: 1 .. all layers
    mse_weight: float = 1.0
    cosine_weight: float = 1.0
    targets: Optional[str] = None  # k-means centres of MFCC frames: adds the masked-prediction loss
    mp_weight: float = 1.0  # its weight (with `targets`)
    seed: int = 0
    heldout: Optional[int] = None  # None: 10% of the utterances (1..100) when there are at least 2
    max_utterances: Optional[int] = None
    max_seconds: Optional[float] = None
    save_every: int = 50
    stop_after: Optional[int] = None
    resume: bool = False
    force: bool = False
    device: str = "cpu"
    progress: bool = True

    # what must match for `resume` (steps may not change either: it is checked against the state)
    RESUME_KEYS = ("upstream", "batch_size", "crop_seconds", "lr", "weight_decay", "clip_norm", "mse_weight",
                   "cosine_weight", "targets", "mp_weight", "seed", "heldout", "max_utterances", "max_seconds")


def check_config(cfg: LCFinetuneConfig, world_size: int) -> None:
    """The numeric settings, before anything is loaded."""
    for name in ("steps", "batch_size", "save_every"):
        if int(getattr(cfg, name)) < 1:
            raise UserInputError(f"must be at least 1, got {getattr(cfg, name)}", argument=name)
    if cfg.stop_after is not None and cfg.stop_after < 1:
        raise UserInputError(f"must be at least 1, got {cfg.stop_after}", argument="stop_after")
    if cfg.lr <= 0 or cfg.crop_seconds <= 0:
        bad = "lr" if cfg.lr <= 0 else "crop_seconds"
        raise UserInputError(f"must be positive, got {getattr(cfg, bad)}", argument=bad)
    if cfg.mse_weight < 0 or cfg.cosine_weight < 0 or cfg.mse_weight + cfg.cosine_weight == 0:
        raise UserInputError("the loss weights must be non-negative and not both 0, got "
                             f"`mse_weight={cfg.mse_weight}`, `cosine_weight={cfg.cosine_weight}`", argument="mse_weight")
    if cfg.mp_weight < 0:
        raise UserInputError(f"must be non-negative, got {cfg.mp_weight}", argument="mp_weight")
    if cfg.batch_size < world_size:
        raise UserInputError(f"{cfg.batch_size} is the global batch; it must be at least the number of processes "
                             f"({world_size})", argument="batch_size")
    if cfg.device not in ("cpu", "cuda"):
        raise UserInputError(f"{cfg.device!r}: use cpu or cuda", argument="device")


def resolve_model(upstream: str, ckpt: Optional[str]):
    """The checkpoint to fine-tune: ``(TeacherSource, num_layers)``. HuBERT, wav2vec 2.0 or WavLM (the result
    is written in the family's s3prl local format); not a wav2vec 2.0 whose layers or front end differ from
    the standard transformer (:meth:`~s3prl_redundancy.families.Family.check_standard_model`)."""
    from ..distill.teacher import resolve_teacher

    try:
        source = resolve_teacher(upstream, ckpt)
    except UserInputError as e:
        message = e.message.replace("unknown teacher", "unknown upstream").replace("`teacher=", "`upstream=")
        raise UserInputError(message, argument=e.argument if e.argument != "teacher" else "upstream") from None
    try:
        source.family.check_standard_model(source.checkpoint)
    except UserInputError as e:
        raise UserInputError(f"{source.source}: {e.message}", argument="ckpt" if ckpt else "upstream") from None
    return source, source.family.num_layers(source.checkpoint)


def distill_loss(pred, target, frames_global: float, mse_weight: float, cosine_weight: float):
    """``(loss, mse, cos)``: this rank's share of the global loss (its sum over ranks is the global loss)."""
    import torch.nn.functional as F

    p, t = pred.float().reshape(-1, pred.shape[-1]), target.float().reshape(-1, target.shape[-1])
    mse = (p - t).pow(2).sum() / (frames_global * p.shape[-1])
    cos = (1.0 - F.cosine_similarity(p, t, dim=-1)).sum() / frames_global
    return mse_weight * mse + cosine_weight * cos, mse, cos


def waveform_input(model, wav):
    """``wav`` (B, S) as s3prl's expert feeds it to the CNN: each row layer-normalised when ``model`` is marked
    so (:data:`NORMALIZE_ATTR`, set by :class:`LCFinetuner`); a row is one unpadded utterance or crop, which
    the expert would normalise on its own. Every forward of the fine-tuning starts here."""
    import torch.nn.functional as F

    return F.layer_norm(wav, wav.shape[-1:]) if getattr(model, NORMALIZE_ATTR, False) else wav


def encoder_input(model, wav):
    """The encoder input (B, T, C) of ``wav`` (B, S) (no masking, no padding), the waveform normalised first
    where the family does (:func:`waveform_input`)."""
    return transformer_input(model, waveform_input(model, wav))[0]


def features_at(model, wav, depth: Optional[int]):
    """Frames of ``wav`` (B, S) after the first ``depth`` layers and the exit norm (no masking, no padding)."""
    return encode_to_depth(model, encoder_input(model, wav), depth)


def depth_losses(model, teacher, wavs: List, mse_weight: float = 1.0, cosine_weight: float = 1.0) -> Dict[int, float]:
    """The fine-tuning loss at every depth on ``wavs`` (one utterance at a time, frame-weighted)."""
    import torch

    n = len(model.encoder.layers)
    sums, frames = {k: 0.0 for k in range(1, n + 1)}, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for wav in wavs:
            w = torch.as_tensor(wav, dtype=torch.float32).reshape(1, -1)
            target = features_at(teacher, w, None)
            t = target.shape[1]
            for k in range(1, n + 1):
                loss, _, _ = distill_loss(features_at(model, w, k), target, 1.0, mse_weight, cosine_weight)
                sums[k] += float(loss)
            frames += t
    model.train(was_training)
    return {k: s / max(1, frames) for k, s in sums.items()}


def masked_accuracy(model, mp: "MaskedPrediction", wavs: List, labels: List, seed: int) -> Dict[int, float]:
    """Masked-prediction accuracy of the model's head at every depth on ``wavs`` (one fixed span mask per
    utterance, drawn from ``[seed, index, 2]``), over all their masked frames."""
    import torch

    n = len(model.encoder.layers)
    correct, masked = {k: 0 for k in range(1, n + 1)}, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i, (wav, lab) in enumerate(zip(wavs, labels)):
            x = encoder_input(model, torch.as_tensor(wav, dtype=torch.float32).reshape(1, -1))
            t = min(x.shape[1], len(lab))
            mask = mp.mask(model, 1, t, [seed, i, 2])
            x = apply_mask(model, x[:, :t], mask)
            target = torch.as_tensor(lab[:t], dtype=torch.long).reshape(1, -1)
            for k in range(1, n + 1):
                correct[k] += mp.scores(model, encode_to_depth(model, x, k), target, mask)[1]
            masked += int(mask.sum())
    model.train(was_training)
    return {k: c / max(1, masked) for k, c in correct.items()}


class MaskedPrediction:
    """The masked-prediction term (``targets`` given): frame labels from the k-means centres of MFCC frames,
    HuBERT's span mask drawn per global batch, cross-entropy of the model's own head on masked frames."""

    def __init__(self, source, targets: str, weight: float):
        from ..pretrain.model import head_kind, target_classes
        from ..pretrain.targets import read_centres

        if source.family.name != "hubert":
            raise UserInputError(f"masked prediction needs HuBERT's prediction head; a {source.family.name} "
                                 "checkpoint has none: leave `targets` unset", argument="targets")
        self.centres = read_centres(targets)
        self.head, self.weight = head_kind(source.checkpoint), float(weight)
        classes = target_classes(source.checkpoint)
        if classes != len(self.centres):
            raise UserInputError(f"{targets}: {len(self.centres)} centres, but the model's prediction head scores "
                                 f"{classes} classes; give the centres it was pretrained against", argument="targets")

    def labels(self, wavs: List[np.ndarray]) -> List[np.ndarray]:
        from ..pretrain.targets import mfcc_labels

        return mfcc_labels(wavs, self.centres)

    @staticmethod
    def mask(model, rows: int, frames: int, seed_seq, rank: int = 0, world: int = 1):
        """This rank's rows of the span mask of a ``rows`` x ``frames`` global batch (bool tensor)."""
        import torch

        from ..pretrain.model import mask_indices

        return torch.as_tensor(mask_indices(model, rows, frames, seed_seq)[rank::world])

    def scores(self, model, y, labels, mask):
        """``(sum of CE, correct predictions)`` over the masked frames of the depth-k output ``y``."""
        import torch.nn.functional as F

        from ..pretrain.model import prediction_logits

        logits = prediction_logits(model, y[mask], self.head)
        target = labels[mask]
        return F.cross_entropy(logits, target, reduction="sum"), int((logits.argmax(-1) == target).sum())


class Batches:
    """Global batch ``step``: utterances from a seeded per-epoch order, one common crop, seeded offsets."""

    def __init__(self, wavs: List[np.ndarray], batch_size: int, crop_samples: int, seed: int,
                 labels: Optional[List[np.ndarray]] = None):
        from ..distill.sampling import GlobalBatches

        self.wavs, self.labels, self.crop, self.seed = wavs, labels, int(crop_samples), int(seed)
        self.order = GlobalBatches(len(wavs), batch_size, seed)

    def batch(self, step: int, rank: int = 0, world: int = 1):
        """``(wav (rows, crop) float32, labels (rows, frames) int64 or None)``: this rank's rows
        ``rank, rank + world, ...`` of global batch ``step``. Crops start on a frame boundary (HuBERT's
        320-sample hop) and span whole frames, so the frame labels of a crop are a slice of the utterance's."""
        idx = self.order.batch(step)
        crop = min(self.crop, min(len(self.wavs[i]) for i in idx))
        crop = WINDOW + HOP * ((crop - WINDOW) // HOP)
        rng = np.random.default_rng([self.seed, step])
        starts = [int(rng.integers(0, (len(self.wavs[i]) - crop) // HOP + 1)) for i in idx]
        rows = list(zip(idx, starts))[rank::world]
        wav = np.stack([self.wavs[i][f * HOP : f * HOP + crop] for i, f in rows]).astype(np.float32)
        if self.labels is None:
            return wav, None
        frames = num_frames(crop)
        return wav, np.stack([self.labels[i][f : f + frames] for i, f in rows]).astype(np.int64)

    def rows(self, step: int) -> int:
        """Utterances in global batch ``step``."""
        return len(self.order.batch(step))


def output_dir(cfg: LCFinetuneConfig) -> OutputDir:
    """``out`` under the project's output policy (command ``lc-finetune``), checked before any work."""
    folder = OutputDir(cfg.out, COMMAND, force=cfg.force, resume=cfg.resume, argument="out")
    return folder.check(outputs=OUTPUTS, resume_file=STATE)


def load_audio_split(cfg: LCFinetuneConfig):
    """``(train wavs, held-out wavs)`` as float32 numpy arrays (the whole training set in memory)."""
    from ..audio import AudioDataset
    from ..distill.trainer import split_heldout

    dataset = AudioDataset.from_data(cfg.data, cfg.max_utterances, cfg.max_seconds)
    train_files, held = split_heldout(list(dataset.files), cfg.heldout, cfg.seed)
    load = lambda files: [AudioDataset(files, dataset.root, cfg.max_seconds)[i][1].numpy().astype(np.float32)  # noqa: E731
                          for i in range(len(files))]
    train = load(train_files)
    if min(len(w) for w in train) < 400:
        raise UserInputError("an utterance is shorter than one frame (400 samples)", argument="data")
    return train, load(held)


class LCFinetuner:
    """One fine-tuning run: set-up (:meth:`prepare`), the loop (:meth:`train`), the outputs (:meth:`finish`)."""

    def __init__(self, cfg: LCFinetuneConfig, ctx: Optional[distributed.DistContext] = None):
        self.cfg = cfg
        check_config(cfg, 1)
        self.ctx = ctx or distributed.init_from_env(cfg.device)
        check_config(cfg, self.ctx.world_size)

    def prepare(self) -> None:
        """Check every input and ``out``, then load the audio, build the models and (``resume``) the state."""
        import torch

        cfg = self.cfg
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise UserInputError("cuda: no CUDA device is visible to torch; use cpu", argument="device")
        self.device = torch.device("cuda", torch.cuda.current_device()) if cfg.device == "cuda" else torch.device("cpu")
        self.source, n_layers = resolve_model(cfg.upstream, cfg.ckpt)
        self.depth_range = parse_depth_range(cfg.depth_range or (1, n_layers), n_layers)
        self.mp = MaskedPrediction(self.source, cfg.targets, cfg.mp_weight) if cfg.targets else None
        self.output = output_dir(cfg)
        self.train_wavs, self.heldout_wavs = load_audio_split(cfg)
        self.heldout_labels = self.mp.labels(self.heldout_wavs) if self.mp else None
        distributed.barrier()
        if self.ctx.is_main:
            self.output.prepare()
        distributed.barrier()
        self.batches = Batches(self.train_wavs, cfg.batch_size, int(cfg.crop_seconds * 16000), cfg.seed,
                               self.mp.labels(self.train_wavs) if self.mp else None)
        self._build_models()
        self.start, self.elapsed, self.history, self.evals = 0, 0.0, [], {}
        if cfg.resume:
            self._load_state()
        elif self.heldout_wavs:
            self.evaluate("before")

    def _build_models(self) -> None:
        import torch

        torch.manual_seed(self.cfg.seed)
        family, ckpt = self.source.family, self.source.checkpoint  # the sampled depth replaces LayerDrop
        self.model = family.trained_model(ckpt).to(self.device).train()
        self.model.feature_extractor.requires_grad_(False)  # the front end stays as it is (s3prl freezes it)
        self.teacher = family.trained_model(ckpt).to(self.device).eval().requires_grad_(False)
        for model in (self.model, self.teacher):
            setattr(model, NORMALIZE_ATTR, family.normalizes_waveform(ckpt))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def evaluate(self, when: str) -> None:
        """The held-out loss at every depth (and, with targets, the masked-prediction accuracy) as ``when``."""
        cfg = self.cfg
        self.evals[when] = depth_losses(self.model, self.teacher, self.heldout_wavs, cfg.mse_weight, cfg.cosine_weight)
        if self.mp is not None:
            self.evals[f"acc_masked_{when}"] = masked_accuracy(self.model, self.mp, self.heldout_wavs,
                                                               self.heldout_labels, cfg.seed)

    def identity(self) -> Dict[str, Any]:
        ident = {k: getattr(self.cfg, k) for k in LCFinetuneConfig.RESUME_KEYS}
        ident.update(source=self.source.source, depth_range=list(self.depth_range), steps=self.cfg.steps,
                     world_size=self.ctx.world_size, train_utterances=len(self.train_wavs))
        return json.loads(json.dumps(ident, default=str))

    def _load_state(self) -> None:
        from ..checkpoints import load_checkpoint
        from ..distill.trainer import set_rng_states

        path = self.output.path / STATE
        state = load_checkpoint(path, what="training state")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise UserInputError(f"{path} is not an lc-finetune training state", argument="resume")
        differ = {k: (state["identity"].get(k), v) for k, v in self.identity().items() if state["identity"].get(k) != v}
        if differ:
            lines = "; ".join(f"{k}: state {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise UserInputError(f"the run in {self.output.path} was started with other settings ({lines}); resume "
                                 "with the same settings, or start over with `force=True`", argument="resume")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        set_rng_states(state["rng"])
        self.start, self.elapsed = int(state["step"]), float(state["seconds"])
        self.history, self.evals = list(state["history"]), dict(state["evals"])

    def save_state(self, step: int) -> None:
        from ..distill.trainer import rng_states

        if not self.ctx.is_main:
            return
        self.output.save_torch(STATE, {"format": STATE_FORMAT, "identity": self.identity(), "step": step,
                                       "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                                       "optimizer": self.opt.state_dict(), "rng": rng_states(),
                                       "seconds": self.elapsed, "history": self.history, "evals": self.evals})

    def step(self, step: int) -> Dict[str, Any]:
        """One optimiser step on global batch ``step`` at its sampled depth; its statistics."""
        import torch

        cfg = self.cfg
        t0 = time.perf_counter()
        depth = sample_depth(cfg.seed, step, self.depth_range)
        loss, parts = self._losses(step, depth)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self._sum_gradients()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_norm))
        sums = distributed.all_reduce_sum([float(v.detach()) for v in parts], dtype=torch.float64)
        if not np.isfinite(sums[0]):
            raise RuntimeError(f"the loss became {sums[0]} at step {step + 1}; lower `lr` or check `data`")
        self.opt.step()
        self.elapsed += time.perf_counter() - t0
        stats = {"step": step, "depth": depth, "loss": sums[0], "mse": sums[1], "cos": sums[2],
                 "grad_norm": grad_norm, "seconds": round(self.elapsed, 3)}
        if self.mp is not None:
            stats.update(ce_masked=sums[3], acc_masked=sums[4])
        self.history.append(stats)
        return stats

    def _losses(self, step: int, depth: int):
        """``(loss, [loss, mse, cos(, ce_masked, acc_masked)])``: this rank's share of the global values on its
        rows of batch ``step`` at exit depth ``depth`` (their sum over ranks is the global value)."""
        import torch

        cfg, ctx = self.cfg, self.ctx
        wav, labels = self.batches.batch(step, ctx.rank, ctx.world_size)
        wav = torch.as_tensor(wav, device=self.device)
        with torch.no_grad():
            target = features_at(self.teacher, wav, None)
        x = encoder_input(self.model, wav)
        mask = None
        if self.mp is not None:  # HuBERT's masking of the student's input, rows of the global batch's mask
            mask = self.mp.mask(self.model, self.batches.rows(step), x.shape[1], [cfg.seed, step, 1], ctx.rank,
                                ctx.world_size).to(self.device)
            x = apply_mask(self.model, x, mask)
        pred = encode_to_depth(self.model, x, depth)
        counts = [pred.shape[0] * pred.shape[1], 0 if mask is None else int(mask.sum())]
        frames, masked = distributed.all_reduce_sum(counts, dtype=torch.float64)
        loss, mse, cos = distill_loss(pred, target, frames, cfg.mse_weight, cfg.cosine_weight)
        if mask is None:
            return loss, [loss, mse, cos]
        ce_sum, correct = self.mp.scores(self.model, pred, torch.as_tensor(labels, device=self.device), mask)
        ce = ce_sum / max(1.0, masked)
        loss = loss + self.mp.weight * ce
        return loss, [loss, mse, cos, ce, torch.tensor(correct / max(1.0, masked))]

    def _sum_gradients(self) -> None:
        """Sum every gradient over the ranks (each rank's loss is its share of the global loss). All ranks
        sample the same depth, so the same parameters have gradients everywhere, in the same order."""
        if not self.ctx.distributed:
            return
        import torch.distributed as dist

        for p in self.params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def train(self) -> List[Dict[str, Any]]:
        """Steps ``start .. end - 1`` (``end`` = ``stop_after`` or ``steps``), checkpointing when due."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        end = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
        bar = tqdm(total=cfg.steps, initial=self.start, disable=not (cfg.progress and self.ctx.is_main),
                   desc=COMMAND, dynamic_ncols=True)
        try:
            for step in range(self.start, end):
                stats = self.step(step)
                bar.update(1)
                bar.set_postfix(depth=stats["depth"], loss=f"{stats['loss']:.4g}")
                done = step + 1
                if done % cfg.save_every == 0 or done == end:
                    self.save_state(done)
        finally:
            bar.close()
        if self.start >= end:
            self.save_state(self.start)
        self.end = end
        distributed.barrier()
        return self.history

    def finish(self) -> Dict[str, Any]:
        """Write the checkpoint, ``history.json``, ``manifest.json`` and the loss curve (rank 0 only)."""
        if not self.ctx.is_main:
            return {}
        cfg = self.cfg
        if self.end == cfg.steps and self.heldout_wavs:
            self.evaluate("after")
        method = "self-distillation" + (" and masked prediction" if self.mp else "")
        meta = {"method": f"layer-consistency fine-tuning (sampled exit depth, {method}), arXiv 2105.00812",
                "finetuned_from": self.source.source, "depth_range": list(self.depth_range), "steps": self.end,
                "total_steps": cfg.steps, "share_layers": None,
                "loss": {"mse_weight": cfg.mse_weight, "cosine_weight": cfg.cosine_weight,
                         "mp_weight": cfg.mp_weight if cfg.targets else 0.0, "targets": cfg.targets}}
        family = self.source.family
        export = EXPORTS[family.name]
        self.output.save_torch(export, export_checkpoint(self.source.checkpoint, self.model, meta, family))
        self.output.write_text(HISTORY, json.dumps({"history": self.history, "heldout_depth_losses": self.evals},
                                                   indent=1))
        manifest = {"checkpoint": export, "family": family.name,
                    "load_with": f"-u {sli_entry(family.name)} -k {self.output.path / export} -g depth.yaml",
                    "steps": self.end, "total_steps": cfg.steps, "world_size": self.ctx.world_size,
                    "train_seconds": round(self.elapsed, 2), "heldout_depth_losses": self.evals,
                    "config": {k: v for k, v in asdict(cfg).items() if k not in ("resume", "force", "progress")}}
        self.output.write_json(MANIFEST, manifest)
        plot_history(self.history, self.output.file(CURVE), self.depth_range)
        return manifest


def export_checkpoint(source: Dict[str, Any], model, meta: Dict[str, Any], family) -> Dict[str, Any]:
    """``source`` (a checkpoint in ``family``'s s3prl local format) with the fine-tuned weights under the
    family's ``weights_key``, each in its stored dtype, every other key kept, and ``meta`` under
    :data:`~s3prl_redundancy.layer_consistency.META_KEY`; s3prl's loader for the family reads it as before."""
    stored = family.weights(source)
    weights = {k: v.detach().cpu().to(stored[k].dtype if k in stored else v.dtype).clone()
               for k, v in model.state_dict().items()}
    out = dict(source)
    out[family.weights_key] = weights
    out[META_KEY] = meta
    return out


def plot_history(history: List[Dict[str, Any]], path, depth_range) -> None:
    """Training loss per step, one series per sampled depth."""
    import matplotlib

    from ..io import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for k in range(depth_range[0], depth_range[1] + 1):
        pts = [(h["step"] + 1, h["loss"]) for h in history if h["depth"] == k]
        if pts:
            ax.plot(*zip(*pts), ".", ms=3, label=f"depth {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (vs frozen final layer)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


def lc_finetune(cfg: LCFinetuneConfig, ctx: Optional[distributed.DistContext] = None) -> Dict[str, Any]:
    """A whole run (set-up, training, outputs); returns the manifest (empty on ranks > 0)."""
    runner = LCFinetuner(cfg, ctx)
    try:
        runner.prepare()
        runner.train()
        manifest = runner.finish()
        distributed.barrier()
        manifest["history"] = runner.history if manifest else []
        return manifest
    finally:
        distributed.cleanup(runner.ctx)
