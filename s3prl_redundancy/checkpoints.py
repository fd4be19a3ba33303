"""The one checkpoint reader: ``weights_only=True`` always, and a clear error for every kind of bad file.

A file is first identified by its first bytes, so the error says what it *is* instead of passing on
whatever ``torch.load`` happens to raise (a text file used to surface as a bare ``KeyError`` /
``IndexError`` from the unpickler, random bytes as "holds Python objects"):

* a zip archive (torch's format since 1.6) must hold ``<name>/data.pkl``; a zip of something else, or one
  cut short (no central directory), is named as such;
* a pickle stream (torch's legacy format) goes to ``torch.load``; only then does "holds Python objects"
  mean what it says;
* anything else is not a PyTorch file: text or binary, shown by its first bytes.

:func:`load_family_checkpoint` (every command's and entry's source checkpoint) also takes a ``transformers``
model folder (``config.json`` + ``model.safetensors``), converted in memory by
:mod:`s3prl_redundancy.transformers_import`.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .errors import UserInputError
from .families import FAMILIES, Family, detect_family

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = 0x80  # the PROTO opcode that starts every pickle of protocol >= 2 (torch's legacy format)


def _describe_start(head: bytes) -> str:
    """What the first bytes of a non-torch file look like: text (quoted) or binary."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data (starts with bytes {head[:8].hex(' ')})"
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"a text file (starts with {text[:40]!r})"
    return f"binary data (starts with bytes {head[:8].hex(' ')})"


def _check_zip(path: Path, what: str, argument: Optional[str]) -> None:
    """A zip archive must be complete and hold a torch pickle (``<archive>/data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise UserInputError(
            f"{what} {path} is a zip archive that is cut short or damaged (no central directory): probably an "
            "interrupted copy or download; re-copy or re-create it", argument=argument) from None
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        raise UserInputError(
            f"{what} {path} is a zip archive of other files ({', '.join(names[:4]) or 'empty'}), not a PyTorch "
            "checkpoint (which holds <name>/data.pkl); give the .pt file itself", argument=argument)


def _check_kind(path: Path, what: str, argument: Optional[str]) -> None:
    """Refuse a missing, empty or non-torch file before ``torch.load`` sees it."""
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a folder, not a file; give the checkpoint file itself", argument=argument)
    if not path.is_file():
        raise UserInputError(f"{what} {path} does not exist (or is not a file); check the path", argument=argument)
    if path.stat().st_size == 0:
        raise UserInputError(f"{what} {path} is empty (0 bytes); re-copy or re-create it", argument=argument)
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(ZIP_MAGIC):
        _check_zip(path, what, argument)
    elif head[0] != PICKLE_PROTO:
        raise UserInputError(
            f"{what} {path} is not a PyTorch checkpoint: it is {_describe_start(head)}; give a .pt file written by "
            "torch.save (s3prl's local format)", argument=argument)


def check_checkpoint_file(path, what: str = "checkpoint", argument: Optional[str] = "ckpt") -> None:
    """Refuse a missing, empty or non-PyTorch file by what it is, without loading it (for loaders that
    hand the path to s3prl)."""
    _check_kind(Path(path), what, argument)


def _forbidden_global(error: Exception) -> str:
    """The line of torch's weights-only error that names the refused class or function."""
    line = next((l for l in str(error).splitlines() if "Unsupported global" in l), str(error).splitlines()[0])
    return line.strip().split(" was not an allowed global")[0]


HINT = "Convert it to s3prl's local format (plain dicts and tensors) first."


def load_checkpoint(path, what: str = "checkpoint", argument: Optional[str] = "ckpt", hint: str = HINT) -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with messages that name the file, what it is and the fix;
    ``argument``: the Python argument that gave ``path`` (named by every error); ``hint``: the fix for a file
    that holds Python objects."""
    import torch

    path = Path(path)
    _check_kind(path, what, argument)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # the unpickler met bytes it cannot read, not a forbidden class
            raise UserInputError(f"{what} {path} is corrupt or truncated (its pickle data cannot be read)",
                                 argument=argument) from None
        raise UserInputError(
            f"{what} {path} holds Python objects that are not plain tensors and configs, so it is not loaded "
            f"(weights_only=True never executes a pickle from a file): {_forbidden_global(e)}. {hint}", argument=argument
        ) from None
    except Exception as e:  # a damaged file makes the unpickler / zip reader raise assorted types
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserInputError(f"{what} {path} is corrupt or truncated ({type(e).__name__}: {first})", argument=argument) from None


def check_family(found: Optional[str], expected: Optional[str], source, entry: str = "pruned") -> None:
    """Refuse a checkpoint of another family than the entry or command expects (``entry``: the kind of hub
    entry that loads it, ``pruned`` or ``distilled``)."""
    if expected is not None and found != expected:
        local = f" / {FAMILIES[found].local_entry}" if entry == "pruned" else ""
        raise UserInputError(
            f"{source} is a {found} checkpoint, not {expected}; use the {found} entry (e.g. {entry}_{found}{local}) "
            "instead", argument="ckpt")


def load_family_checkpoint(path, expected_family: Optional[str] = None) -> Tuple[Family, Dict[str, Any]]:
    """Load a local-format checkpoint, or convert a ``transformers`` model folder, and check which family it
    belongs to."""
    if Path(path).is_dir():
        from .transformers_import import import_transformers

        ckpt, _ = import_transformers(path)
        check_family(detect_family(ckpt), expected_family, f"transformers folder {path}")
        return FAMILIES[detect_family(ckpt)], ckpt
    ckpt = load_checkpoint(path)
    family = detect_family(ckpt)
    if family is None:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserInputError(
            f"checkpoint {path} is not in an s3prl local format (keys: {keys}); expected HuBERT/wav2vec 2.0 "
            "('task_cfg', 'model_cfg', 'model_weight') or WavLM ('cfg', 'model'). Convert fairseq checkpoints with "
            "s3prl's upstream/<family>/convert.py first.", argument="ckpt"
        )
    check_family(family, expected_family, f"checkpoint {path}")
    return FAMILIES[family], ckpt


def checkpoint_buffer(ckpt: Dict[str, Any]) -> io.BytesIO:
    """Serialise a checkpoint in memory, for s3prl loaders that take a path and call ``torch.load`` on it."""
    import torch

    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    buffer.seek(0)
    return buffer
