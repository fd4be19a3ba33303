"""Shallow-layer-inference upstreams of layer-consistent models: ``lc_hubert``, ``lc_tiny_hubert`` (see README.md)."""
