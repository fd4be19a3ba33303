"""Mimicking layers that replace the whole transformer stack (Dorszewski et al., arXiv 2409.16302).

Each architecture maps the transformer input ``x0`` (``(B, T, D)``, the front end's output) and the frame
padding mask to one prediction per target layer:

- ``mlp`` (the paper's mimicker, chained): stage ``k`` is ``Linear(D->h) -> LayerNorm(h) -> ReLU ->
  Linear(h->D)`` and predicts target ``k`` from the prediction of target ``k-1`` (``x0`` for the first). With
  ``residual`` (the default) a stage adds its output to its input, ``y_k = y_{k-1} + stage_k(y_{k-1})``,
  and its last Linear starts at zero, so training starts from "every layer equals the previous one" (the
  redundancy the paper measures) and the ``h``-dim bottleneck only has to model the change from layer to
  layer. Without it, each prediction is rank-``h`` (``h = 64`` of 768 dims).
- ``linear`` (one stage): every target is an affine, rank-``h`` function of ``x0`` alone:
  ``y_k = x0 + B_k A_k x0`` (no chaining, no non-linearity).
- ``transformer``: one small pre-LN transformer layer of width ``h`` (``heads`` heads, FFN ``4h``) on
  ``Linear(D->h)(x0)``, with a per-target ``Linear(h->D)`` head added to ``x0``; attention ignores padded
  frames, so real frames never depend on the batch's padding.

With ``final_norm`` (set by the student for pre-LN teachers whose last target is the encoder's output,
which s3prl's experts return after the encoder's final LayerNorm while every other hidden state is the
un-normalised residual stream, ~100x larger in ``tiny_hubert``), the last prediction goes through a
LayerNorm that starts as a copy of the teacher's. A residual chain cannot reach a layer-normalised target
from a 10x larger input through an ``h``-dim correction; the norm gives it the teacher's own last step.

``mlp`` and ``linear`` work frame by frame; padded frames get outputs like any other frame (the loss and
the downstream Featurizer ignore them), as in s3prl's experts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserInputError

ARCHITECTURES = ("mlp", "linear", "transformer")


@dataclass
class MimickerConfig:
    """Plain-data description of a mimicker (stored in ``student.pt``)."""

    arch: str
    dim: int  # teacher model dimension D
    targets: List[int]  # hidden_states indices (1-based layer outputs) predicted, increasing
    hidden: int = 64
    residual: bool = True  # mlp only
    heads: int = 0  # transformer only; 0: max(1, hidden // 32)
    final_norm: bool = False  # the last prediction passes through a LayerNorm (pre-LN teachers' last layer)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise UserInputError(f"unknown mimicker architecture {self.arch!r}; use one of {', '.join(ARCHITECTURES)}",
                                 argument="arch")
        if int(self.hidden) < 1:
            raise UserInputError(f"must be a positive width (the paper uses 64), got {self.hidden}", argument="hidden")
        self.targets = [int(t) for t in self.targets]
        if self.arch == "transformer":
            heads = int(self.heads) or max(1, self.hidden // 32)
            if self.hidden % heads:
                raise UserInputError(f"transformer mimicker: {self.hidden} is not divisible by {heads} heads (`heads`)",
                                     argument="hidden")
            self.heads = heads

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MimickerConfig":
        known = {k: data[k] for k in ("arch", "dim", "targets", "hidden", "residual", "heads", "final_norm") if k in data}
        return cls(**known)


class MimickingStage(nn.Module):
    """The paper's mimicker block: ``Linear(D->h) -> LayerNorm(h) -> ReLU -> Linear(h->D)``."""

    def __init__(self, dim: int, hidden: int, zero_output: bool):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, dim)
        if zero_output:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(self.norm(self.down(x))))


class _Mimicker(nn.Module):
    """Holds the optional final LayerNorm of the last prediction (``MimickerConfig.final_norm``)."""

    def __init__(self, cfg: MimickerConfig):
        super().__init__()
        if cfg.final_norm:
            self.final_norm = nn.LayerNorm(cfg.dim)

    def finish(self, outputs: List[torch.Tensor]) -> List[torch.Tensor]:
        if hasattr(self, "final_norm"):
            outputs[-1] = self.final_norm(outputs[-1])
        return outputs


class MLPMimicker(_Mimicker):
    def __init__(self, cfg: MimickerConfig):
        super().__init__(cfg)
        self.residual = bool(cfg.residual)
        self.stages = nn.ModuleList(MimickingStage(cfg.dim, cfg.hidden, self.residual) for _ in cfg.targets)

    def forward(self, x0: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        outputs, y = [], x0
        for stage in self.stages:
            y = y + stage(y) if self.residual else stage(y)
            outputs.append(y)
        return self.finish(outputs)


class LowRankAffine(nn.Module):
    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


class LinearMimicker(_Mimicker):
    def __init__(self, cfg: MimickerConfig):
        super().__init__(cfg)
        self.maps = nn.ModuleList(LowRankAffine(cfg.dim, cfg.hidden) for _ in cfg.targets)

    def forward(self, x0: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        return self.finish([x0 + m(x0) for m in self.maps])


class SmallTransformerLayer(nn.Module):
    """Pre-LN self-attention + FFN at width ``dim``; ``padding_mask`` (True = padding) masks attention keys."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = None
        if padding_mask is not None:
            mask = (~padding_mask)[:, None, None, :]  # True = may attend
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.attn_out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ffn(self.ffn_norm(x))


class TransformerMimicker(_Mimicker):
    def __init__(self, cfg: MimickerConfig):
        super().__init__(cfg)
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.layer = SmallTransformerLayer(cfg.hidden, cfg.heads)
        self.out_norm = nn.LayerNorm(cfg.hidden)
        self.heads = nn.ModuleList(nn.Linear(cfg.hidden, cfg.dim) for _ in cfg.targets)
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x0: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        z = self.out_norm(self.layer(self.inp(x0), padding_mask))
        return self.finish([x0 + head(z) for head in self.heads])


_CLASSES = {"mlp": MLPMimicker, "linear": LinearMimicker, "transformer": TransformerMimicker}


def build_mimicker(cfg: MimickerConfig) -> nn.Module:
    return _CLASSES[cfg.arch](cfg)
