"""Shallow layer inference (SLI) experts: a layer-consistent model run through its first ``k`` layers.

Each expert *is* s3prl's own expert of its family (HuBERT, wav2vec 2.0, WavLM: same class, same hooks) on
the checkpoint cut to ``k`` layers (:func:`s3prl_redundancy.layer_consistency.sli.sli_checkpoint`), so
``hidden_states`` keeps the family's meaning with ``k + 1`` entries: entry 0 the transformer input, entry
``i`` the output of layer ``i - 1``, the last one the output of layer ``k - 1`` through the exit layer norm
(pre-LN models) the layer-consistent training used. So s3prl's Featurizer and ``run_downstream`` work
unchanged. The family classes are :func:`_sli_expert` applied to :data:`~s3prl_redundancy.families.FAMILIES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from s3prl_redundancy.checkpoints import checkpoint_buffer, load_family_checkpoint
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.layer_consistency import META_KEY
from s3prl_redundancy.layer_consistency.sli import read_depth, sli_checkpoint, sli_entry

DEFAULT_CKPT = Path(__file__).resolve().parent / "lc_tiny_hubert.pt"


class _SLIExpertMixin:
    """The first ``depth`` layers (``-g depth.yaml`` with ``depth: k``; all if absent) of a checkpoint in
    the family's s3prl local format, run by the family's expert (the next class in the MRO)."""

    family: str
    writers: str  # what writes such a checkpoint, for the message when -k is missing

    def __init__(self, ckpt: Optional[str] = None, model_config=None, refresh: bool = False, **kwargs):
        if ckpt in (None, ""):
            raise UserInputError(f"{sli_entry(self.family)} needs -k: a layer-consistent {FAMILIES[self.family].local_entry} "
                                 f"checkpoint (written by {self.writers})", argument="ckpt")
        depth = read_depth(model_config)
        _, checkpoint = load_family_checkpoint(ckpt, expected_family=self.family)
        cut = sli_checkpoint(checkpoint, depth, source=str(ckpt), family=self.family)
        super().__init__(checkpoint_buffer(cut), **kwargs)
        self.layer_consistency = dict(cut[META_KEY])
        self.depth = int(cut[META_KEY]["sli_depth"])


def _sli_expert(family: str, class_name: str, writers: str = "`s3prl-redundancy lc-finetune`") -> type:
    """The SLI expert class of ``family``: the mixin on s3prl's expert for the family's local format."""
    doc = f"s3prl's {family} expert on the first ``depth`` layers of a layer-consistent checkpoint."
    return type(class_name, (_SLIExpertMixin, FAMILIES[family].expert_class()),
                {"family": family, "writers": writers, "__doc__": doc, "__module__": __name__})


LCHubertExpert = _sli_expert("hubert", "LCHubertExpert", "`s3prl-redundancy lc-finetune` or `pretrain-tiny "
                             "--share-layers`), or use lc_tiny_hubert (the shipped one")
LCWav2Vec2Expert = _sli_expert("wav2vec2", "LCWav2Vec2Expert")
LCWavLMExpert = _sli_expert("wavlm", "LCWavLMExpert")
EXPERTS = {cls.family: cls for cls in (LCHubertExpert, LCWav2Vec2Expert, LCWavLMExpert)}


class LCTinyHubertExpert(LCHubertExpert):
    """The shipped layer-consistent ``tiny_hubert`` variant (``lc_tiny_hubert.pt``) unless ``-k`` is given."""

    def __init__(self, ckpt: Optional[str] = None, model_config=None, refresh: bool = False, **kwargs):
        path = Path(ckpt) if ckpt not in (None, "") else DEFAULT_CKPT
        if not path.is_file():
            raise UserInputError(f"{path}: no such file (expected a layer-consistent hubert_local checkpoint)",
                                 argument="ckpt")
        super().__init__(str(path), model_config, refresh, **kwargs)


UpstreamExpert = LCHubertExpert  # s3prl's folder convention names one expert class
