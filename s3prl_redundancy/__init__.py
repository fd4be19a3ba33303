"""s3prl-redundancy: measure layer redundancy in s3prl speech upstreams and compress them.

Kept import-light on purpose: this package is imported at start-up by a ``.pth`` hook, so nothing here
may import torch or s3prl. Import the submodules you need (``s3prl_redundancy.compression.layers``, ...).
"""

__version__ = "0.1.0"
