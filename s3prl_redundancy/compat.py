"""Make s3prl 0.4.18 import and run on current torch / torchaudio / huggingface_hub.

s3prl 0.4.18 was written against torchaudio <= 2.8 and huggingface_hub < 1.0. On a current stack
``import s3prl.hub`` fails. :func:`apply` closes the six gaps (see ``docs/install.md``):

1. ``torchaudio.set_audio_backend`` (removed in torchaudio 2.2+): a no-op, as the backend choice is gone.
2. ``torchaudio.sox_effects`` (removed in 2.9): ``apply_effects_file`` / ``apply_effects_tensor`` for the
   effects s3prl uses (``channels``, ``rate``, ``gain``, ``remix``, ``norm``); any other effect raises.
3. ``torchaudio.load`` / ``save`` / ``info`` (2.9+ need torchcodec): soundfile-based versions with
   torchaudio's signatures (channels-first float32, ``frame_offset``, ``num_frames``).
4. ``huggingface_hub.HfFolder`` / ``Repository`` (removed in 1.0): placeholders for the imports; using
   them (pushing to the hub) raises a clear error.
5. ``torch.load`` with ``weights_only=True`` (default since torch 2.6): s3prl's downstream checkpoints
   pickle an ``argparse.Namespace``; that one class is allow-listed. ``weights_only`` is never turned off.
6. ``catalyst`` (imported by the keyword-spotting expert for one class, ``DistributedSamplerWrapper``):
   catalyst < 22 fails on Python >= 3.10 (``collections.MutableMapping``) and newer releases carry metadata
   that current pip rejects. Where catalyst is absent or one of those versions, a faithful stand-in module
   ``catalyst.data.sampler`` provides that class.

Every shim is additive: it applies only where the thing is missing or cannot work (a torchaudio <= 2.8
stack is left untouched), and :func:`apply` is idempotent. It is called automatically before ``s3prl`` is
imported, and the torchaudio part (:func:`apply_torchaudio`) as soon as ``torchaudio`` is imported, so worker
processes that use torchaudio without importing s3prl get it too (see :mod:`s3prl_redundancy._autoload`).
:func:`applied` tells what was added in this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

_applied: Optional[List[str]] = None  # set once apply() has run
_added: List[str] = []  # every shim added to the real modules of this process, in order
_torchaudio_done = False


# ---------------------------------------------------------------- audio I/O through soundfile
@dataclass
class AudioMetaData:
    """What ``torchaudio.info`` returns (same field names)."""

    sample_rate: int
    num_frames: int
    num_channels: int
    bits_per_sample: int
    encoding: str


_SUBTYPE_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}


def info(uri, format: Optional[str] = None, buffer_size: int = 4096, backend: Optional[str] = None) -> AudioMetaData:
    """``torchaudio.info`` through soundfile."""
    import soundfile

    i = soundfile.info(uri)
    encoding = "PCM_S" if i.subtype.startswith("PCM") else i.subtype
    return AudioMetaData(i.samplerate, i.frames, i.channels, _SUBTYPE_BITS.get(i.subtype, 0), encoding)


def load(
    uri,
    frame_offset: int = 0,
    num_frames: int = -1,
    normalize: bool = True,
    channels_first: bool = True,
    format: Optional[str] = None,
    buffer_size: int = 4096,
    backend: Optional[str] = None,
):
    """``torchaudio.load`` through soundfile: returns ``(waveform, sample_rate)``, float32 in [-1, 1]."""
    import soundfile
    import torch

    dtype = "float32"
    if not normalize:  # torchaudio returns the native integer type for PCM when normalize=False
        sub = soundfile.info(uri).subtype
        dtype = {"PCM_16": "int16", "PCM_32": "int32"}.get(sub, "float32")
    data, sr = soundfile.read(uri, start=frame_offset, frames=num_frames, dtype=dtype, always_2d=True)
    wav = torch.from_numpy(data.T.copy() if channels_first else data.copy())
    return wav, sr


def save(
    uri,
    src,
    sample_rate: int,
    channels_first: bool = True,
    format: Optional[str] = None,
    encoding: Optional[str] = None,
    bits_per_sample: Optional[int] = None,
    buffer_size: int = 4096,
    backend: Optional[str] = None,
    compression=None,
) -> None:
    """``torchaudio.save`` through soundfile (16-bit PCM by default, as torchaudio's wav default)."""
    import soundfile

    data = src.detach().cpu()
    data = data.T if channels_first else data
    subtype = {8: "PCM_U8", 16: "PCM_16", 24: "PCM_24", 32: "PCM_32"}.get(bits_per_sample or 16, "PCM_16")
    if encoding == "PCM_F":
        subtype = "FLOAT"
    soundfile.write(uri, data.numpy(), sample_rate, subtype=subtype, format=format)


# ---------------------------------------------------------------- sox effects
def _apply_effects(wav, sr: int, effects: Sequence[Sequence[str]]):
    import torch
    from torchaudio.functional import resample

    for effect in effects:
        name, *args = [str(a) for a in effect]
        if name == "channels":
            n = int(args[0])
            if n == 1:
                wav = wav.mean(dim=0, keepdim=True)
            elif wav.size(0) == 1:
                wav = wav.expand(n, -1).clone()
            elif wav.size(0) != n:
                raise NotImplementedError(f"sox effect 'channels {n}' from {wav.size(0)} channels")
        elif name == "rate":
            new_sr = int(float(args[0]))
            if new_sr != sr:
                wav = resample(wav, sr, new_sr)
                sr = new_sr
        elif name == "gain":
            if args and args[0] == "-n":  # normalise to a peak of `db` (default 0 dB)
                db = float(args[1]) if len(args) > 1 else 0.0
                peak = wav.abs().max().clamp_min(1e-12)
                wav = wav / peak * 10 ** (db / 20)
            else:
                wav = wav * 10 ** (float(args[0]) / 20)
        elif name == "norm":
            db = float(args[0]) if args else 0.0
            wav = wav / wav.abs().max().clamp_min(1e-12) * 10 ** (db / 20)
        elif name == "remix" and args == ["-"]:
            wav = wav.mean(dim=0, keepdim=True)
        else:
            raise NotImplementedError(
                f"sox effect {effect!r} is not provided by s3prl_redundancy.compat (torchaudio >= 2.9 removed "
                "sox_effects); supported: channels, rate, gain, norm, remix -"
            )
    return wav.to(torch.float32), sr


def apply_effects_tensor(tensor, sample_rate: int, effects, channels_first: bool = True) -> Tuple:
    """``torchaudio.sox_effects.apply_effects_tensor`` for the effects s3prl uses."""
    wav = tensor if channels_first else tensor.T
    out, sr = _apply_effects(wav, sample_rate, effects)
    return (out if channels_first else out.T), sr


def apply_effects_file(path, effects, normalize: bool = True, channels_first: bool = True, format=None) -> Tuple:
    """``torchaudio.sox_effects.apply_effects_file`` for the effects s3prl uses."""
    wav, sr = load(str(path))
    out, sr = _apply_effects(wav, sr, effects)
    return (out if channels_first else out.T), sr


# ---------------------------------------------------------------- huggingface_hub placeholders
class _RemovedFromHub:
    """Stands in for a class that huggingface_hub 1.0 removed; s3prl imports it only to push to the hub."""

    _name = "?"

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            f"huggingface_hub.{self._name} was removed in huggingface_hub 1.0; s3prl uses it only to push "
            "models to the Hugging Face hub. Push with `huggingface_hub.upload_folder` instead, or install "
            "huggingface_hub<1.0."
        )

    @classmethod
    def get_token(cls):
        from huggingface_hub import get_token

        return get_token()

    @classmethod
    def save_token(cls, token):
        raise RuntimeError("huggingface_hub.HfFolder.save_token was removed; use `hf auth login`.")


