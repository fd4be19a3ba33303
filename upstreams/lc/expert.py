"""Shallow layer inference (SLI) experts: a layer-consistent model run through its first ``k`` layers.

The expert *is* s3prl's HuBERT expert (same class, same hooks) on the checkpoint cut to ``k`` layers
(:func:`s3prl_redundancy.layer_consistency.sli.sli_checkpoint`): ``hidden_states`` has ``k + 1``
entries, entry 0 the transformer input, entry ``i`` the output of layer ``i - 1``, the last one the
output of layer ``k - 1`` through the exit layer norm (pre-LN models) the layer-consistent training used.
So s3prl's Featurizer and ``run_downstream`` work unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from s3prl.upstream.hubert.expert import UpstreamExpert as _HubertExpert

from s3prl_redundancy.checkpoints import checkpoint_buffer, load_family_checkpoint
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.layer_consistency import META_KEY
from s3prl_redundancy.layer_consistency.sli import read_depth, sli_checkpoint

DEFAULT_CKPT = Path(__file__).resolve().parent / "lc_tiny_hubert.pt"


class LCHubertExpert(_HubertExpert):
    """s3prl's HuBERT expert on the first ``depth`` layers (``-g depth.yaml`` with ``depth: k``; all if absent)."""

    def __init__(self, ckpt: Optional[str] = None, model_config=None, **kwargs):
        if ckpt in (None, ""):
            raise UserInputError("lc_hubert needs -k: a layer-consistent hubert_local checkpoint (written by "
                                 "`s3prl-redundancy lc-finetune` or `pretrain-tiny --share-layers`), or use lc_tiny_hubert",
                                 argument="ckpt")
        depth = read_depth(model_config)
        _, checkpoint = load_family_checkpoint(ckpt, expected_family="hubert")
        cut = sli_checkpoint(checkpoint, depth, source=str(ckpt))
        super().__init__(checkpoint_buffer(cut), **kwargs)
        self.layer_consistency = dict(cut[META_KEY])
        self.depth = int(cut[META_KEY]["sli_depth"])


class LCTinyHubertExpert(LCHubertExpert):
    """The shipped layer-consistent ``tiny_hubert`` variant (``lc_tiny_hubert.pt``) unless ``-k`` is given."""

    def __init__(self, ckpt: Optional[str] = None, model_config=None, **kwargs):
        path = Path(ckpt) if ckpt not in (None, "") else DEFAULT_CKPT
        if not path.is_file():
            raise UserInputError(f"{path}: no such file (expected a layer-consistent hubert_local checkpoint)",
                                 argument="ckpt")
        super().__init__(str(path), model_config, **kwargs)


UpstreamExpert = LCHubertExpert  # s3prl's folder convention names one expert class
