"""Test support: everything tests, benchmarks and examples build on, in one package (nothing downloads).

* :mod:`.models` -- small random HuBERT / wav2vec 2.0 / WavLM checkpoints in their real s3prl formats
  (:func:`~.models.save_tiny_checkpoint`, :func:`~.models.build_checkpoint`, ...) and models with known
  structure (:func:`~.models.make_identity_layers`);
* :mod:`.audio` -- synthetic audio: speech-like tone corpora, labelled class folders, random waveforms;
* :mod:`.oracles` -- n x n Gram-matrix reference implementations of the similarity metrics (independent
  test oracles and benchmark baselines, never the production path);
* :mod:`.processes` -- running a fresh Python process, paths of the repository's test inputs;
* :mod:`.benchmarks` -- the settings, result schema and model variants of the benchmark suite.
"""
