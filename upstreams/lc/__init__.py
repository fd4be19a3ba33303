"""Shallow-layer-inference upstreams of layer-consistent models: ``lc_hubert``, ``lc_wav2vec2``, ``lc_wavlm``,
``lc_tiny_hubert`` (see README.md)."""
