"""Train a student's mimicking layers against the teacher's hidden states (``s3prl-redundancy distill``).

Loss per step, over the non-padding frames ``N`` of the *global* batch and the model dimension ``D``:
``sum_k w_k ||y_k - h_k||^2 / (N D)`` (per-layer MSEs; ``w_k`` = 1, or 1 / the teacher layer's variance with
``layer_weighting="variance"``), plus, with ``cosine_weight=W``,
DistilHuBERT's ``W * sum_k mean_frames(-log sigmoid(cos(y_k, h_k)))``. Adam, constant learning rate.

With ``front_end="light"`` the student's own front end trains too: first alone against the teacher's
``hidden_states[0]`` (``front_end_steps``), then jointly with the mimicker, which then runs on the light front
end's output; its loss term comes first (``loss_layer0``).

The teacher runs in ``torch.inference_mode()`` (bf16 autocast on CUDA). With the teacher's front end, its
``hidden_states[0]`` is the student's input: the student's frozen front end computes exactly the same tensor (tested), so the CNN runs
once per step. Under ``torchrun`` the mimicker is wrapped in DistributedDataParallel (gloo on CPU, nccl on
CUDA); each rank takes its share of every global batch (:mod:`.sampling`) and scales its loss by
``world_size`` so that DDP's gradient average equals the gradient of the global loss: two ranks train the
same model as one process with the same global batch.

``checkpoint.pt`` (every ``save_every`` steps and at the end, atomic) holds the mimicker, the optimizer,
the step, the RNG states and the data position; ``resume`` continues from it exactly (the same losses as
an uninterrupted run). A non-finite loss stops training before the update, keeps the last checkpoint and
raises :class:`TrainingDivergedError` naming the step.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .. import distributed, io
from ..audio import AudioDataset
from ..errors import UserInputError
from . import outputs
from .sampling import GlobalBatches, shard

STATE_FORMAT = "s3prl_redundancy.distill_state"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class DistillConfig:
    teacher: str
    data: str
    out: str
    ckpt: Optional[str] = None
    targets: Union[None, str, Sequence[int]] = None
    arch: str = "mlp"
    hidden: int = 64
    residual: bool = True
    heads: int = 0
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    max_seconds: Optional[float] = None
    max_utterances: Optional[int] = None
    heldout: Optional[int] = None  # None: 10% of the utterances (1..100) when there are at least 2
    save_every: int = 500
    resume: bool = False
    force: bool = False
    device: str = "cpu"
    cosine_weight: float = 0.0
    cache_teacher: bool = False
    cache_max_gb: float = 2.0
    seed: int = 0
    report: bool = True
    report_repeats: int = 5
    progress: bool = True
    front_end: str = "teacher"  # or "light": a small trained front end (.light_front_end)
    front_end_steps: Optional[int] = None  # light: stage-1 steps (match hidden_states[0] only); None: steps // 4
    front_end_channels: int = 64  # light: CNN width
    # "none": plain MSEs (layers with a large residual stream dominate); "variance": each layer's MSE divided by
    # the teacher layer's variance over the global batch (every layer counts alike). Measured on tiny_hubert,
    # the final norm below fixes the last layer alone; variance weighting alone helps it less and costs the
    # middle layers (docs/distillation.md), so plain MSEs stay the default.
    layer_weighting: str = "none"
    final_norm: bool = True  # pre-LN teachers: the last prediction ends with a copy of the teacher's final norm

    # what must match for `resume` (the rest may change: steps, save_every, device, report, progress)
    RESUME_KEYS = ("teacher", "arch", "hidden", "residual", "heads", "batch_size", "lr", "max_seconds",
                   "max_utterances", "heldout", "cosine_weight", "cache_teacher", "seed", "front_end",
                   "front_end_steps", "front_end_channels", "layer_weighting", "final_norm")


def training_device(device: str, ctx: distributed.DistContext) -> torch.device:
    """The torch device of this rank: ``cuda:LOCAL_RANK`` for CUDA (set by :func:`distributed.init_from_env`)."""
    if device == "cuda" and ctx.distributed:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(device)


def check_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise UserInputError(f"{device!r}: use cpu or cuda", argument="device")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("cuda: no CUDA device is visible to torch; use cpu", argument="device")


# ---------------------------------------------------------------------------------------- RNG states
def rng_states() -> Dict[str, Any]:
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(states["torch"])
    random.setstate(_as_tuple(states["python"]))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


# ---------------------------------------------------------------------------------------- data
def split_heldout(files: List[Path], heldout: Optional[int], seed: int):
    """``(train files, held-out files)``: a seeded choice of ``heldout`` files (default 10%, 1..100)."""
    n = len(files)
    if heldout is None:
        heldout = min(100, max(1, n // 10)) if n >= 2 else 0
    if heldout < 0 or heldout >= n:
        raise UserInputError(f"{heldout}: `data` has {n} utterances; hold out 0..{n - 1} of them", argument="heldout")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7)).tolist()
    held = sorted(order[:heldout])
    held_set = set(held)
    train = [f for i, f in enumerate(files) if i not in held_set]
    return train, [files[i] for i in held]


LAYER_WEIGHTINGS = ("variance", "none")


def target_variances(targets: Sequence[torch.Tensor], valid: torch.Tensor) -> List[float]:
    """Per target, the variance per value of its valid frames over the *global* batch (sums reduced over ranks)."""
    sums, squares = [], []
    for target in targets:
        t = target.detach().double()[valid]
        sums.append(t.sum(0))
        squares.append(float(t.pow(2).sum()))
    dim = int(sums[0].numel())
    flat = distributed.all_reduce_sum([float(valid.sum()), *squares, *torch.cat(sums).tolist()], dtype=torch.float64)
    n, squares = flat[0], flat[1:1 + len(targets)]
    means = torch.tensor(flat[1 + len(targets):], dtype=torch.float64).view(len(targets), dim)
    means = means / n
    return [max((sq / n - float(m.pow(2).sum())) / dim, 1e-12) for sq, m in zip(squares, means)]


def masked_losses(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], valid: torch.Tensor,
                  frames_global: float, cosine_weight: float, scales: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Per-target loss terms of this rank's frames, normalised by the global frame count (sum = rank's share);
    each MSE divided by its ``scales`` entry when given (:func:`target_variances`)."""
    terms = []
    for k, (pred, target) in enumerate(zip(preds, targets)):
        p, t = pred.float()[valid], target.float()[valid]
        term = (p - t).pow(2).sum() / (frames_global * p.shape[-1] * (scales[k] if scales is not None else 1.0))
        if cosine_weight:
            cos = F.cosine_similarity(p, t, dim=-1)
            term = term + cosine_weight * (-F.logsigmoid(cos)).sum() / frames_global
        terms.append(term)
    return torch.stack(terms)


