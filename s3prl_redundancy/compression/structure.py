"""The modules of a compressed model, and rebuilding a model from a compressed checkpoint.

A compressed checkpoint is the source family's s3prl local format whose ``"s3prl_redundancy"`` entry holds
a ``structure``: one entry per position of ``encoder.layers``::

    {"version": 1,
     "positions": [{"kind": "layer", "source": 0, "heads": [0, 2, 3], "lowrank": {"fc1": 96}},
                   {"kind": "bridge", "replaces": [1, 2]}, ...],
     "bias_heads": [0, 1, 2, 3]}          # WavLM: heads kept in the relative position bias table

``heads`` are the kept heads (ids of the source model; ``null`` = all) and ``lowrank`` the rank of every
factorised ``nn.Linear`` (path inside the layer). To load it, the family's model is built from the config
(full size), every self-attention module is replaced by :class:`CompressedSelfAttention` with the stored
heads, the factorised linears by :class:`LowRankLinear`, bridges put in place, and then the stored
weights are loaded *strictly*: every shape is checked. Without a ``structure`` a checkpoint is the plain
local format that s3prl's own ``<family>_local`` entry loads.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserInputError
from ..families import FAMILIES, detect_family

META_KEY = "s3prl_redundancy"
STRUCTURE_VERSION = 1
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------
class LowRankLinear(nn.Module):
    """``nn.Linear(in, out)`` stored as ``up(down(x))``: ``down`` is ``rank x in`` (no bias), ``up`` is
    ``out x rank`` (with the original bias). ``rank * (in + out)`` weights instead of ``in * out``."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = int(in_features), int(out_features), int(rank)
        self.down = nn.Linear(self.in_features, self.rank, bias=False)
        self.up = nn.Linear(self.rank, self.out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def effective_weight(self) -> torch.Tensor:
        return self.up.weight @ self.down.weight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The ``out x in`` matrix a Linear or LowRankLinear applies."""
    return module.effective_weight() if isinstance(module, LowRankLinear) else module.weight


def _keep_outputs(module: nn.Module, rows: torch.Tensor) -> nn.Module:
    """The same module with only output features ``rows`` (a new module; weights copied)."""
    if isinstance(module, LowRankLinear):
        new = LowRankLinear(module.in_features, len(rows), module.rank, bias=module.up.bias is not None)
        new.down.weight.data = module.down.weight.data.clone()
        new.up.weight.data = module.up.weight.data[rows].clone()
        if module.up.bias is not None:
            new.up.bias.data = module.up.bias.data[rows].clone()
        return new
    new = nn.Linear(module.in_features, len(rows), bias=module.bias is not None)
    new.weight.data = module.weight.data[rows].clone()
    if module.bias is not None:
        new.bias.data = module.bias.data[rows].clone()
    return new


def _keep_inputs(module: nn.Module, cols: torch.Tensor) -> nn.Module:
    """The same module reading only input features ``cols``."""
    if isinstance(module, LowRankLinear):
        new = LowRankLinear(len(cols), module.out_features, module.rank, bias=module.up.bias is not None)
        new.down.weight.data = module.down.weight.data[:, cols].clone()
        new.up.weight.data = module.up.weight.data.clone()
        if module.up.bias is not None:
            new.up.bias.data = module.up.bias.data.clone()
        return new
    new = nn.Linear(len(cols), module.out_features, bias=module.bias is not None)
    new.weight.data = module.weight.data[:, cols].clone()
    if module.bias is not None:
        new.bias.data = module.bias.data.clone()
    return new


class CompressedSelfAttention(nn.Module):
    """Self-attention with any subset of the source model's heads, for HuBERT, wav2vec 2.0 and WavLM.

    ``q_proj``/``k_proj``/``v_proj`` map ``D -> h * d`` and ``out_proj`` maps ``h * d -> D`` (``h`` kept heads
    of size ``d``), so a model with fewer heads is physically smaller. Called like the family's own
    attention module (time-major ``(T, B, D)``, ``key_padding_mask`` True = padding) and returns what it
    returns: ``(out, None)``, or ``(out, None, position_bias)`` for WavLM.

    WavLM: the first attention layer owns ``relative_attention_bias`` (``num_buckets x H_b``, one column
    per head in ``bias_heads``) and computes the position bias once; every layer picks its heads' columns
    (``bias_index``) and applies its gate (``gru_rel_pos``: ``grep_linear``, ``grep_a``), computed as s3prl
    does from the layer input split into the *source* heads' chunks (``head_index``).
    """

    def __init__(
        self,
        embed_dim: int,
        head_dim: int,
        head_ids: Sequence[int],
        *,
        wavlm: bool = False,
        relative_position: bool = False,
        bias_heads: Optional[Sequence[int]] = None,
        owns_bias: bool = False,
        num_buckets: int = 0,
        max_distance: int = 0,
        gru_rel_pos: bool = False,
        dropout: float = 0.0,
        build_projections: bool = True,
    ) -> None:
        super().__init__()
        if len(head_ids) < 1:
            raise UserInputError("every attention layer must keep at least one head")
        self.embed_dim, self.head_dim = int(embed_dim), int(head_dim)
        self.source_heads = self.embed_dim // self.head_dim
        self.head_ids = [int(h) for h in head_ids]
        self.num_heads = len(self.head_ids)
        self.scaling = self.head_dim ** -0.5
        self.dropout = float(dropout)
        self.wavlm = bool(wavlm)
        self.relative_position = bool(wavlm and relative_position)
        self.gru_rel_pos = bool(wavlm and gru_rel_pos and relative_position)
        self.num_buckets, self.max_distance = int(num_buckets), int(max_distance)
        self.register_buffer("head_index", torch.tensor(self.head_ids, dtype=torch.long), persistent=False)
        inner = self.num_heads * self.head_dim
        if build_projections:
            self.q_proj = nn.Linear(self.embed_dim, inner)
            self.k_proj = nn.Linear(self.embed_dim, inner)
            self.v_proj = nn.Linear(self.embed_dim, inner)
            self.out_proj = nn.Linear(inner, self.embed_dim)
        self.bias_heads: Optional[List[int]] = None
        self.has_relative_attention_bias = False
        if self.relative_position:
            self.bias_heads = list(bias_heads if bias_heads is not None else range(self.source_heads))
            missing = [h for h in self.head_ids if h not in self.bias_heads]
            if missing:
                raise ValueError(f"heads {missing} have no column in the relative position bias table {self.bias_heads}")
            self.register_buffer("bias_index", torch.tensor([self.bias_heads.index(h) for h in self.head_ids], dtype=torch.long),
                                 persistent=False)
            if owns_bias:
                self.has_relative_attention_bias = True
                self.relative_attention_bias = nn.Embedding(self.num_buckets, len(self.bias_heads))
            if self.gru_rel_pos:
                self.grep_linear = nn.Linear(self.head_dim, 8)
                self.grep_a = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        self.recorder: Optional[Dict[str, torch.Tensor]] = None  # head importance, see start_recording

    # ---- conversion from the family's own module -------------------------------------
    @classmethod
    def from_module(cls, attn: nn.Module, wavlm: bool, dropout: float = 0.0) -> "CompressedSelfAttention":
        """All heads of s3prl's ``MultiheadAttention`` (fairseq's or WavLM's), sharing its parameters."""
        if isinstance(attn, cls):
            return attn
        if getattr(attn, "bias_k", None) is not None or getattr(attn, "add_zero_attn", False):
            raise UserInputError("attention with bias_k/bias_v or add_zero_attn is not supported")
        new = cls(attn.embed_dim, attn.head_dim, range(attn.num_heads), wavlm=wavlm, relative_position=wavlm,
                  owns_bias=bool(getattr(attn, "has_relative_attention_bias", False)),
                  num_buckets=getattr(attn, "num_buckets", 0), max_distance=getattr(attn, "max_distance", 0),
                  gru_rel_pos=bool(getattr(attn, "gru_rel_pos", False)), dropout=dropout, build_projections=False)
        for name in ATTENTION_PROJECTIONS:
            setattr(new, name, getattr(attn, name))
        if new.has_relative_attention_bias:
            new.relative_attention_bias = attn.relative_attention_bias
        if new.gru_rel_pos:
            new.grep_linear = attn.grep_linear
            new.grep_a = attn.grep_a
        return new

    # ---- head pruning ----------------------------------------------------------------
    def keep_heads(self, keep: Sequence[int]) -> None:
        """Keep only the heads with source ids ``keep`` (a subset of ``head_ids``); shrinks the projections."""
        keep = [int(h) for h in keep]
        if not keep:
            raise UserInputError("every attention layer must keep at least one head")
        unknown = [h for h in keep if h not in self.head_ids]
        if unknown:
            raise ValueError(f"heads {unknown} are not in this layer (it has {self.head_ids})")
        local = [self.head_ids.index(h) for h in keep]
        idx = torch.cat([torch.arange(i * self.head_dim, (i + 1) * self.head_dim) for i in local])
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(self, name, _keep_outputs(getattr(self, name), idx))
        self.out_proj = _keep_inputs(self.out_proj, idx)
        if self.gru_rel_pos:
            self.grep_a = nn.Parameter(self.grep_a.data[:, local].clone())
        self.head_ids = keep
        self.num_heads = len(keep)
        self.head_index = torch.tensor(keep, dtype=torch.long, device=self.head_index.device)
        if self.relative_position:
            self.bias_index = torch.tensor([self.bias_heads.index(h) for h in keep], dtype=torch.long, device=self.head_index.device)

    def keep_bias_columns(self, bias_heads: Sequence[int]) -> None:
        """Keep only the relative position bias columns of ``bias_heads`` (the owner shrinks its table)."""
        if not self.relative_position:
            return
        bias_heads = [int(h) for h in bias_heads]
        if self.has_relative_attention_bias:
            cols = torch.tensor([self.bias_heads.index(h) for h in bias_heads], dtype=torch.long)
            table = nn.Embedding(self.num_buckets, len(bias_heads))
            table.weight.data = self.relative_attention_bias.weight.data[:, cols].clone()
            self.relative_attention_bias = table
        self.bias_heads = bias_heads
        self.bias_index = torch.tensor([bias_heads.index(h) for h in self.head_ids], dtype=torch.long, device=self.head_index.device)

    # ---- WavLM position bias ---------------------------------------------------------
    def _relative_positions_bucket(self, relative_positions: torch.Tensor, bidirectional: bool = True) -> torch.Tensor:
        from s3prl.upstream.wavlm.modules import MultiheadAttention as _WavLMAttention

        return _WavLMAttention._relative_positions_bucket(self, relative_positions, bidirectional=bidirectional)

    def compute_bias(self, query_length: int, key_length: int) -> torch.Tensor:
        from s3prl.upstream.wavlm.modules import MultiheadAttention as _WavLMAttention

        return _WavLMAttention.compute_bias(self, query_length, key_length)

    # ---- head importance -------------------------------------------------------------
    def start_recording(self) -> None:
        """Accumulate, per head, the sum over frames of the norm of the head's contribution to the output."""
        self.recorder = {"norm_sum": torch.zeros(self.num_heads, dtype=torch.float64), "frames": torch.zeros((), dtype=torch.float64)}

    def stop_recording(self) -> Optional[Dict[str, torch.Tensor]]:
        rec, self.recorder = self.recorder, None
        return rec

    def _record(self, heads_out: torch.Tensor, key_padding_mask: Optional[torch.Tensor]) -> None:
        # heads_out: (B, h, T, d); contribution of head i = o_i W_out[:, i]^T (D per frame)
        w = effective_weight(self.out_proj).detach()
        valid = None if key_padding_mask is None else ~key_padding_mask.to(torch.bool)  # (B, T)
        for i in range(self.num_heads):
            block = w[:, i * self.head_dim : (i + 1) * self.head_dim]
            norms = (heads_out[:, i] @ block.T).norm(dim=-1)  # (B, T)
            if valid is not None:
                norms = norms[valid]
            self.recorder["norm_sum"][i] += norms.double().sum().cpu()
        n = heads_out.shape[0] * heads_out.shape[2] if valid is None else int(valid.sum())
        self.recorder["frames"] += n

    # ---- forward ---------------------------------------------------------------------
    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=False, attn_mask=None,
                position_bias=None, **unused):
        tgt_len, bsz, dim = query.shape
        h, d = self.num_heads, self.head_dim
        x = query
        if self.has_relative_attention_bias and position_bias is None:
            table = self.compute_bias(tgt_len, tgt_len)  # (H_b, T, T)
            position_bias = table.unsqueeze(0).repeat(bsz, 1, 1, 1).view(bsz * table.shape[0], tgt_len, tgt_len)
        q = self.q_proj(x).view(tgt_len, bsz, h, d).permute(1, 2, 0, 3)
        k = self.k_proj(x).view(tgt_len, bsz, h, d).permute(1, 2, 0, 3)
        v = self.v_proj(x).view(tgt_len, bsz, h, d).permute(1, 2, 0, 3)
        mask = None
        if self.relative_position and position_bias is not None:
            columns = position_bias.shape[0] // bsz
            bias = position_bias.view(bsz, columns, tgt_len, tgt_len).index_select(1, self.bias_index)
            if self.gru_rel_pos:
                chunks = x.transpose(0, 1).reshape(bsz, tgt_len, self.source_heads, d).index_select(2, self.head_index)
                chunks = chunks.permute(0, 2, 1, 3)  # (B, h, T, d): the source heads' slices of the layer input
                gate_a, gate_b = torch.sigmoid(self.grep_linear(chunks).view(bsz, h, tgt_len, 2, 4).sum(-1)).chunk(2, dim=-1)
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
            mask = bias.to(q.dtype)
        if attn_mask is not None:
            extra = attn_mask.to(q.dtype) if attn_mask.dtype != torch.bool else torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
            mask = extra if mask is None else mask + extra
        if key_padding_mask is not None:
            pad = key_padding_mask.to(torch.bool).view(bsz, 1, 1, tgt_len)
            base = torch.zeros(bsz, 1, 1, tgt_len, dtype=q.dtype, device=q.device) if mask is None else mask
            mask = base.masked_fill(pad, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                             scale=self.scaling)
        if self.recorder is not None:
            self._record(out.detach(), key_padding_mask)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, h * d))
        if self.wavlm:
            return out, None, position_bias
        return out, None


