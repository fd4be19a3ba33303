"""Distilled upstream experts: a front end (the teacher's, frozen, or a light trained one) + mimicking layers
(``student.pt``; ``front_end`` says which).

``hidden_states`` has the teacher's order and meaning: entry 0 is the transformer input (equal to the
teacher's), then one entry per target layer (the prediction of the teacher's ``hidden_states[target]``);
``last_hidden_state`` is the last one. All entries are padded to the batch's frame count like s3prl's
experts; frames beyond an utterance's length are computed but carry no information (the Featurizer cuts
them off by length).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from s3prl.upstream.interfaces import UpstreamBase

from s3prl_redundancy.distill.student import load_student
from s3prl_redundancy.errors import UserInputError

DOWNSAMPLE_RATE = 320  # every family: 16 kHz audio, 20 ms frames


class _DistilledExpert(UpstreamBase):
    family: str

    def __init__(self, ckpt: Optional[str] = None, model_config=None, refresh: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not ckpt:
            raise UserInputError(f"distilled_{self.family} needs -k student.pt, written by `s3prl-redundancy distill "
                                 f"--teacher {self.family}_local ...` (there are no default distilled weights)")
        if model_config not in (None, ""):
            raise UserInputError(f"distilled_{self.family} takes no -g model config (got {model_config!r}); the student "
                                 "checkpoint holds its whole configuration")
        self.student, saved = load_student(ckpt, expected_family=self.family)
        self.targets: List[int] = list(saved["targets"])
        self.teacher_info: Dict = {k: v for k, v in saved["teacher"].items() if k not in ("model_cfg", "task_cfg")}
        self.front_end: Dict = self.student.front_end.config()  # {"kind": "teacher"} or the light one's settings

    def get_downsample_rates(self, key: str) -> int:
        return DOWNSAMPLE_RATE

    def forward(self, wavs: List[torch.Tensor]):
        hidden_states, _ = self.student(wavs)
        result = {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}
        for i, h in enumerate(hidden_states):
            result[f"hidden_state_{i}"] = h
        return result


class DistilledHubertExpert(_DistilledExpert):
    family = "hubert"


class DistilledWav2Vec2Expert(_DistilledExpert):
    family = "wav2vec2"


class DistilledWavLMExpert(_DistilledExpert):
    family = "wavlm"


EXPERTS = {cls.family: cls for cls in (DistilledHubertExpert, DistilledWav2Vec2Expert, DistilledWavLMExpert)}
UpstreamExpert = DistilledHubertExpert  # s3prl's folder convention names one expert class
