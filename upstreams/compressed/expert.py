"""Experts for checkpoints written by ``s3prl-redundancy prune`` with a technique (heads, low rank,
magnitude) or bridges.

One expert per family. It *is* the family's s3prl expert class (same ``forward``, same hooks, same
``hidden_states`` meaning: entry 0 = transformer input, then one entry per position of the encoder
stack, the last = encoder output) and reads what was done from the checkpoint:

* a checkpoint without a ``structure`` (layer-pruned, magnitude-pruned or unpruned) is handed to s3prl's
  own expert unchanged;
* one with a ``structure`` (attention heads removed, factorised linear layers, linear bridges) is rebuilt
  by :func:`s3prl_redundancy.compression.structure.load_model` (shapes checked strictly), then set up
  exactly as s3prl's expert sets up its model.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from s3prl.upstream.hubert.expert import UpstreamExpert as _HubertExpert
from s3prl.upstream.interfaces import UpstreamBase
from s3prl.upstream.wav2vec2.expert import UpstreamExpert as _Wav2Vec2Expert
from s3prl.upstream.wavlm.expert import UpstreamExpert as _WavLMExpert

from s3prl_redundancy.checkpoints import checkpoint_buffer, load_family_checkpoint
from s3prl_redundancy.compression.structure import META_KEY, load_model, structure_of
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.upstreams.pruned.expert import resolve_source


def _trim_to_shortest(xs):
    names, hiddens = zip(*xs)
    unpad_len = min(hidden.size(1) for hidden in hiddens)
    return list(zip(names, [hidden[:, :unpad_len, :] for hidden in hiddens]))


class _CompressedExpertMixin:
    family: str

    def __init__(self, ckpt: Optional[str] = None, model_config=None, refresh: bool = False, _checkpoint=None, **kwargs):
        if model_config not in (None, ""):
            raise UserInputError(
                f"compressed_{self.family} reads everything from the checkpoint and takes no -g; to choose layers "
                f"use pruned_{self.family} -g keep.yaml, or `s3prl-redundancy prune`"
            )
        if _checkpoint is None:
            if not ckpt:
                raise UserInputError(
                    f"compressed_{self.family} needs -k CHECKPOINT: a pruned.pt written by `s3prl-redundancy prune`"
                )
            _, _checkpoint = load_family_checkpoint(resolve_source(self.family, ckpt, refresh), expected_family=self.family)
        checkpoint = _checkpoint
        if structure_of(checkpoint) is None:
            super().__init__(checkpoint_buffer(checkpoint), **kwargs)
        else:
            UpstreamBase.__init__(self, **kwargs)
            self._setup(load_model(checkpoint), checkpoint)
            self.model.feature_grad_mult = 0.0
            self.model.encoder.layerdrop = 0.0
            if len(self.hooks) == 0:
                module_name = "self.model.encoder.layers"
                for module_id in range(len(self.model.encoder.layers)):
                    self.add_hook(f"{module_name}[{module_id}]", lambda input, output: input[0].transpose(0, 1))
                self.add_hook("self.model.encoder", lambda input, output: output[0])
                if FAMILIES[self.family].trims_hidden_states():
                    self.hook_postprocess = _trim_to_shortest
        self.compression: Dict[str, Any] = dict(checkpoint.get(META_KEY) or {})

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], **kwargs):
        """The expert for an in-memory checkpoint dict."""
        return cls(_checkpoint=checkpoint, **kwargs)

    def _setup(self, model, checkpoint) -> None:  # pragma: no cover - overridden per family
        raise NotImplementedError


class CompressedHubertExpert(_CompressedExpertMixin, _HubertExpert):
    family = "hubert"

    def _setup(self, model, checkpoint):
        from s3prl.upstream.hubert.hubert_model import HubertPretrainingConfig
        from s3prl.upstream.utils import merge_with_parent

        self.model = model
        self.task_cfg = merge_with_parent(HubertPretrainingConfig, checkpoint["task_cfg"])


class CompressedWav2Vec2Expert(_CompressedExpertMixin, _Wav2Vec2Expert):
    family = "wav2vec2"

    def _setup(self, model, checkpoint):
        from s3prl.upstream.utils import merge_with_parent
        from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig

        self.model = model
        self.wav_normalize = merge_with_parent(AudioPretrainingConfig, checkpoint["task_cfg"]).normalize
        self.apply_padding_mask = True
        self.numpy_wav_normalize = False
        self.feature_selection = None


class CompressedWavLMExpert(_CompressedExpertMixin, _WavLMExpert):
    family = "wavlm"

    def _setup(self, model, checkpoint):
        from s3prl.upstream.wavlm.WavLM import WavLMConfig

        self.cfg = WavLMConfig(checkpoint["cfg"])
        self.model = model
        self._init_layerdrop = 0.0


EXPERTS = {cls.family: cls for cls in (CompressedHubertExpert, CompressedWav2Vec2Expert, CompressedWavLMExpert)}
UpstreamExpert = CompressedHubertExpert  # s3prl's folder convention names one expert class
