"""Audio datasets for analysis, pruning and distillation: a folder or a file list, read with soundfile,
mixed to mono and resampled to 16 kHz (what every s3prl upstream takes).

``--data`` accepts a folder (searched recursively for .wav / .flac / .ogg) or a text file listing one audio
path per line (relative paths are relative to the list file). Files are sorted, so the order (and with it
every seeded sample) does not depend on the file system.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .errors import UserInputError

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def list_audio(data, max_utterances: Optional[int] = None) -> List[Path]:
    """The audio files of a folder (recursive) or a file list, sorted; clear errors when there are none."""
    data = Path(data)
    if data.is_dir():
        files = sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise UserInputError(
                f"--data {data} holds no audio files ({', '.join(AUDIO_SUFFIXES)}, searched recursively); "
                "point it at a folder of audio or at a text file listing audio paths"
            )
    elif data.is_file():
        lines = [line.strip() for line in data.read_text().splitlines()]
        files = [Path(line) if Path(line).is_absolute() else data.parent / line for line in lines if line and not line.startswith("#")]
        if not files:
            raise UserInputError(f"--data {data} is an empty file list; write one audio path per line")
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise UserInputError(f"--data {data} lists {len(missing)} missing file(s), e.g. {missing[0]}")
    else:
        raise UserInputError(f"--data {data} does not exist; give a folder of audio files or a file list")
    return files[:max_utterances] if max_utterances else files


def _unreadable(path, error: Exception) -> UserInputError:
    return UserInputError(f"cannot read audio file {path}: {error}; remove it from `data` or convert it to wav/flac",
                          argument="data")


def _no_samples(path) -> UserInputError:
    return UserInputError(f"audio file {path} has no samples (zero length); remove it from `data`", argument="data")


def load_audio(path, sample_rate: int = SAMPLE_RATE):
    """A mono float32 tensor at ``sample_rate``; unreadable or empty audio raises a UserInputError naming the file."""
    import soundfile
    import torch

    try:
        data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError for unreadable files
        raise _unreadable(path, e) from None
    if data.shape[0] == 0:
        raise _no_samples(path)
    check_complete(path, data.shape[0])
    wav = torch.from_numpy(data).mean(dim=1)
    if sr != sample_rate:
        from torchaudio.functional import resample

        wav = resample(wav, sr, sample_rate)
    return wav.contiguous()


def wav_header_frames(path) -> Optional[int]:
    """The number of frames a RIFF/WAVE header promises (data chunk size / block size); None for other formats
    and for streamed wavs whose writer left the size unset. libsndfile trusts the file size instead, so a
    truncated wav reads without error: this is how it is noticed."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"data":
                return size // block if block and size not in (0, 0xFFFFFFFF) else None
            if kind == b"fmt ":
                body = f.read(size + size % 2)  # chunks are padded to an even size
                block = struct.unpack("<H", body[12:14])[0] if len(body) >= 14 else 0  # bytes per frame
            else:
                f.seek(size + size % 2, 1)


def check_complete(path, frames: int) -> None:
    """Refuse a wav that holds fewer frames than its header promises (an interrupted copy or download)."""
    promised = wav_header_frames(path)
    if promised is not None and frames < promised:
        raise UserInputError(
            f"audio file {path} is truncated: its header promises {promised} samples but the file holds {frames} "
            "(an interrupted copy or download?); copy it again or remove it", argument="data")


