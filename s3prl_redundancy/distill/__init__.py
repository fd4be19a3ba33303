"""Replace the whole transformer stack of HuBERT / wav2vec 2.0 / WavLM with small mimicking layers.

Modules: :mod:`.front_end` (the teacher's frozen front end and the teacher's frame grid), :mod:`.light_front_end`
(a small trained front end at the teacher's frames, ``--front-end light``), :mod:`.mimickers` (mlp / linear /
transformer), :mod:`.student` (front end + mimicker, ``student.pt``), :mod:`.teacher`, :mod:`.trainer`
(``distill``), :mod:`.sampling`, :mod:`.teacher_cache`, :mod:`.outputs`, :mod:`.report`, :mod:`.quality`
(keyword-spotting capacity with intervals) (synthetic audio for tests: :mod:`s3prl_redundancy.testing.audio`).
See ``docs/distillation.md``.
"""