def _torchaudio_needs_soundfile_io(torchaudio) -> bool:
    """torchaudio >= 2.9 decodes through torchcodec; without it load/save/info cannot work."""
    try:
        major, minor = (int(x) for x in torchaudio.__version__.split("+")[0].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 9) and importlib.util.find_spec("torchcodec") is None


def _has_submodule(package, name: str) -> bool:
    if hasattr(package, name) or f"{package.__name__}.{name}" in sys.modules:
        return True
    try:
        return importlib.util.find_spec(f"{package.__name__}.{name}") is not None
    except (ImportError, ValueError):
        return False


def patch_torchaudio(torchaudio) -> List[str]:
    """Shims 1-3 on a torchaudio module; a torchaudio <= 2.8 (which has all of these) is left untouched."""
    done: List[str] = []
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda backend=None: None
        done.append("torchaudio.set_audio_backend")
    if not _has_submodule(torchaudio, "sox_effects"):
        module = types.ModuleType(f"{torchaudio.__name__}.sox_effects", "soundfile-based stand-in (s3prl_redundancy.compat)")
        module.apply_effects_file = apply_effects_file
        module.apply_effects_tensor = apply_effects_tensor
        sys.modules[module.__name__] = module
        torchaudio.sox_effects = module
        done.append("torchaudio.sox_effects")
    if _torchaudio_needs_soundfile_io(torchaudio):
        torchaudio.load, torchaudio.save, torchaudio.info = load, save, info
        done.append("torchaudio.load/save/info")
    elif not hasattr(torchaudio, "info"):
        torchaudio.info = info
        done.append("torchaudio.info")
    return done