def clip_samples(path, sample_rate: int = SAMPLE_RATE) -> int:
    """A clip's length in samples at ``sample_rate``, from its header (nothing decoded); unreadable or
    truncated files are refused as :func:`load_audio` refuses them."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError for unreadable files
        raise _unreadable(path, e) from None
    if info.frames == 0:  # a damaged or empty file, not merely a short clip: refused as load_audio refuses it
        raise _no_samples(path)
    check_complete(path, info.frames)
    return int(info.frames * sample_rate // info.samplerate)


@dataclass
class AudioDataset:
    """A map-style dataset of ``(utterance_id, waveform)``; ``utterance_id`` is the path relative to the root.

    ``max_seconds`` crops each utterance to its first seconds (deterministic), bounding memory and time.
    ``min_samples``: reading a shorter clip is refused (set by :meth:`without_short_clips`).
    """

    files: Sequence[Path]
    root: Optional[Path] = None
    max_seconds: Optional[float] = None
    min_samples: int = 0

    @classmethod
    def from_data(cls, data, max_utterances: Optional[int] = None, max_seconds: Optional[float] = None) -> "AudioDataset":
        data = Path(data)
        root = data if data.is_dir() else data.parent
        return cls(list_audio(data, max_utterances), root, max_seconds)

    def __len__(self) -> int:
        return len(self.files)

    def utterance_id(self, index: int) -> str:
        path = Path(self.files[index])
        if self.root is not None:
            try:
                return str(path.relative_to(self.root))
            except ValueError:
                pass
        return str(path)

    def __getitem__(self, index: int):
        wav = load_audio(self.files[index])
        if self.max_seconds:
            wav = wav[: int(self.max_seconds * SAMPLE_RATE)]
        if wav.shape[0] < self.min_samples:
            raise UserInputError(f"audio file {self.files[index]} has {wav.shape[0]} samples, fewer than the "
                                 f"{self.min_samples} the model needs for one frame; remove it", argument="data")
        return self.utterance_id(index), wav

    def shard(self, rank: int, world_size: int) -> "AudioDataset":
        """Every ``world_size``-th file from ``rank``: disjoint shards covering all files once (no padding)."""
        return AudioDataset(list(self.files)[rank::world_size], self.root, self.max_seconds, self.min_samples)

    def subset(self, files: Sequence[Path]) -> "AudioDataset":
        """The same dataset (root, crop, length limit) over ``files``."""
        return AudioDataset(list(files), self.root, self.max_seconds, self.min_samples)

    def without_short_clips(self, min_samples: int) -> "AudioDataset":
        """This dataset without the clips shorter than ``min_samples`` (the model's receptive field, see
        ``families.receptive_field``), saying on stderr how many were skipped and which. Refused up front:
        a ``max_seconds`` crop shorter than that (no clip could give a frame), every clip too short, and
        unreadable or truncated files. Reads the headers only."""
        if min_samples <= 0:
            return self
        need = f"{min_samples} samples ({1000 * min_samples / SAMPLE_RATE:g} ms at {SAMPLE_RATE // 1000} kHz)"
        if self.max_seconds and int(self.max_seconds * SAMPLE_RATE) < min_samples:
            raise UserInputError(
                f"{self.max_seconds:g} s keeps {int(self.max_seconds * SAMPLE_RATE)} samples of each clip, fewer than "
                f"the {need} the model's convolution front end needs for one frame; give at least "
                f"{min_samples / SAMPLE_RATE:g}", argument="max_seconds")
        lengths = [clip_samples(path) for path in self.files]
        short = [(i, n) for i, n in enumerate(lengths) if n < min_samples]
        named = ", ".join(f"{self.utterance_id(i)} ({n} samples)" for i, n in short[:10]) + (" ..." if len(short) > 10 else "")
        if short and len(short) == len(self.files):
            raise UserInputError(f"every audio clip ({len(short)}) is shorter than the {need} the model needs for one "
                                 f"frame: {named}; give longer audio", argument="data")
        if short:
            print(f"skipping {len(short)} of {len(self.files)} audio clip(s) shorter than the model's receptive field, "
                  f"{need}: {named}", file=sys.stderr, flush=True)
        skipped = {i for i, _ in short}
        return AudioDataset([p for i, p in enumerate(self.files) if i not in skipped], self.root, self.max_seconds,
                            min_samples)


def collate(batch: Sequence[Tuple[str, "object"]]):
    """``(ids, wavs)`` lists: s3prl upstreams take a list of 1-D waveforms of different lengths."""
    ids = [item[0] for item in batch]
    wavs = [item[1] for item in batch]
    return ids, wavs
