"""Experts for checkpoints written by ``s3prl-redundancy prune`` with a technique (heads, low rank,
magnitude) or bridges.

One expert per family. It *is* the family's s3prl expert class (same ``forward``, same hooks, same
``hidden_states`` meaning: entry 0 = transformer input, then one entry per position of the encoder
stack, the last = encoder output) and reads what was done from the checkpoint:

* a checkpoint without a ``structure`` (layer-pruned, magnitude-pruned or unpruned) is handed to s3prl's
  own expert unchanged;
* one with a ``structure`` (attention heads removed, factorised linear layers, linear bridges) is rebuilt
  by :func:`s3prl_redundancy.compression.structure.load_model` (shapes checked strictly) and takes the
  place of the model that s3prl's own expert built and set up (hooks re-attached to the same paths).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from s3prl.upstream.hubert.expert import UpstreamExpert as _HubertExpert
from s3prl.upstream.wav2vec2.expert import UpstreamExpert as _Wav2Vec2Expert
from s3prl.upstream.wavlm.expert import UpstreamExpert as _WavLMExpert

from s3prl_redundancy.checkpoints import checkpoint_buffer, load_family_checkpoint
from s3prl_redundancy.compression.structure import META_KEY, family_of, load_model, structure_of
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.upstreams.pruned.expert import resolve_source


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
            # s3prl's own expert sets everything up (hooks, their post-processing, configs, frozen CNN, no
            # layerdrop) on a plain model of the same config; then the rebuilt model takes its place
            super().__init__(checkpoint_buffer(_plain_skeleton(checkpoint)), **kwargs)
            self._swap_model(load_model(checkpoint))
        self.compression: Dict[str, Any] = dict(checkpoint.get(META_KEY) or {})

    def _swap_model(self, model) -> None:
        """Put ``model`` where s3prl's expert built its own, with the settings s3prl gave that one, and
        re-attach s3prl's hooks (they are bound to module objects) to the same paths in ``model``."""
        model.feature_grad_mult = self.model.feature_grad_mult
        model.encoder.layerdrop = self.model.encoder.layerdrop
        self.model = model
        for hook in self.hooks:
            if hook.handler is not None:
                hook.handler.remove()
                hook.handler = None
            self._register_hook_handler(hook)

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], **kwargs):
        """The expert for an in-memory checkpoint dict."""
        return cls(_checkpoint=checkpoint, **kwargs)


def _plain_skeleton(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    """``checkpoint``'s configs with the weights of a freshly built, full-size model of the family: what
    s3prl's expert can load (it knows no compressed structure); its weights are replaced afterwards."""
    family = FAMILIES[family_of(checkpoint)]
    skeleton = {k: v for k, v in checkpoint.items() if k != META_KEY}
    skeleton[family.weights_key] = family.build_model(checkpoint).state_dict()
    return skeleton


class CompressedHubertExpert(_CompressedExpertMixin, _HubertExpert):
    family = "hubert"


class CompressedWav2Vec2Expert(_CompressedExpertMixin, _Wav2Vec2Expert):
    family = "wav2vec2"


class CompressedWavLMExpert(_CompressedExpertMixin, _WavLMExpert):
    family = "wavlm"


EXPERTS = {cls.family: cls for cls in (CompressedHubertExpert, CompressedWav2Vec2Expert, CompressedWavLMExpert)}
UpstreamExpert = CompressedHubertExpert  # s3prl's folder convention names one expert class
