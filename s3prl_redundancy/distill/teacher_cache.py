"""Teacher features cached on disk (``--cache-teacher``), for small datasets trained for many epochs.

Per utterance one file with the transformer input and the target layers, float32, computed with the
utterance alone (batch of one, no padding). The size is estimated from the audio lengths before anything
is computed, and the cache is refused over ``--cache-max-gb``. Training from the cache skips the teacher
and the front end entirely (the student's front end is a frozen copy, so its input is the cached one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..audio import SAMPLE_RATE, AudioDataset
from ..io import atomic_torch_save, atomic_write_text
from ..errors import UserInputError

BYTES_PER_VALUE = 4  # float32
INDEX = "index.json"


def utterance_samples(dataset: AudioDataset, index: int) -> int:
    """Samples at 16 kHz after the ``--max-seconds`` crop, from the file header (nothing decoded)."""
    import math

    import soundfile

    info = soundfile.info(str(dataset.files[index]))
    samples = math.ceil(info.frames * SAMPLE_RATE / info.samplerate) if info.samplerate != SAMPLE_RATE else info.frames
    if dataset.max_seconds:
        samples = min(samples, int(dataset.max_seconds * SAMPLE_RATE))
    return int(samples)


def estimate_cache_bytes(frames: Sequence[int], dim: int, num_targets: int) -> int:
    return int(sum(frames)) * int(dim) * (int(num_targets) + 1) * BYTES_PER_VALUE


def check_cache_size(frames: Sequence[int], dim: int, num_targets: int, max_gb: float) -> int:
    size = estimate_cache_bytes(frames, dim, num_targets)
    if size > max_gb * 1e9:
        raise UserInputError(
            f"the cache would take {size / 1e9:.2f} GB ({len(frames)} utterances, {sum(frames)} frames x "
            f"{num_targets + 1} layers x {dim} dims x {BYTES_PER_VALUE} bytes), over `cache_max_gb={max_gb:g}`; "
            "run it `cache_teacher=False` (the teacher then runs every step), train on fewer `targets`, lower "
            "`max_seconds` / `max_utterances`, or raise `cache_max_gb`", argument="cache_teacher"
        )
    return size


class TeacherCache:
    def __init__(self, folder: Path, fingerprint: Mapping[str, Any]):
        self.folder = Path(folder)
        self.fingerprint = dict(fingerprint)

    def path(self, index: int) -> Path:
        return self.folder / f"utt{index:07d}.pt"

    def is_complete(self, count: int) -> bool:
        index = self.folder / INDEX
        if not index.is_file():
            return False
        try:
            data = json.loads(index.read_text())
        except json.JSONDecodeError:
            return False
        return data.get("fingerprint") == json.loads(json.dumps(self.fingerprint)) and data.get("count") == count and all(
            self.path(i).is_file() for i in range(count)
        )

    def build(self, dataset: AudioDataset, indices: Sequence[int], compute) -> None:
        """Write the files of ``indices`` (this rank's share); ``compute(wav) -> (x0 (T, D), targets (K, T, D))``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for i in indices:
            if self.path(i).is_file():
                continue
            x0, targets = compute(dataset[i][1])
            atomic_torch_save({"x0": x0.float().cpu().contiguous(), "targets": targets.float().cpu().contiguous()},
                              self.path(i))

    def finish(self, count: int, size: int) -> None:
        atomic_write_text(self.folder / INDEX, json.dumps({"fingerprint": self.fingerprint, "count": count,
                                                           "bytes_estimated": size}, default=str) + "\n")

    def load_batch(self, indices: Sequence[int], device) -> Tuple[torch.Tensor, List[torch.Tensor], torch.Tensor]:
        """Padded ``x0 (B, T, D)``, targets (K tensors ``(B, T, D)``) and the padding mask (True = padding)."""
        items = [torch.load(self.path(i), map_location="cpu", weights_only=True) for i in indices]
        lengths = [it["x0"].shape[0] for it in items]
        t_max, dim = max(lengths), items[0]["x0"].shape[1]
        k = items[0]["targets"].shape[0]
        x0 = torch.zeros(len(items), t_max, dim)
        targets = torch.zeros(k, len(items), t_max, dim)
        for b, it in enumerate(items):
            x0[b, : lengths[b]] = it["x0"]
            targets[:, b, : lengths[b]] = it["targets"]
        mask = torch.arange(t_max).unsqueeze(0) >= torch.tensor(lengths).unsqueeze(1)
        return x0.to(device), [t.to(device) for t in targets], mask.to(device)


def cache_fingerprint(teacher_path: str, files: Sequence[Any], targets: Sequence[int], max_seconds: Optional[float]) -> Dict[str, Any]:
    st = os.stat(teacher_path)
    return {"teacher": str(Path(teacher_path).resolve()), "teacher_bytes": st.st_size, "teacher_mtime": int(st.st_mtime),
            "files": [str(f) for f in files], "targets": list(targets), "max_seconds": max_seconds}