class LinearBridge(nn.Module):
    """A linear map ``y = W x + b`` standing in for a removed run of layers (``replaces``: their source ids)."""

    def __init__(self, dim: int, wavlm: bool = False, replaces: Sequence[int] = ()) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.wavlm = bool(wavlm)
        self.replaces = [int(i) for i in replaces]

    def forward(self, x, self_attn_mask=None, self_attn_padding_mask=None, need_weights=False, pos_bias=None, **unused):
        y = self.linear(x)
        if self.wavlm:
            return y, None, pos_bias
        return y, (None, y)


# --------------------------------------------------------------------------------------
# Building models
# --------------------------------------------------------------------------------------
def family_of(ckpt: Mapping[str, Any]) -> str:
    family = detect_family(ckpt)
    if family is None:
        raise UserInputError("not an s3prl HuBERT / wav2vec 2.0 / WavLM local checkpoint")
    return family


def model_config(ckpt: Mapping[str, Any]) -> Any:
    """The family's config object of ``ckpt`` (dataclass or WavLMConfig) with every default filled in."""
    return FAMILIES[family_of(ckpt)].checkpoint_config(ckpt)


def build_model(ckpt: Mapping[str, Any]) -> nn.Module:
    """The family's model for ``ckpt``'s config (random weights, full-size layers)."""
    return FAMILIES[family_of(ckpt)].build_model(ckpt)


