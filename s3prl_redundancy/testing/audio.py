"""Synthetic audio for tests, examples and measurements (no corpus, no download; seeds are fixed).

* :func:`speechlike_tone` / :func:`write_tone_corpus`: speech-like tones. Each utterance is a harmonic tone with a gliding pitch (90-260 Hz), harmonics shaped by two moving formant
resonances, a syllable-rate amplitude envelope and a little breath noise: enough structure for a teacher's
layers to differ from frame to frame, and fully determined by the seed.
* :func:`labelled_waveform` / :func:`write_labelled_audio`: a folder of 16 kHz wav files, one sub-folder per
  class (or flat, with a ``labels.csv``); class ``c`` is a harmonic tone at its own pitch with random phase,
  amplitude modulation and noise, so classes are separable but not trivially identical within a class.
* :func:`random_wavs`: white-noise waveforms as s3prl upstreams take them.
"""

from __future__ import annotations

import csv
from io import StringIO
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..io import atomic_write_text

SAMPLE_RATE = 16000


def speechlike_tone(seconds: float, seed: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(90, 180) * (1 + 0.35 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 6.28)))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = [(rng.uniform(300, 900), rng.uniform(0.5, 3.0)), (rng.uniform(900, 2500), rng.uniform(0.5, 3.0))]
    wav = np.zeros(n)
    for h in range(1, 30):
        freq = h * f0
        gain = np.zeros(n)
        for centre, rate in formants:
            moving = centre * (1 + 0.25 * np.sin(2 * np.pi * rate * t))
            gain += np.exp(-0.5 * ((freq - moving) / 120.0) ** 2)
        wav += (gain + 0.05) / h * np.sin(h * phase) * (freq < sample_rate / 2)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(2.5, 5.0) * t + rng.uniform(0, 6.28))
    wav = wav * envelope + 0.02 * rng.standard_normal(n)
    return (0.3 * wav / np.abs(wav).max()).astype(np.float32)


def write_tone_corpus(folder, count: int, seed: int = 0, seconds: Sequence[float] = (1.0, 2.0)) -> List[Path]:
    """``count`` wav files of ``seconds[0]..seconds[1]`` s (16 kHz, PCM_16) in ``folder``; returns the paths."""
    import soundfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"tone_{i:04d}.wav"
        soundfile.write(str(path), speechlike_tone(float(rng.uniform(*seconds)), seed * 100_003 + i), SAMPLE_RATE,
                        subtype="PCM_16")
        paths.append(path)
    return paths


def labelled_waveform(cls: int, rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 110.0 * (1.6 ** cls) * rng.uniform(0.95, 1.05)
    wav = sum((0.5 ** h) * np.sin(2 * np.pi * f0 * (h + 1) * t + rng.uniform(0, 2 * np.pi)) for h in range(4))
    wav = wav * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
    wav = wav + 0.05 * rng.standard_normal(n)
    return (0.2 * wav / np.abs(wav).max()).astype(np.float32)


def write_labelled_audio(folder, classes: int = 3, per_class: int = 8, seconds: Tuple[float, float] = (0.6, 1.2),
                         seed: int = 0, layout: str = "folders") -> Dict[str, Any]:
    """Write ``classes * per_class`` wav files; returns ``files``, ``labels`` and ``csv`` (labels.csv path)."""
    import soundfile

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    files: List[Path] = []
    labels: List[str] = []
    for c in range(classes):
        for i in range(per_class):
            name = f"class{c}"
            path = folder / name / f"{name}_{i:03d}.wav" if layout == "folders" else folder / f"{name}_{i:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(path), labelled_waveform(c, rng, rng.uniform(*seconds)), SAMPLE_RATE, subtype="FLOAT")
            files.append(path)
            labels.append(name)
    csv_path = folder / "labels.csv"
    buffer = StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "label"])
    for p, l in zip(files, labels):
        writer.writerow([str(p.relative_to(folder)), l])
    atomic_write_text(csv_path, buffer.getvalue())
    return {"files": files, "labels": labels, "csv": csv_path}


def random_wavs(lengths=(16000, 12345), seed: int = 0):
    """A list of 1-D float32 waveforms of the given lengths (16 kHz), as s3prl upstreams take them."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) * 0.1 for n in lengths]
