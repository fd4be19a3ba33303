"""Remove torchaudio's CUDA-linked native libraries when torch is a CPU build (before this package is installed).

torchaudio 2.11 wheels link ``libc10_cuda.so``; on a CPU torch ``import torchaudio`` then fails. Without
``torchaudio/lib/*.so`` torchaudio skips its extension and the pure-PyTorch parts (resample, kaldi
fbank/mfcc, MelSpectrogram) work. Does nothing on a CUDA torch or when the libraries are already gone.
Installed users run the same code as ``s3prl-redundancy doctor --strip-torchaudio-cuda-libs``.
"""

import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout; its package imports nothing heavy
from s3prl_redundancy.commands.doctor import strip_torchaudio_cuda_libs  # noqa: E402

if importlib.util.find_spec("torchaudio") is None:
    raise SystemExit("torchaudio is not installed")
removed = strip_torchaudio_cuda_libs()
if removed:
    print(f"removed {len(removed)} CUDA-linked torchaudio libraries (CPU torch {torch.__version__})")
