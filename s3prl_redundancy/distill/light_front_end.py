"""A small trainable front end in place of the teacher's CNN (``distill --front-end light``).

Design (see ``docs/distillation.md``): a narrow copy of the teacher's CNN *geometry* — the same kernels and
strides, read from the teacher's config, at ``channels`` channels instead of 512 — so its frames fall exactly
where the teacher's do (same count for every length, same padding mask through the teacher's
:class:`~.front_end.FrameGrid`, same wav2vec 2.0 crop), then ``LayerNorm -> Linear(channels -> D)``, padded
frames zeroed, a depthwise temporal convolution (``context`` frames, residual) standing in for the teacher's
positional convolution, and a final ``LayerNorm(D)``::

    wav -> [Conv1d(k_i, s_i, C) -> (LayerNorm(C) after the first) -> GELU] x n -> LayerNorm(C) -> Linear(C->D)
        -> zero the frames past the real samples -> x + GELU(DepthwiseConv1d(D, context)) -> LayerNorm(D)

Every normalisation is per frame (no GroupNorm over time as in s3prl's default CNN), so a real frame never
depends on how much padding its batch has. It is trained to match the teacher's ``hidden_states[0]`` and then
jointly with the mimickers (:mod:`.trainer`).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserInputError
from .front_end import FrameGrid, FrontEnd, build_family_model, pad_waveforms, teacher_configs

KINDS = ("teacher", "light")
DEFAULT_CHANNELS = 64
DEFAULT_CONTEXT = 31  # frames (620 ms at 50 Hz); odd, so the convolution is centred


class LightFrontEnd(nn.Module):
    """Waveforms -> (``(B, T, D)`` at the teacher's frames, padding mask ``(B, T)``, True = padding)."""

    kind = "light"
    trainable = True

    def __init__(self, grid: FrameGrid, normalize: bool, dim: int, channels: int = DEFAULT_CHANNELS,
                 context: int = DEFAULT_CONTEXT):
        super().__init__()
        if int(channels) < 1:
            raise UserInputError(f"must be a positive number of channels, got {channels}", argument="front_end_channels")
        self.grid, self.normalize, self.dim = grid, bool(normalize), int(dim)
        self.channels, self.context_frames = int(channels), int(context)
        widths = [1] + [self.channels] * len(grid.kernels_strides)
        self.convs = nn.ModuleList(nn.Conv1d(widths[i], widths[i + 1], k, s, bias=False)
                                   for i, (k, s) in enumerate(grid.kernels_strides))
        self.first_norm = nn.LayerNorm(self.channels)
        self.norm = nn.LayerNorm(self.channels)
        self.proj = nn.Linear(self.channels, self.dim)
        self.context = nn.Conv1d(self.dim, self.dim, self.context_frames, padding=self.context_frames // 2,
                                 groups=self.dim)
        self.out_norm = nn.LayerNorm(self.dim)

    def config(self) -> Dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "context": self.context_frames}

    @classmethod
    def for_teacher(cls, configs: Mapping[str, Any], channels: int = DEFAULT_CHANNELS,
                    context: int = DEFAULT_CONTEXT) -> "LightFrontEnd":
        """A new (randomly initialised) light front end for the teacher described by :func:`teacher_configs`."""
        model, normalize = build_family_model(configs["family"], configs, num_layers=0)
        return cls(FrameGrid.from_model(model, configs["family"]), normalize, int(model.encoder.embedding_dim),
                   channels, context)

    # the frame grid, as :class:`FrontEnd` exposes it
    def padding_mask_for_lengths(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        return self.grid.padding_mask_for_lengths(wav_lengths)

    def num_frames(self, num_samples: int) -> int:
        return self.grid.num_frames(num_samples)

    def forward(self, wavs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        padded, lengths = pad_waveforms(wavs, self.normalize)
        x = padded.unsqueeze(1)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i == 0:
                x = self.first_norm(x.transpose(1, 2)).transpose(1, 2)
            x = F.gelu(x)
        features = x.transpose(1, 2)
        mask = self.grid.frame_padding_mask(lengths, padded.size(1), features.size(1))
        # the temporal convolution sees only frames made of real samples (the teacher's chunk mask may count
        # one more frame as real) and runs before the crop, so a real frame does not depend on the padding
        complete = torch.arange(features.size(1), device=mask.device)[None, :] < \
            self.grid.conv_output_lengths(lengths)[:, None]
        x = self.proj(self.norm(features)).masked_fill(~complete.unsqueeze(-1), 0.0)
        x = x + F.gelu(self.context(x.transpose(1, 2))).transpose(1, 2)
        return self.grid.crop(self.out_norm(x)), self.grid.crop(mask)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UserInputError(f"{kind!r}: use one of {', '.join(KINDS)}", argument="front_end")
    return kind


def front_end_for_teacher(kind: str, family: str, ckpt: Mapping[str, Any], channels: int = DEFAULT_CHANNELS):
    """The student's front end: the teacher's own, frozen (``teacher``), or a new light one (``light``)."""
    if check_kind(kind) == "teacher":
        return FrontEnd.from_teacher_checkpoint(family, ckpt)
    return LightFrontEnd.for_teacher(teacher_configs(family, ckpt), channels)


def front_end_from_saved(configs: Mapping[str, Any], front_config: Optional[Mapping[str, Any]],
                         state: Mapping[str, torch.Tensor]):
    """Rebuild a saved student's front end; ``front_config`` None (format version 1) is the teacher's."""
    front_config = dict(front_config or {"kind": "teacher"})
    if check_kind(front_config["kind"]) == "teacher":
        return FrontEnd.from_configs(configs, state)
    front = LightFrontEnd.for_teacher(configs, int(front_config["channels"]), int(front_config["context"]))
    front.load_state_dict(state)
    return front