def patch_huggingface_hub(huggingface_hub) -> List[str]:
    """Shim 4: placeholders for the classes huggingface_hub 1.0 removed."""
    done: List[str] = []
    for name in ("HfFolder", "Repository"):
        if not hasattr(huggingface_hub, name):
            setattr(huggingface_hub, name, type(name, (_RemovedFromHub,), {"_name": name}))
            done.append(f"huggingface_hub.{name}")
    return done


def patch_torch_load() -> List[str]:
    """Shim 5: allow ``argparse.Namespace`` (s3prl's downstream checkpoints) under ``weights_only=True``."""
    import torch.serialization

    if not hasattr(torch.serialization, "add_safe_globals"):  # torch < 2.4 loads full pickles by default
        return []
    getter = getattr(torch.serialization, "get_safe_globals", None)
    if getter is not None and argparse.Namespace in list(getter()):
        return []
    torch.serialization.add_safe_globals([argparse.Namespace])
    return ["torch.load allows argparse.Namespace"]


class _DatasetFromSampler:
    """Index access to a sampler's output (catalyst.data.dataset.DatasetFromSampler)."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.sampler_list = None

    def __getitem__(self, index: int):
        if self.sampler_list is None:
            self.sampler_list = list(self.sampler)
        return self.sampler_list[index]

    def __len__(self) -> int:
        return len(self.sampler)


def _distributed_sampler_wrapper_class():
    """catalyst.data.sampler.DistributedSamplerWrapper (Apache-2.0), the one catalyst class s3prl uses: splits
    the output of any sampler (e.g. a WeightedRandomSampler) across distributed replicas."""
    from operator import itemgetter

    from torch.utils.data import DistributedSampler

    class DistributedSamplerWrapper(DistributedSampler):
        def __init__(self, sampler, num_replicas=None, rank=None, shuffle: bool = True):
            super().__init__(_DatasetFromSampler(sampler), num_replicas=num_replicas, rank=rank, shuffle=shuffle)
            self.sampler = sampler

        def __iter__(self):
            self.dataset = _DatasetFromSampler(self.sampler)
            indexes_of_indexes = list(super().__iter__())
            picked = itemgetter(*indexes_of_indexes)(self.dataset) if indexes_of_indexes else ()
            return iter(picked if len(indexes_of_indexes) != 1 else (picked,))

    return DistributedSamplerWrapper


def _catalyst_usable() -> bool:
    if importlib.util.find_spec("catalyst") is None:
        return False
    try:
        from importlib.metadata import version

        major = int(version("catalyst").split(".")[0])
    except Exception:
        return True  # unknown layout: leave it alone
    return not (major < 22 and sys.version_info >= (3, 10))


def patch_catalyst() -> List[str]:
    """Shim 6: a ``catalyst.data.sampler`` stand-in where catalyst is missing or cannot import."""
    if "catalyst.data.sampler" in sys.modules or _catalyst_usable():
        return []
    package = types.ModuleType("catalyst", "stand-in for catalyst (s3prl_redundancy.compat): only data.sampler")
    package.__path__ = []
    data = types.ModuleType("catalyst.data")
    data.__path__ = []
    sampler = types.ModuleType("catalyst.data.sampler")
    sampler.DistributedSamplerWrapper = _distributed_sampler_wrapper_class()
    package.data, data.sampler = data, sampler
    sys.modules.update({"catalyst": package, "catalyst.data": data, "catalyst.data.sampler": sampler})
    return ["catalyst.data.sampler.DistributedSamplerWrapper"]


def _record(names: List[str]) -> List[str]:
    _added.extend(n for n in names if n not in _added)
    return names


def applied() -> List[str]:
    """The shims added so far in this process (by :func:`apply` or :func:`apply_torchaudio`)."""
    return list(_added)


def apply_torchaudio() -> List[str]:
    """Shims 1-3 on the imported ``torchaudio``, once; cheap (imports nothing). Called when torchaudio is
    imported, so worker processes that never import s3prl (joblib, multiprocessing) have them too."""
    global _torchaudio_done
    torchaudio = sys.modules.get("torchaudio")
    if _torchaudio_done or torchaudio is None:
        return []
    _torchaudio_done = True
    return _record(patch_torchaudio(torchaudio))


def apply() -> List[str]:
    """Apply the shims that this stack needs; return their names. Idempotent."""
    global _applied
    if _applied is not None:
        return list(_applied)
    done: List[str] = []
    try:
        import torchaudio  # noqa: F401  (the import hook may already have patched it)
    except ImportError:  # pragma: no cover - s3prl itself needs torchaudio
        pass
    apply_torchaudio()
    done += [name for name in _added if name.startswith("torchaudio.")]
    try:
        import huggingface_hub
    except ImportError:  # pragma: no cover
        huggingface_hub = None
    if huggingface_hub is not None:
        done += _record(patch_huggingface_hub(huggingface_hub))
    done += _record(patch_torch_load())
    done += _record(patch_catalyst())
    _applied = done
    return list(done)