def structure_of(ckpt: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    return (ckpt.get(META_KEY) or {}).get("structure")


def convert_attention(model: nn.Module, family: str) -> nn.Module:
    """Replace every layer's self-attention by an all-heads :class:`CompressedSelfAttention` sharing its
    weights (numerically the same model); idempotent."""
    cfg_dropout = 0.0
    for layer in model.encoder.layers:
        if isinstance(layer, LinearBridge):
            continue
        attn = layer.self_attn
        if not isinstance(attn, CompressedSelfAttention):
            p = getattr(getattr(attn, "dropout_module", None), "p", cfg_dropout)
            layer.self_attn = CompressedSelfAttention.from_module(attn, wavlm=FAMILIES[family].position_bias, dropout=p)
    return model


def apply_structure(model: nn.Module, family: str, structure: Mapping[str, Any], cfg: Any) -> nn.Module:
    """Reshape a freshly built ``model`` to ``structure`` (weights are loaded afterwards)."""
    if int(structure.get("version", 0)) != STRUCTURE_VERSION:
        raise UserInputError(f"compressed structure version {structure.get('version')} is not supported (expected {STRUCTURE_VERSION}); "
                             "update s3prl-redundancy")
    positions = structure["positions"]
    layers = model.encoder.layers
    if len(layers) != len(positions):
        raise UserInputError(f"checkpoint config has {len(layers)} encoder layers but its structure lists {len(positions)}")
    wavlm = FAMILIES[family].position_bias  # layers take and return the relative position bias
    dim = int(cfg.encoder_embed_dim)
    heads_total = int(cfg.encoder_attention_heads)
    head_dim = dim // heads_total
    relative = bool(wavlm and getattr(cfg, "relative_position_embedding", False))  # a bias table exists
    bias_heads = structure.get("bias_heads") or list(range(heads_total))
    owner = next((i for i, p in enumerate(positions) if p["kind"] == "layer"), None)
    new_layers = []
    for pos, spec in enumerate(positions):
        if spec["kind"] == "bridge":
            new_layers.append(LinearBridge(dim, wavlm, spec.get("replaces", ())))
            continue
        if spec["kind"] != "layer":
            raise UserInputError(f"unknown structure entry kind {spec['kind']!r}")
        layer = layers[pos]
        heads = spec.get("heads")
        heads = list(range(heads_total)) if heads is None else heads
        layer.self_attn = CompressedSelfAttention(
            dim, head_dim, heads, wavlm=wavlm, relative_position=wavlm, bias_heads=bias_heads,
            owns_bias=relative and pos == owner, num_buckets=getattr(cfg, "num_buckets", 0),
            max_distance=getattr(cfg, "max_distance", 0), gru_rel_pos=bool(getattr(cfg, "gru_rel_pos", False)),
            dropout=float(getattr(cfg, "attention_dropout", 0.0)),
        )
        for path, rank in (spec.get("lowrank") or {}).items():
            parent, name = _parent(layer, path)
            old = getattr(parent, name)
            if not isinstance(old, nn.Linear):
                raise UserInputError(f"structure: {path} of layer {pos} is not a linear layer")
            setattr(parent, name, LowRankLinear(old.in_features, old.out_features, int(rank), bias=old.bias is not None))
        new_layers.append(layer)
    model.encoder.layers = nn.ModuleList(new_layers)
    return model


def _parent(module: nn.Module, path: str) -> Tuple[nn.Module, str]:
    parts = path.split(".")
    for p in parts[:-1]:
        module = getattr(module, p)
    return module, parts[-1]


def describe_structure(model: nn.Module, family: str, source_layers: Sequence[int]) -> Dict[str, Any]:
    """The ``structure`` entry of a live (converted) model; ``source_layers``: source id of each real layer."""
    positions = []
    sources = iter(source_layers)
    bias_heads = None
    for layer in model.encoder.layers:
        if isinstance(layer, LinearBridge):
            positions.append({"kind": "bridge", "replaces": list(layer.replaces)})
            continue
        attn = layer.self_attn
        entry: Dict[str, Any] = {"kind": "layer", "source": int(next(sources)), "heads": None, "lowrank": {}}
        if isinstance(attn, CompressedSelfAttention):
            if attn.head_ids != list(range(attn.source_heads)):
                entry["heads"] = list(attn.head_ids)
            if attn.has_relative_attention_bias:
                bias_heads = list(attn.bias_heads)
        for name, sub in layer.named_modules():
            if isinstance(sub, LowRankLinear):
                entry["lowrank"][name] = sub.rank
        positions.append(entry)
    out = {"version": STRUCTURE_VERSION, "positions": positions}
    if bias_heads is not None:
        out["bias_heads"] = bias_heads
    return out


def load_model(ckpt: Mapping[str, Any]) -> nn.Module:
    """The model of ``ckpt`` (plain or compressed), weights loaded strictly, in eval mode."""
    family = family_of(ckpt)
    fam = FAMILIES[family]
    model = build_model(ckpt)
    structure = structure_of(ckpt)
    if structure is not None:
        apply_structure(model, family, structure, model_config(ckpt))
    try:
        model.load_state_dict(fam.weights(ckpt), strict=True)
    except RuntimeError as e:
        raise UserInputError(f"the checkpoint's weights do not fit its config/structure: {str(e).splitlines()[0]} ...") from None
    return model.eval()


def model_to_checkpoint(model: nn.Module, base_ckpt: Mapping[str, Any], meta: Mapping[str, Any],
                        structure: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """A checkpoint with ``model``'s weights, ``base_ckpt``'s configs and ``meta`` (+ ``structure``)."""
    family = family_of(base_ckpt)
    fam = FAMILIES[family]
    out = dict(base_ckpt)
    out[fam.config_key] = dict(base_ckpt[fam.config_key], encoder_layers=len(model.encoder.layers))
    out[fam.weights_key] = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    new_meta = dict(meta)
    if structure is not None:
        new_meta["structure"] = dict(structure)
    else:
        new_meta.pop("structure", None)
    out[META_KEY] = new_meta
    return out


def make_upstream(ckpt: Mapping[str, Any]) -> nn.Module:
    """An s3prl upstream (expert) running ``ckpt``: s3prl's own expert for a plain checkpoint, this
    project's compressed expert for one with a ``structure``. In eval mode."""
    from ..checkpoints import checkpoint_buffer

    family = family_of(ckpt)
    if structure_of(ckpt) is None:
        return FAMILIES[family].expert_class()(checkpoint_buffer(ckpt)).eval()
    from s3prl_redundancy.upstreams.compressed.expert import EXPERTS

    return EXPERTS[family].from_checkpoint(ckpt).eval()