# ---------------------------------------------------------------------------------------- training
def check_config(cfg: DistillConfig, world_size: int) -> None:
    """The numeric settings, before anything is loaded."""
    for name in ("steps", "batch_size", "save_every"):
        if int(getattr(cfg, name)) < 1:
            raise UserInputError(f"must be at least 1, got {getattr(cfg, name)}", argument=name)
    if cfg.lr <= 0:
        raise UserInputError(f"must be positive, got {cfg.lr}", argument="lr")
    if cfg.batch_size < world_size:
        raise UserInputError(f"{cfg.batch_size} is the global batch; it must be at least the number of processes "
                             f"({world_size}) so that every rank gets an utterance", argument="batch_size")
    from .light_front_end import check_kind

    check_kind(cfg.front_end)
    if cfg.layer_weighting not in LAYER_WEIGHTINGS:
        raise UserInputError(f"{cfg.layer_weighting!r}: use one of {', '.join(LAYER_WEIGHTINGS)}",
                             argument="layer_weighting")
    if cfg.front_end_steps is not None:
        if cfg.front_end != "light":
            raise UserInputError("is the light front end's first stage; it needs `front_end='light'`",
                                 argument="front_end_steps")
        if not 0 <= int(cfg.front_end_steps) < cfg.steps:
            raise UserInputError(f"must be at least 0 and below `steps={cfg.steps}` (the joint stage needs steps), "
                                 f"got {cfg.front_end_steps}", argument="front_end_steps")


