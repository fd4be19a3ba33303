"""The teacher's front end: everything s3prl runs before transformer layer 0, copied and frozen.

For HuBERT, wav2vec 2.0 and WavLM (s3prl's ``HubertModel``, ``Wav2Vec2Model``, ``WavLM``) that is, in order:
waveform normalisation (if the task config asks for it), the CNN ``feature_extractor``, ``layer_norm`` over
the CNN channels, the frame padding mask, ``post_extract_proj``, zeroing padded frames, the positional
convolution ``encoder.pos_conv`` added to its input, and ``encoder.layer_norm`` for post-LN models
(``layer_norm_first=False``). Its output equals the teacher expert's ``hidden_states[0]`` exactly.

The three classes use the same attribute names; they differ only in how the frame padding mask is made:
HuBERT and WavLM mark a frame as padding when all the samples of its (length / frames) chunk are padding,
wav2vec 2.0 uses the CNN's output-length formula (and no mask at all when nothing is padded) and may crop
the sequence to a multiple (``crop_seq_to_multiple``). Both rules are reproduced here.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ..errors import UserInputError
from ..families import FAMILIES, MASK_CHUNKS, MASK_CONV_LENGTHS  # noqa: F401 - MASK_*: the frame-mask rules


def teacher_configs(family: str, ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """The plain-dict configs needed to rebuild the front end (stored in ``student.pt``)."""
    fam = FAMILIES[family]
    out = {"family": family, "model_cfg": dict(ckpt[fam.config_key]), "num_layers": fam.num_layers(ckpt)}
    if "task_cfg" in ckpt:
        out["task_cfg"] = dict(ckpt["task_cfg"])
    return out


def build_family_model(family: str, configs: Mapping[str, Any], num_layers: Optional[int] = None):
    """``(model, normalize_waveform)``: s3prl's model class for ``family``; ``num_layers`` overrides the depth."""
    if family not in FAMILIES:
        raise UserInputError(f"unknown teacher family {family!r}; use one of {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    model_cfg = dict(configs["model_cfg"])
    if num_layers is not None:
        model_cfg["encoder_layers"] = num_layers
    ckpt = {fam.config_key: model_cfg, **({"task_cfg": dict(configs["task_cfg"])} if "task_cfg" in configs else {})}
    if num_layers == 0:
        return fam.front_end_model(ckpt)
    return fam.build_model(ckpt), fam.normalizes_waveform(ckpt)


class FrameGrid:
    """Where the teacher's frames fall: its CNN's ``(kernel, stride)`` list, the optional crop to a multiple
    (wav2vec 2.0's ``crop_seq_to_multiple``) and the family's frame-mask rule. Both front ends use it, so a
    light front end has the teacher's frame count and padding mask for every input length and batch."""

    def __init__(self, kernels_strides: Sequence[Tuple[int, int]], crop_multiple: int, mask_rule: str):
        self.kernels_strides = [(int(k), int(s)) for k, s in kernels_strides]
        self.crop_multiple = int(crop_multiple or 1)
        self.mask_rule = mask_rule

    @classmethod
    def from_model(cls, model: nn.Module, family: str) -> "FrameGrid":
        return cls(conv_kernels_and_strides(model.feature_extractor),
                   int(getattr(model, "crop_seq_to_multiple", 1) or 1), FAMILIES[family].frame_mask)

    def conv_output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """wav2vec 2.0's ``_get_feat_extract_output_lengths`` (float floor, as s3prl computes it)."""
        lengths = lengths.to(torch.float32)
        for kernel, stride in self.kernels_strides:
            lengths = torch.floor((lengths - kernel) / stride + 1)
        return lengths.to(torch.long)

    def frame_padding_mask(self, wav_lengths: torch.Tensor, num_samples: int, num_frames: int) -> torch.Tensor:
        """The teacher's frame mask for a batch padded to ``num_samples`` giving ``num_frames`` CNN frames
        (before any crop). True marks padding. Exactly what the family's ``forward`` computes."""
        device = wav_lengths.device
        batch = wav_lengths.numel()
        sample_pad = torch.arange(num_samples, device=device).unsqueeze(0) >= wav_lengths.unsqueeze(1)
        if self.mask_rule == MASK_CHUNKS:
            extra = num_samples % num_frames
            if extra > 0:
                sample_pad = sample_pad[:, :-extra]
            return sample_pad.view(batch, num_frames, -1).all(-1)
        if not sample_pad.any():
            return torch.zeros(batch, num_frames, dtype=torch.bool, device=device)
        out_lengths = self.conv_output_lengths(wav_lengths)
        return torch.arange(num_frames, device=device).unsqueeze(0) >= out_lengths.unsqueeze(1)

    def padding_mask_for_lengths(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        """The mask a front end returns for waveforms of these lengths, without running a CNN."""
        num_samples = int(wav_lengths.max())
        cnn_frames = int(self.conv_output_lengths(torch.tensor([num_samples]))[0])
        return self.crop(self.frame_padding_mask(wav_lengths, num_samples, cnn_frames))

    def num_frames(self, num_samples: int) -> int:
        """CNN frames for ``num_samples`` samples (after the optional crop)."""
        frames = int(self.conv_output_lengths(torch.tensor([num_samples]))[0])
        return frames - frames % self.crop_multiple

    def crop(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames`` (time on dim 1) cut to a multiple of ``crop_multiple``."""
        drop = frames.size(1) % self.crop_multiple
        return frames[:, :-drop] if drop else frames

    def frames_and_mask(self, features: torch.Tensor, lengths: torch.Tensor, num_samples: int):
        """CNN output ``(B, T, C)`` of a batch padded to ``num_samples`` -> (cropped features, padding mask)."""
        mask = self.frame_padding_mask(lengths, num_samples, features.size(1))
        return self.crop(features), self.crop(mask)


def pad_waveforms(wavs: Sequence[torch.Tensor], normalize: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(padded (B, S), lengths)``, each waveform layer-normalised first when the teacher does so."""
    if normalize:
        wavs = [F.layer_norm(wav, wav.shape) for wav in wavs]
    lengths = torch.tensor([len(w) for w in wavs], dtype=torch.long, device=wavs[0].device)
    return pad_sequence(list(wavs), batch_first=True), lengths


class FrontEnd(nn.Module):
    """Waveforms -> (transformer input ``(B, T, D)``, frame padding mask ``(B, T)`` bool, True = padding)."""

    kind = "teacher"
    trainable = False

    def __init__(self, model: nn.Module, family: str, normalize: bool):
        """Takes the front-end modules of ``model`` (a fresh 0-layer model of the family; see :meth:`from_configs`)."""
        super().__init__()
        self.family = family
        self.normalize = normalize
        self.feature_extractor = model.feature_extractor
        self.layer_norm = model.layer_norm
        self.post_extract_proj = model.post_extract_proj  # None when CNN dim == model dim
        self.pos_conv = model.encoder.pos_conv
        self.layer_norm_first = bool(model.encoder.layer_norm_first)
        # post-LN models normalise before the layers; pre-LN models after them (not part of the front end)
        self.encoder_layer_norm = None if self.layer_norm_first else model.encoder.layer_norm
        self.grid = FrameGrid.from_model(model, family)
        self.dim = int(model.encoder.embedding_dim)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # frozen: always in eval mode (no dropout, fixed statistics)
        return super().train(False)

    @classmethod
    def from_configs(cls, configs: Mapping[str, Any], state_dict: Optional[Mapping[str, Any]] = None) -> "FrontEnd":
        """Rebuild from :func:`teacher_configs` (a 0-layer model of the family gives the modules) and weights."""
        model, normalize = build_family_model(configs["family"], configs, num_layers=0)
        front = cls(model, configs["family"], normalize)
        if state_dict is not None:
            front.load_state_dict(state_dict)
        return front

    @classmethod
    def from_teacher_checkpoint(cls, family: str, ckpt: Mapping[str, Any]) -> "FrontEnd":
        """The frozen front end of a teacher checkpoint (family local format), weights copied from it."""
        front = cls.from_configs(teacher_configs(family, ckpt))
        front.load_state_dict(front_end_state_from_teacher(FAMILIES[family].weights(ckpt), front.layer_norm_first))
        return front

    def config(self) -> Dict[str, Any]:
        """What ``student.pt`` records about this front end besides its weights (the teacher's configs rebuild it)."""
        return {"kind": self.kind}

    # ------------------------------------------------------------------ padding (the frame grid)
    @property
    def crop_multiple(self) -> int:
        return self.grid.crop_multiple

    def conv_output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.grid.conv_output_lengths(lengths)

    def frame_padding_mask(self, wav_lengths: torch.Tensor, num_samples: int, num_frames: int) -> torch.Tensor:
        return self.grid.frame_padding_mask(wav_lengths, num_samples, num_frames)

    def padding_mask_for_lengths(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        return self.grid.padding_mask_for_lengths(wav_lengths)

    def num_frames(self, num_samples: int) -> int:
        return self.grid.num_frames(num_samples)

    # ------------------------------------------------------------------ forward
    def pad(self, wavs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        return pad_waveforms(wavs, self.normalize)

    def forward(self, wavs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        padded, lengths = self.pad(wavs)
        with torch.no_grad():
            features = self.feature_extractor(padded)
        features = self.layer_norm(features.transpose(1, 2))
        features, mask = self.grid.frames_and_mask(features, lengths, padded.size(1))
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        x = features.masked_fill(mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if self.encoder_layer_norm is not None:
            x = self.encoder_layer_norm(x)
        return x, mask


def conv_kernels_and_strides(feature_extractor: nn.Module) -> List[Tuple[int, int]]:
    """``(kernel, stride)`` of each CNN layer, read from the modules (all three families: conv_layers[i][0])."""
    return [(int(block[0].kernel_size[0]), int(block[0].stride[0])) for block in feature_extractor.conv_layers]


def teacher_front_end_parameters(model: nn.Module) -> int:
    """Parameters of a teacher model's front end (the modules :class:`FrontEnd` takes), counted in place."""
    modules = [model.feature_extractor, model.layer_norm, model.post_extract_proj, model.encoder.pos_conv]
    if not model.encoder.layer_norm_first:
        modules.append(model.encoder.layer_norm)
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


# front-end key prefixes in the teacher's state dict -> in FrontEnd's
_TEACHER_PREFIXES = {
    "feature_extractor.": "feature_extractor.",
    "layer_norm.": "layer_norm.",
    "post_extract_proj.": "post_extract_proj.",
    "encoder.pos_conv.": "pos_conv.",
}


def front_end_state_from_teacher(weights: Mapping[str, torch.Tensor], layer_norm_first: bool) -> Dict[str, torch.Tensor]:
    """The front end's state dict, copied out of a teacher state dict (cloned: the teacher is not shared)."""
    prefixes = dict(_TEACHER_PREFIXES)
    if not layer_norm_first:
        prefixes["encoder.layer_norm."] = "encoder_layer_norm."
    out = {}
    for key, value in weights.items():
        for src, dst in prefixes.items():
            if key.startswith(src):
                out[dst + key[len(src):]] = value.detach().clone()
    return out
