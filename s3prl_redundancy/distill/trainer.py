"""Train a student's mimicking layers against the teacher's hidden states (``s3prl-redundancy distill``).

Loss per step, over the non-padding frames ``N`` of the *global* batch and the model dimension ``D``:
``sum_k ||y_k - h_k||^2 / (N D)`` (the sum of per-layer MSEs), plus, with ``--cosine-weight W``,
DistilHuBERT's ``W * sum_k mean_frames(-log sigmoid(cos(y_k, h_k)))``. Adam, constant learning rate.

The teacher runs in ``torch.inference_mode()`` (bf16 autocast on CUDA). Its ``hidden_states[0]`` is the
student's input: the student's frozen front end computes exactly the same tensor (tested), so the CNN runs
once per step. Under ``torchrun`` the mimicker is wrapped in DistributedDataParallel (gloo on CPU, nccl on
CUDA); each rank takes its share of every global batch (:mod:`.sampling`) and scales its loss by
``world_size`` so that DDP's gradient average equals the gradient of the global loss: two ranks train the
same model as one process with the same global batch.

``checkpoint.pt`` (every ``--save-every`` steps and at the end, atomic) holds the mimicker, the optimizer,
the step, the RNG states and the data position; ``--resume`` continues from it exactly (the same losses as
an uninterrupted run). A non-finite loss stops training before the update, keeps the last checkpoint and
raises :class:`TrainingDivergedError` naming the step.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

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

    # what must match for --resume (the rest may change: steps, save_every, device, report, progress)
    RESUME_KEYS = ("teacher", "arch", "hidden", "residual", "heads", "batch_size", "lr", "max_seconds",
                   "max_utterances", "heldout", "cosine_weight", "cache_teacher", "seed")


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    created_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def close(self) -> None:
        if self.created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def setup_distributed(device: str) -> DistContext:
    """Single process, or the process group of ``torchrun`` (``WORLD_SIZE`` > 1) / one the caller created."""
    import torch.distributed as dist

    if device not in ("cpu", "cuda"):
        raise UserInputError(f"--device {device!r}: use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    elif world > 1:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        created = True
    if world == 1:
        return DistContext(device=torch.device(device))
    rank = dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    return DistContext(rank, world, local_rank, dev, created)


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
        raise UserInputError(f"--heldout {heldout}: --data has {n} utterances; hold out 0..{n - 1} of them")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7)).tolist()
    held = sorted(order[:heldout])
    held_set = set(held)
    train = [f for i, f in enumerate(files) if i not in held_set]
    return train, [files[i] for i in held]


def masked_losses(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], valid: torch.Tensor,
                  frames_global: float, cosine_weight: float) -> torch.Tensor:
    """Per-target loss terms of this rank's frames, normalised by the global frame count (sum = rank's share)."""
    terms = []
    for pred, target in zip(preds, targets):
        p, t = pred.float()[valid], target.float()[valid]
        term = (p - t).pow(2).sum() / (frames_global * p.shape[-1])
        if cosine_weight:
            cos = F.cosine_similarity(p, t, dim=-1)
            term = term + cosine_weight * (-F.logsigmoid(cos)).sum() / frames_global
        terms.append(term)
    return torch.stack(terms)


# ---------------------------------------------------------------------------------------- training
class Trainer:
    def __init__(self, cfg: DistillConfig, ctx: Optional[DistContext] = None):
        self.cfg = cfg
        self.ctx = ctx or setup_distributed(cfg.device)
        self.out = Path(cfg.out)

    # -- set-up --------------------------------------------------------------------------------
    def prepare(self) -> None:
        from .student import Student, parse_targets
        from .teacher import build_teacher_expert, resolve_teacher

        cfg, ctx = self.cfg, self.ctx
        for name in ("steps", "batch_size", "save_every"):
            if int(getattr(cfg, name)) < 1:
                raise UserInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
        if cfg.lr <= 0:
            raise UserInputError(f"--lr must be positive, got {cfg.lr}")
        if cfg.batch_size < ctx.world_size:
            raise UserInputError(f"--batch-size {cfg.batch_size} is the global batch; it must be at least the "
                                 f"number of processes ({ctx.world_size}) so that every rank gets an utterance")
        self.teacher = resolve_teacher(cfg.teacher, cfg.ckpt)
        parse_targets(cfg.targets, self.teacher.family.num_layers(self.teacher.checkpoint))  # fail before any write
        dataset = AudioDataset.from_data(cfg.data, cfg.max_utterances, cfg.max_seconds)
        train_files, held = split_heldout(list(dataset.files), cfg.heldout, cfg.seed)
        self.train_set = AudioDataset(train_files, dataset.root, cfg.max_seconds)
        self.heldout_set = AudioDataset(held, dataset.root, cfg.max_seconds)
        existing = outputs.check_output_dir(self.out, cfg.resume, cfg.force)
        ctx.barrier()  # every rank has checked the folder before rank 0 changes it
        if ctx.is_main:
            if cfg.force and existing:
                outputs.clear_run_files(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
        ctx.barrier()

        torch.manual_seed(cfg.seed)  # the same initial mimicker on every rank (DDP also broadcasts it)
        family = self.teacher.family.name
        self.student = Student.from_teacher(family, self.teacher.checkpoint, cfg.arch, cfg.targets, cfg.hidden,
                                            cfg.residual, cfg.heads).to(ctx.device)
        self.targets = self.student.targets
        self.expert = build_teacher_expert(self.teacher).to(ctx.device)
        self.optimizer = torch.optim.Adam(self.student.mimicker.parameters(), lr=cfg.lr)
        self.model = self.student.mimicker
        if ctx.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.student.mimicker, device_ids=ids)
        self.batches = GlobalBatches(len(self.train_set), cfg.batch_size, cfg.seed)
        self.run_identity = self._run_identity()
        self.start_step, self.elapsed = 0, 0.0
        if cfg.resume:
            self._load_state()
        self.cache = self._prepare_cache() if cfg.cache_teacher else None

    def _run_identity(self) -> Dict[str, Any]:
        ident = {k: getattr(self.cfg, k) for k in DistillConfig.RESUME_KEYS}
        ident.update(teacher_source=self.teacher.source, targets=list(self.targets),
                     train_files=len(self.train_set), heldout_files=[str(f) for f in self.heldout_set.files])
        return json.loads(json.dumps(ident, default=str))

    def _load_state(self) -> None:
        from ..checkpoints import load_checkpoint

        state = load_checkpoint(self.out / outputs.STATE, what="training checkpoint")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise UserInputError(f"{self.out / outputs.STATE} is not a distillation training checkpoint; use another "
                                 "--out, or --force to start over there")
        differ = {k: (state["run"].get(k), v) for k, v in self.run_identity.items() if state["run"].get(k) != v}
        if differ:
            lines = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise UserInputError(f"--resume: the run in {self.out} was started with other settings ({lines}); "
                                 "resume with the same settings, or pass --force to start over")
        if state["step"] > self.cfg.steps:
            raise UserInputError(f"--resume: the checkpoint is at step {state['step']}, beyond --steps {self.cfg.steps}; "
                                 f"give --steps {state['step']} or more")
        self.student.mimicker.load_state_dict(state["mimicker"])
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_states(state["rng"])
        self.start_step, self.elapsed = int(state["step"]), float(state["elapsed_seconds"])

    def _prepare_cache(self):
        from .teacher_cache import TeacherCache, cache_fingerprint, check_cache_size, utterance_samples

        front = self.student.front_end
        frames = [front.num_frames(utterance_samples(self.train_set, i)) for i in range(len(self.train_set))]
        size = check_cache_size(frames, front.dim, len(self.targets), self.cfg.cache_max_gb)
        cache = TeacherCache(self.out / outputs.CACHE_DIR,
                             cache_fingerprint(self.teacher.path, self.train_set.files, self.targets, self.cfg.max_seconds))
        count = len(self.train_set)
        if not cache.is_complete(count):
            ctx = self.ctx
            ctx.barrier()

            def compute(wav):
                hs = self.teacher_states([wav.to(ctx.device)])
                return hs[0][0], torch.stack([hs[t][0] for t in self.targets])

            cache.build(self.train_set, shard(list(range(count)), ctx.rank, ctx.world_size), compute)
            ctx.barrier()
            if ctx.is_main:
                cache.finish(count, size)
            ctx.barrier()
        return cache

    # -- one step ------------------------------------------------------------------------------
    def autocast(self):
        if self.ctx.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def teacher_states(self, wavs: List[torch.Tensor]) -> List[torch.Tensor]:
        with torch.inference_mode(), self.autocast():
            hs = self.expert(wavs)["hidden_states"]
        return [h.float().clone() for h in hs]  # clone: leave inference mode (tensors usable by autograd)

    def batch(self, step: int):
        """``(x0, targets, padding mask)`` of this rank's share of global batch ``step``."""
        local = shard(self.batches.batch(step), self.ctx.rank, self.ctx.world_size)
        if self.cache is not None:
            return self.cache.load_batch(local, self.ctx.device)
        wavs = [self.train_set[i][1].to(self.ctx.device) for i in local]
        hs = self.teacher_states(wavs)
        lengths = torch.tensor([len(w) for w in wavs], device=self.ctx.device)
        mask = self.student.front_end.padding_mask_for_lengths(lengths)
        return hs[0], [hs[t] for t in self.targets], mask

    def step_losses(self, step: int) -> torch.Tensor:
        """Per-target loss terms of this rank (their sum over ranks is the global loss); with grad."""
        x0, targets, mask = self.batch(step)
        valid = ~mask
        frames = self.ctx.all_reduce_sum(valid.sum().to(torch.float64).reshape(1))
        with self.autocast():
            preds = self.model(x0, mask)
        return masked_losses(preds, targets, valid, float(frames.item()), self.cfg.cosine_weight)

    # -- loop ----------------------------------------------------------------------------------
    def save_state(self, step: int) -> None:
        from ..io import atomic_torch_save

        atomic_torch_save({
            "format": STATE_FORMAT,
            "step": step,
            "mimicker": {k: v.detach().cpu() for k, v in self.student.mimicker.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_states(),
            "data_position": self.batches.position(step),
            "run": self.run_identity,
            "elapsed_seconds": self.elapsed_now(),
            "student_config": self.student.config.to_dict(),
        }, self.out / outputs.STATE)

    def elapsed_now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t0)

    def train(self) -> Dict[str, Any]:
        from tqdm.auto import tqdm

        cfg, ctx = self.cfg, self.ctx
        log = outputs.TrainLog(self.out / outputs.LOG, self.targets)
        if ctx.is_main:
            log.start(self.start_step)
        self._t0 = time.perf_counter()
        self.student.mimicker.train()
        last_saved = self.start_step if cfg.resume else None
        bar = tqdm(total=cfg.steps, initial=self.start_step, disable=not (cfg.progress and ctx.is_main),
                   desc="distill", dynamic_ncols=True)
        history = []
        for step in range(self.start_step, cfg.steps):
            terms = self.step_losses(step)
            reported = ctx.all_reduce_sum(terms.detach().to(torch.float64).clone())
            loss = float(reported.sum())
            if not torch.isfinite(reported).all():
                bar.close()
                where = (f"the last good checkpoint is {self.out / outputs.STATE} at step {last_saved} (continue with "
                         "--resume once the cause is fixed)") if last_saved else (
                         f"no checkpoint was written yet (the first is at step {cfg.save_every}, --save-every)")
                raise TrainingDivergedError(
                    f"the distillation loss is {loss} at step {step + 1} (per target: "
                    + ", ".join(f"layer {t}: {float(v):.4g}" for t, v in zip(self.targets, reported))
                    + f"); training stopped before that update and {where}. Check --data for silent, corrupt or NaN "
                    "audio, or lower --lr")
            self.optimizer.zero_grad(set_to_none=True)
            (terms.sum() * ctx.world_size).backward()
            self.optimizer.step()
            done = step + 1
            history.append(loss)
            if ctx.is_main:
                log.append(done, loss, reported.tolist(), self.elapsed_now())
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
            if done % cfg.save_every == 0 or done == cfg.steps:
                if ctx.is_main:
                    self.save_state(done)
                last_saved = done
        bar.close()
        self.student.mimicker.eval()
        ctx.barrier()
        return {"steps": cfg.steps, "losses": history, "elapsed_seconds": self.elapsed_now()}

    # -- results -------------------------------------------------------------------------------
    def finish(self, result: Dict[str, Any]) -> Dict[str, Any]:
        """Write student.pt, manifest.json, the loss curve and (optionally) the report; rank 0 only."""
        from .student import save_student, teacher_configs

        if not self.ctx.is_main:
            return {}
        losses = outputs.read_losses(self.out / outputs.LOG)
        teacher = dict(teacher_configs(self.teacher.family.name, self.teacher.checkpoint), source=self.teacher.source)
        training = {"steps": self.cfg.steps, "initial_loss": losses[0] if losses else None,
                    "final_loss": losses[-1] if losses else None, "world_size": self.ctx.world_size,
                    "elapsed_seconds": result["elapsed_seconds"]}
        student_path = save_student(self.student.cpu(), teacher, self.out / outputs.STUDENT, training)
        self.student.to(self.ctx.device)
        outputs.plot_loss_curve(self.out / outputs.LOG, self.out / outputs.CURVE,
                                f"{self.cfg.arch} mimicker of {self.cfg.teacher}: {len(self.targets)} targets")
        manifest = {
            "student": outputs.STUDENT,
            "load_with": f"-u distilled_{self.teacher.family.name} -k {student_path}",
            "teacher": {"family": self.teacher.family.name, "name": self.cfg.teacher, "source": self.teacher.source,
                        "num_layers": teacher["num_layers"]},
            "targets": self.targets,
            "student_config": self.student.config.to_dict(),
            "training": training,
            "config": {k: v for k, v in asdict(self.cfg).items() if k not in ("resume", "force", "progress")},
            "data": {"train_utterances": len(self.train_set),
                     "heldout_files": [str(Path(f).resolve()) for f in self.heldout_set.files]},
            "files": {"train_log": outputs.LOG, "loss_curve": outputs.CURVE, "checkpoint": outputs.STATE},
        }
        if self.cfg.report:
            from .report import build_report, write_report

            wavs = [self.heldout_set[i][1] for i in range(len(self.heldout_set))]
            note = "held-out utterances"
            if not wavs:
                wavs, note = [self.train_set[i][1] for i in range(min(8, len(self.train_set)))], "training utterances (no held-out split)"
            report = build_report(self.student, self.expert, self.teacher.family.name, wavs, self.ctx.device,
                                  repeats=self.cfg.report_repeats, audio_note=note)
            write_report(report, self.out)
            manifest["files"].update(report_json=outputs.REPORT_JSON, report_md=outputs.REPORT_MD)
        outputs.write_manifest(self.out, manifest)
        return manifest


def distill(cfg: DistillConfig, ctx: Optional[DistContext] = None) -> Dict[str, Any]:
    """Run a whole distillation (set-up, training, outputs). Returns the manifest (empty on ranks > 0)."""
    trainer = Trainer(cfg, ctx)
    try:
        trainer.prepare()
        result = trainer.train()
        manifest = trainer.finish(result)
        trainer.ctx.barrier()
        return manifest
    finally:
        trainer.ctx.close()
