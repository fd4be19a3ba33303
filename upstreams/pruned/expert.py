"""Layer-pruned upstream experts.

Each expert *is* the source family's s3prl expert (same class, same hooks, same ``hidden_states``
meaning), built from a checkpoint whose dropped layers are removed: entry 0 is the transformer input,
then one entry per kept layer, the last being the encoder output. So ``len(hidden_states) ==
len(keep_layers) + 1`` and the s3prl Featurizer's weighted sum works unchanged.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from s3prl.upstream.hubert.expert import UpstreamExpert as _HubertExpert
from s3prl.upstream.wav2vec2.expert import UpstreamExpert as _Wav2Vec2Expert
from s3prl.upstream.wavlm.expert import UpstreamExpert as _WavLMExpert

from s3prl_redundancy.checkpoints import checkpoint_buffer, load_family_checkpoint
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.compression.layers import META_KEY, prune_checkpoint, read_keep_layers, reject_structured


def resolve_source(family: str, ckpt: Optional[str], refresh: bool = False) -> str:
    """A local path for ``ckpt``; with none, the weights of s3prl's default entry for the family."""
    if ckpt is None or ckpt == "":
        ckpt = FAMILIES[family].default_url
    if str(ckpt).startswith(("http://", "https://")):
        from s3prl.util.download import _urls_to_filepaths  # s3prl's own downloader and cache

        try:
            return _urls_to_filepaths(str(ckpt), refresh=refresh)
        except Exception as e:
            raise UserInputError(
                f"could not download {ckpt} ({type(e).__name__}: {e}); without a network, pass a local "
                f"checkpoint with -k (s3prl's {FAMILIES[family].local_entry} format)"
            ) from None
    return str(ckpt)


def pruned_checkpoint(family: str, ckpt: Optional[str], model_config=None, refresh: bool = False) -> Dict[str, Any]:
    """Load ``ckpt`` (source or already pruned) and apply ``keep_layers`` from ``model_config`` if given."""
    origin = str(ckpt) if ckpt else FAMILIES[family].default_url  # what the user asked for (path or URL)
    path = resolve_source(family, ckpt, refresh)
    _, checkpoint = load_family_checkpoint(path, expected_family=family)
    reject_structured(checkpoint, family, path)
    keep = read_keep_layers(model_config)
    if keep is None:
        if META_KEY not in checkpoint:
            raise UserInputError(
                f"{path} is an unpruned {family} checkpoint and no layers were chosen: pass -g keep.yaml with "
                "`keep_layers: [0, 1, 3]`, or a checkpoint written by `s3prl-redundancy prune`"
            )
        return checkpoint
    return prune_checkpoint(checkpoint, keep, source=origin, family=family)


class _PrunedExpertMixin:
    family: str

    def __init__(self, ckpt: Optional[str] = None, model_config=None, refresh: bool = False, **kwargs):
        checkpoint = pruned_checkpoint(self.family, ckpt, model_config, refresh)
        super().__init__(checkpoint_buffer(checkpoint), **kwargs)
        self.pruning = dict(checkpoint[META_KEY])


class PrunedHubertExpert(_PrunedExpertMixin, _HubertExpert):
    family = "hubert"


class PrunedWav2Vec2Expert(_PrunedExpertMixin, _Wav2Vec2Expert):
    family = "wav2vec2"


class PrunedWavLMExpert(_PrunedExpertMixin, _WavLMExpert):
    family = "wavlm"


EXPERTS = {cls.family: cls for cls in (PrunedHubertExpert, PrunedWav2Vec2Expert, PrunedWavLMExpert)}
UpstreamExpert = PrunedHubertExpert  # s3prl's folder convention names one expert class
