"""Hub entries for distilled upstreams (s3prl calls them with ``ckpt=``, ``model_config=``, ``refresh=``).

- ``-k``: ``student.pt`` written by ``s3prl-redundancy distill``; it names its teacher family and holds the
  front end (the teacher's, copied, or a light one trained with ``--front-end light``), so no teacher weights
  are needed. A student of another family is refused with the
  name of the right entry.
"""

from s3prl_redundancy.upstreams import hub_entry

from .expert import DistilledHubertExpert, DistilledWav2Vec2Expert, DistilledWavLMExpert

__all__ = ["distilled_hubert", "distilled_wav2vec2", "distilled_wavlm"]

distilled_hubert = hub_entry(
    "distilled_hubert", DistilledHubertExpert,
    "HuBERT front end (or a light one) + mimicking layers in place of the transformer stack.",
)
distilled_wav2vec2 = hub_entry(
    "distilled_wav2vec2", DistilledWav2Vec2Expert,
    "wav2vec 2.0 front end (or a light one) + mimicking layers in place of the transformer stack.",
)
distilled_wavlm = hub_entry(
    "distilled_wavlm", DistilledWavLMExpert,
    "WavLM front end (or a light one) + mimicking layers in place of the transformer stack.",
)