def resolved_front_end_steps(cfg: DistillConfig) -> int:
    """Steps of stage 1 (the light front end alone against ``hidden_states[0]``); 0 for the teacher's front end."""
    if cfg.front_end != "light":
        return 0
    return int(cfg.front_end_steps) if cfg.front_end_steps is not None else cfg.steps // 4


def output_dir(cfg: DistillConfig) -> io.OutputDir:
    """``out`` under the project's output policy, checked (including writability); nothing is written yet."""
    out = io.OutputDir(cfg.out, "distill", force=cfg.force, resume=cfg.resume, argument="out")
    return out.check(outputs=outputs.RUN_FILES, resume_file=outputs.STATE)


class Trainer:
    def __init__(self, cfg: DistillConfig, ctx: Optional[distributed.DistContext] = None):
        self.cfg = cfg
        check_device(cfg.device)
        self.ctx = ctx or distributed.init_from_env(cfg.device)
        self.device = training_device(cfg.device, self.ctx)
        self.out = Path(cfg.out)

    # -- set-up --------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Validate every input, then build the teacher, the student, the optimizer and the data order.
        ``out`` is changed only once everything that can be refused was checked (models, resume state, cache)."""
        cfg = self.cfg
        check_config(cfg, self.ctx.world_size)
        self._load_inputs()
        self.output = output_dir(self.cfg)  # checked (writability, whose folder); nothing written yet
        self._build_models()
        self.batches = GlobalBatches(len(self.train_set), cfg.batch_size, cfg.seed)
        self.run_identity = self._run_identity()
        self.start_step, self.elapsed = 0, 0.0
        if cfg.resume:
            self._load_state()
        cache_size = self._check_cache_size() if cfg.cache_teacher else None
        self._prepare_output()
        self.cache = self._prepare_cache(cache_size) if cfg.cache_teacher else None

    def _load_inputs(self) -> None:
        """The teacher (resolved, not built), the targets (checked) and the train / held-out split."""
        from .student import parse_targets
        from .teacher import resolve_teacher

        cfg = self.cfg
        self.teacher = resolve_teacher(cfg.teacher, cfg.ckpt)
        parse_targets(cfg.targets, self.teacher.family.num_layers(self.teacher.checkpoint))  # fail before any write
        dataset = AudioDataset.from_data(cfg.data, cfg.max_utterances, cfg.max_seconds)
        dataset = dataset.without_short_clips(self.teacher.family.min_samples(self.teacher.checkpoint))
        train_files, held = split_heldout(list(dataset.files), cfg.heldout, cfg.seed)
        self.train_set = dataset.subset(train_files)
        self.heldout_set = dataset.subset(held)

    def _prepare_output(self) -> None:
        """Every rank has checked ``out`` before rank 0 changes it (with ``force``: deletes our previous run)."""
        distributed.barrier()
        if self.ctx.is_main:
            self.output.prepare()
            if self.cfg.cache_teacher:
                self.output.record(outputs.CACHE_DIR)
        distributed.barrier()

    def _build_models(self) -> None:
        from .student import Student
        from .teacher import build_teacher_expert

        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # the same initial mimicker on every rank (DDP also broadcasts it)
        family = self.teacher.family.name
        self.student = Student.from_teacher(family, self.teacher.checkpoint, cfg.arch, cfg.targets, cfg.hidden,
                                            cfg.residual, cfg.heads, cfg.front_end,
                                            cfg.front_end_channels, cfg.final_norm).to(self.device)
        self.targets = self.student.targets
        self.light = bool(self.student.front_end.trainable)
        self.front_end_steps = resolved_front_end_steps(cfg)
        self.expert = build_teacher_expert(self.teacher).to(self.device)
        # what trains: the mimicker, and the light front end with it (the whole student runs from waveforms)
        self.trained = self.student if self.light else self.student.mimicker
        self.optimizer = torch.optim.Adam([p for p in self.trained.parameters() if p.requires_grad], lr=cfg.lr)
        self.model = self.trained
        if self.ctx.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.trained, device_ids=ids)

    def _run_identity(self) -> Dict[str, Any]:
        ident = {k: getattr(self.cfg, k) for k in DistillConfig.RESUME_KEYS}
        ident.update(teacher_source=self.teacher.source, targets=list(self.targets),
                     train_files=len(self.train_set), heldout_files=[str(f) for f in self.heldout_set.files])
        return json.loads(json.dumps(ident, default=str))

    def _load_state(self) -> None:
        from ..checkpoints import load_checkpoint

        state = load_checkpoint(self.out / outputs.STATE, what="training checkpoint", argument="resume")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise UserInputError(f"{self.out / outputs.STATE} is not a distillation training checkpoint; choose "
                                 "another `out`, or run without `resume` and with `force=True` to start over there",
                                 argument="resume")
        differ = {k: (state["run"].get(k), v) for k, v in self.run_identity.items() if state["run"].get(k) != v}
        if differ:
            lines = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise UserInputError(f"the run in {self.out} was started with other settings ({lines}); resume with the "
                                 "same settings, or run without `resume` and with `force=True` to start over",
                                 argument="resume")
        if state["step"] > self.cfg.steps:
            raise UserInputError(f"the checkpoint is at step {state['step']}, beyond `steps={self.cfg.steps}`; "
                                 f"give `steps={state['step']}` or more", argument="resume")
        self.student.mimicker.load_state_dict(state["mimicker"])
        if self.light:
            self.student.front_end.load_state_dict(state["front_end"])
            self.front_end_steps = int(state["front_end_steps"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_states(state["rng"])
        self.start_step, self.elapsed = int(state["step"]), float(state["elapsed_seconds"])

    def _check_cache_size(self) -> int:
        """The teacher cache's size in bytes, refused over ``cache_max_gb`` (from the clips' headers)."""
        from .teacher_cache import check_cache_size, utterance_samples

        front = self.student.front_end
        frames = [front.num_frames(utterance_samples(self.train_set, i)) for i in range(len(self.train_set))]
        return check_cache_size(frames, front.dim, len(self.targets), self.cfg.cache_max_gb)

    def _prepare_cache(self, size: int):
        from .teacher_cache import TeacherCache, cache_fingerprint

        cache = TeacherCache(self.out / outputs.CACHE_DIR,
                             cache_fingerprint(self.teacher.path, self.train_set.files, self.targets, self.cfg.max_seconds))
        count = len(self.train_set)
        if not cache.is_complete(count):
            ctx = self.ctx
            distributed.barrier()

            def compute(wav):
                hs = self.teacher_states([wav.to(self.device)])
                return hs[0][0], torch.stack([hs[t][0] for t in self.targets])

            cache.build(self.train_set, shard(list(range(count)), ctx.rank, ctx.world_size), compute)
            distributed.barrier()
            if ctx.is_main:
                cache.finish(count, size)
            distributed.barrier()
        return cache

    # -- one step ------------------------------------------------------------------------------
    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def teacher_states(self, wavs: List[torch.Tensor]) -> List[torch.Tensor]:
        with torch.inference_mode(), self.autocast():
            hs = self.expert(wavs)["hidden_states"]
        return [h.float().clone() for h in hs]  # clone: leave inference mode (tensors usable by autograd)

    def batch(self, step: int):
        """``(wavs, x0, targets, padding mask)`` of this rank's share of global batch ``step``: the teacher's
        transformer input and target layers (``wavs`` only for a light front end, which runs on them)."""
        local = shard(self.batches.batch(step), self.ctx.rank, self.ctx.world_size)
        wavs = [self.train_set[i][1].to(self.device) for i in local] if self.light or self.cache is None else None
        if self.cache is not None:
            return (wavs, *self.cache.load_batch(local, self.device))
        hs = self.teacher_states(wavs)
        lengths = torch.tensor([len(w) for w in wavs], device=self.device)
        mask = self.student.front_end.padding_mask_for_lengths(lengths)
        return wavs, hs[0], [hs[t] for t in self.targets], mask

    def step_losses(self, step: int) -> torch.Tensor:
        """Loss terms of this rank (their sum over ranks is the global loss); with grad. Per target; a light
        front end adds its own term first (its output against the teacher's ``hidden_states[0]``)."""
        wavs, x0, targets, mask = self.batch(step)
        valid = ~mask
        frames = distributed.all_reduce_sum([float(valid.sum())], dtype=torch.float64)[0]
        with self.autocast():
            if self.light:
                preds, _ = self.model(wavs)
                targets = [x0, *targets]
            else:
                preds = self.model(x0, mask)
        scales = target_variances(targets, valid) if self.cfg.layer_weighting == "variance" else None
        return masked_losses(preds, targets, valid, frames, self.cfg.cosine_weight, scales)

    def stage(self, step: int) -> int:
        """1: the light front end alone against ``hidden_states[0]``; 2: everything that trains, jointly."""
        return 1 if step < self.front_end_steps else 2

    def logged_layers(self) -> List[int]:
        """The teacher layer of each loss term: the targets, after layer 0 for a light front end."""
        return [0, *self.targets] if self.light else list(self.targets)

    def loss_weights(self, step: int, count: int) -> torch.Tensor:
        """Weight of each loss term in the optimised loss: stage 1 keeps only the front end's term."""
        weights = torch.ones(count, dtype=torch.float32, device=self.device)
        if self.stage(step) == 1:
            weights[1:] = 0.0
        return weights

    # -- loop ----------------------------------------------------------------------------------
    def save_state(self, step: int) -> None:
        self.output.save_torch(outputs.STATE, {
            "format": STATE_FORMAT,
            "step": step,
            "mimicker": {k: v.detach().cpu() for k, v in self.student.mimicker.state_dict().items()},
            **({"front_end": {k: v.detach().cpu() for k, v in self.student.front_end.state_dict().items()},
                "front_end_steps": self.front_end_steps} if self.light else {}),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_states(),
            "data_position": self.batches.position(step),
            "run": self.run_identity,
            "elapsed_seconds": self.elapsed_now(),
            "student_config": self.student.config.to_dict(),
        })

    def elapsed_now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t0)

    def train(self) -> Dict[str, Any]:
        from tqdm.auto import tqdm

        cfg, ctx = self.cfg, self.ctx
        log = outputs.TrainLog(self.out / outputs.LOG, self.logged_layers())
        if ctx.is_main:
            self.output.record(outputs.LOG)
            log.start(self.start_step)
        self._t0 = time.perf_counter()
        self.trained.train()
        self._last_saved = self.start_step if cfg.resume else None
        bar = tqdm(total=cfg.steps, initial=self.start_step, disable=not (cfg.progress and ctx.is_main),
                   desc="distill", dynamic_ncols=True)
        history = []
        try:
            for step in range(self.start_step, cfg.steps):
                loss = self._train_step(step, log)
                history.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
        finally:
            bar.close()
        self.trained.eval()
        distributed.barrier()
        return {"steps": cfg.steps, "losses": history, "elapsed_seconds": self.elapsed_now()}

    def _train_step(self, step: int, log: outputs.TrainLog) -> float:
        """One optimizer step on global batch ``step``: log it, checkpoint when due; returns the global loss."""
        terms = self.step_losses(step)
        weights = self.loss_weights(step, len(terms))
        reported = torch.tensor(distributed.all_reduce_sum(terms.detach().to(torch.float64).tolist(),
                                                           dtype=torch.float64), dtype=torch.float64)
        loss = float((reported * weights.cpu().to(torch.float64)).sum())
        if not torch.isfinite(reported).all():
            raise self._diverged(step, loss, reported)
        self.optimizer.zero_grad(set_to_none=True)
        ((terms * weights).sum() * self.ctx.world_size).backward()
        if self.stage(step) == 1:  # the mimicker waits: no gradient, so Adam neither moves it nor counts the step
            for p in self.student.mimicker.parameters():
                p.grad = None
        self.optimizer.step()
        done = step + 1
        if self.ctx.is_main:
            log.append(done, loss, reported.tolist(), self.elapsed_now())
        if done % self.cfg.save_every == 0 or done == self.cfg.steps:
            if self.ctx.is_main:
                self.save_state(done)
            self._last_saved = done
        return loss

    def _diverged(self, step: int, loss: float, reported: torch.Tensor) -> TrainingDivergedError:
        if self._last_saved:
            where = (f"the last good checkpoint is {self.out / outputs.STATE} at step {self._last_saved} (continue "
                     "with `resume` once the cause is fixed)")
        else:
            where = (f"no checkpoint was written yet (the first is at step {self.cfg.save_every}, `save_every`); "
                     "start over with `force=True` once the cause is fixed")
        per_target = ", ".join(f"layer {t}: {float(v):.4g}" for t, v in zip(self.logged_layers(), reported))
        return TrainingDivergedError(
            f"the distillation loss is {loss} at step {step + 1} (per target: {per_target}); training stopped "
            f"before that update and {where}. Check `data` for silent, corrupt or NaN audio, or lower `lr`")

    # -- results -------------------------------------------------------------------------------
    def finish(self, result: Dict[str, Any]) -> Dict[str, Any]:
        """Write student.pt, manifest.json, the loss curve and (optionally) the report; rank 0 only."""
        if not self.ctx.is_main:
            return {}
        manifest = self._write_student(result)
        outputs.plot_loss_curve(self.out / outputs.LOG, self.output.file(outputs.CURVE),
                                f"{self.cfg.arch} mimicker of {self.cfg.teacher}: {len(self.targets)} targets")
        if self.cfg.report:
            self._write_report()
            manifest["files"].update(report_json=outputs.REPORT_JSON, report_md=outputs.REPORT_MD)
        self.output.write_json(outputs.MANIFEST, manifest)
        return manifest

    def _write_student(self, result: Dict[str, Any]) -> Dict[str, Any]:
        """Save ``student.pt``; returns the manifest that describes it."""
        from .student import save_student, teacher_configs

        losses = outputs.read_losses(self.out / outputs.LOG)
        teacher = dict(teacher_configs(self.teacher.family.name, self.teacher.checkpoint), source=self.teacher.source)
        training = {"steps": self.cfg.steps, "initial_loss": losses[0] if losses else None,
                    "final_loss": losses[-1] if losses else None, "world_size": self.ctx.world_size,
                    "elapsed_seconds": result["elapsed_seconds"],
                    **({"front_end_steps": self.front_end_steps} if self.light else {})}
        student_path = save_student(self.student.cpu(), teacher, self.output.file(outputs.STUDENT), training)
        self.student.to(self.device)
        return {
            "student": outputs.STUDENT,
            "load_with": f"-u distilled_{self.teacher.family.name} -k {student_path}",
            "teacher": {"family": self.teacher.family.name, "name": self.cfg.teacher, "source": self.teacher.source,
                        "num_layers": teacher["num_layers"]},
            "targets": self.targets,
            "student_config": self.student.config.to_dict(),
            "front_end": self.student.front_end.config(),
            "training": training,
            "config": {k: v for k, v in asdict(self.cfg).items() if k not in ("resume", "force", "progress")},
            "data": {"train_utterances": len(self.train_set),
                     "heldout_files": [str(Path(f).resolve()) for f in self.heldout_set.files]},
            "files": {"train_log": outputs.LOG, "loss_curve": outputs.CURVE, "checkpoint": outputs.STATE},
        }

    def _write_report(self) -> None:
        from .report import build_report, write_report

        wavs = [self.heldout_set[i][1] for i in range(len(self.heldout_set))]
        note = "held-out utterances"
        if not wavs:
            wavs = [self.train_set[i][1] for i in range(min(8, len(self.train_set)))]
            note = "training utterances (no held-out split)"
        report = build_report(self.student, self.expert, self.teacher.family.name, wavs, self.device,
                              repeats=self.cfg.report_repeats, audio_note=note)
        self.output.record(outputs.REPORT_JSON, outputs.REPORT_MD)
        write_report(report, self.out)


def distill(cfg: DistillConfig, ctx: Optional[distributed.DistContext] = None) -> Dict[str, Any]:
    """Run a whole distillation (set-up, training, outputs). Returns the manifest (empty on ranks > 0)."""
    trainer = Trainer(cfg, ctx)
    try:
        trainer.prepare()
        result = trainer.train()
        manifest = trainer.finish(result)
        distributed.barrier()
        return manifest
    finally:
        distributed.cleanup(trainer.ctx)
