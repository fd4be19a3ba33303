"""The distilled student: a front end followed by mimicking layers, and its checkpoint.

The front end is the teacher's own, copied and frozen (``front_end="teacher"``, :class:`.front_end.FrontEnd`),
or a small trained one at the teacher's frames (``"light"``, :class:`.light_front_end.LightFrontEnd`).
``Student(wavs)`` returns ``(hidden_states, padding_mask)`` with ``hidden_states[0]`` the transformer input
(equal to the teacher's ``hidden_states[0]`` with the teacher's front end, trained to match it with the light
one) and ``hidden_states[i]`` the prediction of the teacher's ``hidden_states[targets[i-1]]``.

``student.pt`` is a plain dict (loads with ``weights_only=True``)::

    {"format": "s3prl_redundancy.distilled_student", "format_version": 1 (teacher front end) or 2 (light),
     "teacher": {"family", "model_cfg", "task_cfg" (HuBERT / wav2vec 2.0), "num_layers", "source"},
     "front_end": front-end state dict,
     "front_end_config": {"kind": "teacher"} or {"kind": "light", "channels", "context"} (absent in version 1),
     "student_config": {"arch", "dim", "targets", "hidden", "residual", "heads"},
     "student": mimicker state dict,
     "targets": [hidden_states indices of the teacher],
     "training": {"steps", "final_loss", ...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..checkpoints import check_family
from ..errors import UserInputError
from ..families import FAMILIES, detect_family
from .front_end import teacher_configs
from .light_front_end import front_end_for_teacher, front_end_from_saved
from .mimickers import MimickerConfig, build_mimicker

FORMAT = "s3prl_redundancy.distilled_student"
FORMAT_VERSION = 2  # 2: ``front_end_config`` (light front ends); teacher-front-end students are still written as 1


def parse_targets(spec: Union[None, str, Iterable[int]], num_layers: int) -> List[int]:
    """``None`` / ``"all"``: every layer ``1..L``; else a comma list of 1-based hidden_states indices."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return list(range(1, num_layers + 1))
    if isinstance(spec, str):
        try:
            targets = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise UserInputError(f"{spec!r} is not a comma-separated list of layer numbers like 4,8,12",
                                 argument="targets") from None
    else:
        targets = [int(t) for t in spec]
    if not targets:
        raise UserInputError("empty; give layer numbers like 4,8,12 or leave it out for every layer", argument="targets")
    bad = [t for t in targets if not 1 <= t <= num_layers]
    if bad:
        raise UserInputError(
            f"{bad} out of range: the teacher has {num_layers} transformer layers, so targets are "
            f"hidden_states indices 1..{num_layers} (1-based layer outputs; 0 is the input, always included)",
            argument="targets")
    if any(b <= a for a, b in zip(targets, targets[1:])):
        raise UserInputError(f"{targets} must be strictly increasing with no duplicates, e.g. {sorted(set(targets))}",
                             argument="targets")
    return targets


class Student(nn.Module):
    def __init__(self, front_end: nn.Module, config: MimickerConfig):
        super().__init__()
        self.front_end = front_end
        self.config = config
        self.mimicker = build_mimicker(config)

    @property
    def targets(self) -> List[int]:
        return list(self.config.targets)

    def forward(self, wavs: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], torch.Tensor]:
        x0, mask = self.front_end(wavs)
        return [x0, *self.mimicker(x0, mask)], mask

    @classmethod
    def from_teacher(cls, family: str, teacher_ckpt: Mapping[str, Any], arch: str = "mlp", targets=None,
                     hidden: int = 64, residual: bool = True, heads: int = 0, front_end: str = "teacher",
                     front_end_channels: int = 64, final_norm: bool = True) -> "Student":
        """A new student of ``teacher_ckpt``: ``front_end`` ``"teacher"`` (copied, frozen) or ``"light"``.
        ``final_norm``: when the teacher is pre-LN and its last layer is a target, that prediction ends with a
        copy of the teacher's final LayerNorm (trained further; see :mod:`.mimickers`)."""
        fam = FAMILIES[family]
        front = front_end_for_teacher(front_end, family, teacher_ckpt, front_end_channels)
        num_layers = fam.num_layers(teacher_ckpt)
        chosen = parse_targets(targets, num_layers)
        norm = final_norm and bool(fam.checkpoint_config(teacher_ckpt).layer_norm_first) and chosen[-1] == num_layers
        cfg = MimickerConfig(arch=arch, dim=front.dim, targets=chosen, hidden=hidden, residual=residual, heads=heads,
                             final_norm=norm)
        student = cls(front, cfg)
        if norm:
            weights = fam.weights(teacher_ckpt)
            student.mimicker.final_norm.load_state_dict(
                {p: weights[f"encoder.layer_norm.{p}"].detach().clone().float() for p in ("weight", "bias")})
        return student


def student_checkpoint(student: Student, teacher: Mapping[str, Any], training: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The ``student.pt`` dict. ``teacher``: :func:`teacher_configs` plus ``source``."""
    light = student.front_end.kind != "teacher"
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if light else 1,  # readers of version 1 still load teacher-front-end students
        "teacher": dict(teacher),
        "front_end": {k: v.detach().cpu().clone() for k, v in student.front_end.state_dict().items()},
        "front_end_config": student.front_end.config(),
        "student_config": student.config.to_dict(),
        "student": {k: v.detach().cpu().clone() for k, v in student.mimicker.state_dict().items()},
        "targets": student.targets,
        "training": dict(training or {}),
    }


def check_student_checkpoint(ckpt: Any, path: str, expected_family: Optional[str] = None) -> None:
    """Clear errors for a file that is not a student checkpoint or belongs to another family's entry."""
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
        family = detect_family(ckpt) if isinstance(ckpt, Mapping) else None
        hint = (f" It is a {family} teacher checkpoint: load it with -u {FAMILIES[family].local_entry}, or distill "
                f"it with `s3prl-redundancy distill --teacher {FAMILIES[family].local_entry} --ckpt {path}`.") if family else ""
        raise UserInputError(f"{path} is not a distilled student checkpoint (written by `s3prl-redundancy distill` as "
                             f"student.pt).{hint}")
    version = int(ckpt.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise UserInputError(f"{path} has student format version {version}; this s3prl-redundancy reads up to "
                             f"{FORMAT_VERSION}: upgrade s3prl-redundancy")
    check_family(ckpt["teacher"]["family"], expected_family, f"student {path}", entry="distilled")


def load_student(path, expected_family: Optional[str] = None) -> Tuple[Student, Dict[str, Any]]:
    """``(student in eval mode, checkpoint dict)`` from ``student.pt`` (``weights_only=True``)."""
    from ..checkpoints import load_checkpoint

    ckpt = load_checkpoint(path, what="student checkpoint")
    check_student_checkpoint(ckpt, str(path), expected_family)
    return student_from_checkpoint(ckpt), ckpt


def student_from_checkpoint(ckpt: Mapping[str, Any]) -> Student:
    front = front_end_from_saved(ckpt["teacher"], ckpt.get("front_end_config"), ckpt["front_end"])
    student = Student(front, MimickerConfig.from_dict(ckpt["student_config"]))
    student.mimicker.load_state_dict(ckpt["student"])
    return student.eval()


def save_student(student: Student, teacher: Mapping[str, Any], path, training=None) -> Path:
    from ..io import atomic_torch_save

    return atomic_torch_save(student_checkpoint(student, teacher, training), path)


__all__ = ["Student", "parse_targets", "student_checkpoint", "load_student", "student_from_checkpoint",
           "save_student", "check_student_checkpoint", "teacher_configs", "FORMAT"]
