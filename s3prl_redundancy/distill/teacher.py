"""The teacher: which checkpoint ``--teacher`` / ``--ckpt`` name, s3prl's own expert for it, and its stack.

``--teacher`` is an s3prl entry name of a family: ``hubert_local`` / ``wav2vec2_local`` / ``wavlm_local``
(need ``--ckpt``, a local-format checkpoint) or ``hubert`` / ``wav2vec2`` / ``wavlm`` (s3prl's default
weights, downloaded by s3prl's own downloader; ``--ckpt`` replaces them with a local file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from ..errors import UserInputError
from ..families import FAMILIES, Family, detect_family

TEACHER_NAMES: Dict[str, str] = {
    **{f.local_entry: f.name for f in FAMILIES.values()},
    **{f.name: f.name for f in FAMILIES.values()},
    "tiny_hubert": "hubert",  # the embedded default model (its shipped checkpoint unless --ckpt is given)
}


@dataclass
class TeacherSource:
    family: Family
    path: str  # local file the weights were read from
    source: str  # what the user named (path or URL)
    checkpoint: Dict[str, Any]


def resolve_teacher(name: str, ckpt: Optional[str] = None, refresh: bool = False) -> TeacherSource:
    """Load the teacher checkpoint named by ``name`` (and ``ckpt`` for the ``*_local`` names; ``weights_only=True``)."""
    from ..checkpoints import load_family_checkpoint
    from s3prl_redundancy.upstreams.pruned.expert import resolve_source

    from ..families import embedded_checkpoint

    if name not in TEACHER_NAMES:
        raise UserInputError(f"unknown teacher {name!r}; use one of: {', '.join(sorted(TEACHER_NAMES))} "
                             "(the *_local names need `ckpt`, a checkpoint in s3prl's local format)", argument="teacher")
    family = FAMILIES[TEACHER_NAMES[name]]
    ckpt = ckpt or embedded_checkpoint(name)
    if name == family.local_entry and not ckpt:
        raise UserInputError(f"{name} needs `ckpt` (a {family.name} checkpoint in s3prl's local format); "
                             f"or use `teacher={family.name}` for s3prl's default {family.name} weights", argument="teacher")
    source = str(ckpt) if ckpt else family.default_url
    path = resolve_source(family.name, ckpt, refresh)
    _, checkpoint = load_family_checkpoint(path)
    found = detect_family(checkpoint)
    if found != family.name:
        raise UserInputError(f"{path} is a {found} checkpoint, not {family.name}; use "
                             f"`teacher={FAMILIES[found].local_entry}` with this `ckpt`", argument="ckpt")
    return TeacherSource(family, str(path), source, checkpoint)


def build_teacher_expert(teacher: TeacherSource) -> nn.Module:
    """s3prl's own expert for the teacher (the hidden states a downstream would see), frozen, in eval mode."""
    from ..checkpoints import checkpoint_buffer

    expert = teacher.family.expert_class()(checkpoint_buffer(teacher.checkpoint))
    expert.requires_grad_(False)
    return expert.eval()


class TeacherStack(nn.Module):
    """The teacher's transformer layers alone: ``x0 (B, T, D)`` -> last hidden state, as s3prl runs them
    (WavLM's relative position bias is passed from layer to layer; pre-LN models end with the encoder's
    layer norm). Used to time and count the part that the mimicker replaces."""

    def __init__(self, model: nn.Module, family: str):
        super().__init__()
        self.family = family
        # how a layer is run (WavLM passes its position bias on); "" when only counting parameters
        self._run_layer = FAMILIES[family].run_layer if family in FAMILIES else None
        self.layers = model.encoder.layers
        self.final_norm = model.encoder.layer_norm if model.encoder.layer_norm_first else None

    def forward(self, x0: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if padding_mask is not None and not padding_mask.any():
            padding_mask = None
        x = x0.transpose(0, 1)
        pos_bias = None
        for layer in self.layers:
            x, pos_bias = self._run_layer(layer, x, padding_mask, pos_bias)
        x = x.transpose(0, 1)
        return self.final_norm(x) if self.final_norm is not None else x


def stack_parameters(model: nn.Module) -> int:
    """Parameters of the transformer stack (layers, plus the final layer norm of pre-LN models)."""
    return sum(p.numel() for p in TeacherStack(model, "").parameters())
