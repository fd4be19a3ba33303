"""``tiny_hubert``: a 6-layer, 256-dim HuBERT pretrained on synthetic espeak-ng speech (see README.md).

The expert *is* s3prl's HuBERT expert (``s3prl.upstream.hubert.expert.UpstreamExpert``): the shipped
``tiny_hubert.pt`` is a ``hubert_local`` checkpoint (fp16 tensors, copied into the fp32 model by
``load_state_dict``), loaded by s3prl's own ``load_converted_model``. ``hidden_states`` has 7 entries
(the transformer input, then the output of each of the 6 layers; the last is after the final layer norm),
each (batch, frames, 256) at 50 Hz.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from s3prl.upstream.hubert.expert import UpstreamExpert as _HubertExpert

from s3prl_redundancy.errors import UserInputError

DEFAULT_CKPT = Path(__file__).resolve().parent / "tiny_hubert.pt"


def resolve_ckpt(ckpt: Optional[str]) -> str:
    """``ckpt`` if given (a ``hubert_local`` checkpoint), else the shipped ``tiny_hubert.pt``."""
    path = Path(ckpt) if ckpt not in (None, "") else DEFAULT_CKPT
    if not path.is_file():
        if ckpt in (None, ""):
            raise UserInputError(
                f"the shipped tiny_hubert checkpoint is missing ({path}); reinstall s3prl-redundancy, or recreate "
                "it with `s3prl-redundancy pretrain-tiny --out DIR --steps 2000` and pass -k DIR/tiny_hubert.pt"
            )
        raise UserInputError(f"-k {ckpt}: no such file (expected a checkpoint in s3prl's hubert_local format)")
    return str(path)


class TinyHubertExpert(_HubertExpert):
    """s3prl's HuBERT expert on the shipped (or a given) tiny checkpoint."""

    def __init__(self, ckpt: Optional[str] = None, model_config=None, refresh: bool = False, **kwargs):
        super().__init__(resolve_ckpt(ckpt), **kwargs)


UpstreamExpert = TinyHubertExpert
