"""Every file this project writes goes through here: atomic writes, JSON, figures, and the output-folder policy.

Atomic writes go to a temporary sibling (``.NAME.tmp<pid>...``) and ``os.replace`` it into place, so a
reader never sees half a file and a crash never leaves one. Temporaries whose process is gone (a kill
mid-write) are removed by the next write into the same folder.

:class:`OutputDir` is the one output-folder policy of every command:

- it is checked before any heavy work: the folder (or the nearest folder above it that exists) must be
  writable, and a path that is a file is refused;
- a folder that holds files the command did not write is refused unless ``force``; even then those files
  are left alone, and one that a new output would overwrite is refused by name;
- every file the command writes is recorded in a marker file (:data:`MARKER`) that says which command
  wrote what; ``force`` deletes exactly those files (from a previous run of the same command) and nothing
  else; a folder that another command wrote into is refused (its files are not ours to replace).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from .errors import UserInputError

PathLike = Union[str, os.PathLike]

MARKER = ".s3prl-redundancy.json"
_MARKER_FORMAT = "s3prl_redundancy.outputs/1"
_TEMP_RE = re.compile(r"^\..+\.tmp(\d+)(?:[.\-].*)?$")


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------
def temp_path(path: PathLike, suffix: str = "") -> Path:
    """The temporary sibling that an atomic write of ``path`` uses (``.NAME.tmp<pid><suffix>``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: PathLike) -> List[str]:
    """Remove temporaries left in ``folder`` by writers that were killed mid-write; returns their names."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            _remove(entry)
            removed.append(entry.name)
    return removed


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any error it is removed.

    ``suffix`` keeps an extension some writers need (matplotlib picks the format from ``.png``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, value: Any, *, matrix_rows: bool = False) -> Path:
    """Write ``json_ready(value)``: NaN/inf become null; ``matrix_rows`` puts each list of numbers on one line."""
    value = json_ready(value)
    text = dumps_matrix_json(value) if matrix_rows else json.dumps(value, indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` atomically: a crash never leaves half a checkpoint."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_figure(fig: Any, path: PathLike, dpi: int = 120, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (PNG unless ``path`` says otherwise) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path, suffix=path.suffix or ".png") as tmp:
            fig.savefig(tmp, dpi=dpi, **savefig_kwargs)
    finally:
        plt.close(fig)
    return path


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``path`` (a folder), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = temp_path(path, "-dir")
    if tmp.exists():
        _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            _remove(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


@contextlib.contextmanager
def atomic_files(folder: PathLike) -> Iterator[Path]:
    """Yield a temporary folder *inside* ``folder`` to fill; on success each of its entries replaces the entry
    of the same name in ``folder`` (others are left alone), on error it is removed. For writers that fill a
    folder with several files (``save_pretrained``) beside files they must keep; a kill leaves only a
    temporary that the next write into ``folder`` removes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    tmp = temp_path(folder / "files", "-dir")
    if tmp.exists():
        _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        for entry in sorted(tmp.iterdir()):
            target = folder / entry.name
            if target.is_dir() and not target.is_symlink():
                _remove(target)
            os.replace(entry, target)
    finally:
        if tmp.exists():
            _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------
def json_ready(value: Any) -> Any:
    """A JSON-friendly copy: tuples -> lists, numpy/torch scalars and arrays -> numbers and lists, NaN/inf ->
    None, paths -> str, other objects -> str."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    tolist = getattr(value, "tolist", None)  # numpy scalars/arrays and torch tensors
    if callable(tolist):
        return json_ready(tolist())
    return str(value)


def dumps_matrix_json(value: Any, indent: int = 0) -> str:
    """JSON with one line per list of numbers (a matrix row), nested containers indented; no NaN."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, Mapping) and value:
        items = [f"{inner}{json.dumps(str(k))}: {dumps_matrix_json(v, indent + 1).lstrip()}" for k, v in value.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and any(isinstance(v, (list, Mapping)) for v in value):
        return pad + "[\n" + ",\n".join(dumps_matrix_json(v, indent + 1) for v in value) + "\n" + pad + "]"
    return pad + json.dumps(value, allow_nan=False)


def read_json(path: PathLike, what: str = "file", argument: Optional[str] = None) -> Any:
    """``json.load`` with a one-line error that names the file and what it should be."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{what} {path} does not exist", argument=argument) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserInputError(f"{what} {path} is not valid JSON ({e}); restore or re-create it", argument=argument) from None


# --------------------------------------------------------------------------------------------------
# The output-folder policy
# --------------------------------------------------------------------------------------------------
def check_writable(path: PathLike, argument: str = "out_dir") -> Path:
    """Refuse a path that cannot be written, before any work: the path itself if it exists, else the nearest
    folder above it that exists must accept a new file (probed by creating and removing one)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{path} is a file, not a folder; give a folder path", argument=argument)
    probe_in = path
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        raise UserInputError(f"{path} cannot be created: {probe_in} is a file, not a folder", argument=argument)
    try:
        fd, probe = tempfile.mkstemp(prefix=".s3prl-redundancy-probe.", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        hint = "choose a folder you can write to"
        if e.errno in (errno.EROFS,):
            hint = "the file system is read-only; " + hint
        raise UserInputError(f"{path} is not writable ({probe_in}: {reason}); {hint}", argument=argument) from None
    return path


def _read_marker(folder: Path) -> Optional[Dict[str, Any]]:
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (ValueError, OSError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != _MARKER_FORMAT:
        return None
    return data


class OutputDir:
    """A command's output folder, under the one policy of this project (see the module docstring).

    Typical use::

        out = OutputDir(out_dir, "prune", force=force)      # cheap: validates only
        out.check(outputs=("pruned.pt", "manifest.json"))   # before heavy work
        ...                                                  # heavy work
        out.prepare()                                        # create; with force, delete our old outputs
        out.write_json("manifest.json", manifest)            # atomic, recorded in the marker

    ``resume`` accepts a folder holding a previous run of the same command and keeps its files.
    ``argument`` is the Python name of the folder argument, for error messages.
    """

    def __init__(self, path: PathLike, command: str, *, force: bool = False, resume: bool = False,
                 argument: str = "out_dir"):
        self.path = Path(path)
        self.command = command
        self.force = bool(force)
        self.resume = bool(resume)
        self.argument = argument
        self._prepared = False

    # -- inspection ------------------------------------------------------------------------------
    def marker(self) -> Optional[Dict[str, Any]]:
        return _read_marker(self.path) if self.path.is_dir() else None

    def recorded(self) -> List[str]:
        """Names this command recorded in the folder by earlier runs (empty for another command's folder)."""
        marker = self.marker()
        if not marker or marker.get("command") != self.command:
            return []
        return [n for n in marker.get("files", []) if isinstance(n, str)]

    def previous_outputs(self) -> List[str]:
        """Recorded names that still exist."""
        return [n for n in self.recorded() if (self.path / n).exists() or (self.path / n).is_symlink()]

    def foreign(self) -> List[str]:
        """Entries of the folder that this command did not write (temporaries and the marker excluded)."""
        if not self.path.is_dir():
            return []
        ours = set(self.recorded()) | {MARKER}
        return sorted(e.name for e in self.path.iterdir() if e.name not in ours and not _TEMP_RE.match(e.name))

    # -- policy ----------------------------------------------------------------------------------
    def check(self, outputs: Iterable[str] = (), resume_file: Optional[str] = None) -> "OutputDir":
        """Validate the folder before any heavy work; creates and changes nothing.

        ``outputs`` are names this run will write where known in advance: with ``force``, a file of
        someone else's under one of those names is refused rather than overwritten. ``resume_file`` (for
        resumable commands) is the file a resumed run continues from: a previous run that has it is refused
        naming both `` `resume=True` `` and `` `force=True` ``, and ``resume`` without it is refused naming
        `` `force=True` `` (an earlier run that stopped before writing it is no dead end).
        """
        if self.force and self.resume:
            raise UserInputError("`force` and `resume` contradict each other: `resume` continues the run in this "
                                 "folder, `force` deletes it and starts over; pass one", argument=self.argument)
        check_writable(self.path, self.argument)
        marker = self.marker()
        if marker and marker.get("command") != self.command:
            raise UserInputError(
                f"{self.path} holds the outputs of a \"{marker.get('command')}\" run, not of \"{self.command}\"; "
                "choose another folder (those files are not this command's to replace)", argument=self.argument)
        previous, foreign = self.previous_outputs(), self.foreign()
        if resume_file is not None:
            self._check_resumable(resume_file, previous)
        if previous and not (self.force or self.resume):
            raise UserInputError(
                f"{self.path} already holds the outputs of a previous \"{self.command}\" run ({_listing(previous)}); "
                "pass `force=True` to replace them (nothing else is deleted), or choose another folder",
                argument=self.argument)
        if foreign and not self.force and not (self.resume and previous):  # accepted when the run began
            raise UserInputError(
                f"{self.path} is not empty and holds files that \"{self.command}\" did not write ({_listing(foreign)}); "
                "choose a new or empty folder, or pass `force=True` to write beside them (they are never deleted)",
                argument=self.argument)
        clash = sorted(set(foreign) & set(outputs))
        if clash:
            raise UserInputError(
                f"{self.path} holds {_listing(clash)}, which \"{self.command}\" did not write and would overwrite; "
                "move them away or choose another folder", argument=self.argument)
        return self

    def _check_resumable(self, resume_file: str, previous: Sequence[str]) -> None:
        if self.resume and resume_file not in previous:
            stopped = " (the run there stopped before writing it)" if previous else ""
            raise UserInputError(
                f"{self.path} holds no {resume_file} of a previous \"{self.command}\" run to resume from{stopped}; "
                "run it `resume=False` to start a new run there (with `force=True` to replace an earlier attempt), "
                "or choose another folder", argument="resume")
        if resume_file in previous and not (self.force or self.resume):
            raise UserInputError(
                f"{self.path} already holds a previous \"{self.command}\" run ({_listing(previous)}); pass "
                "`resume=True` to continue it, `force=True` to delete it and start over (nothing else is deleted), "
                "or choose another folder", argument=self.argument)

    def prepare(self) -> Path:
        """Create the folder; with ``force``, delete the outputs of this command's previous run (only those).

        Idempotent within one run.
        """
        if self._prepared:
            return self.path
        self.check()
        self.path.mkdir(parents=True, exist_ok=True)
        if self.force:
            for name in self.previous_outputs():
                _remove(self.path / name)
        remove_stale_temporaries(self.path)
        keep = self.previous_outputs() if self.resume else []
        self._write_marker(keep)
        self._prepared = True
        return self.path

    def _write_marker(self, files: Sequence[str]) -> None:
        data = {"format": _MARKER_FORMAT, "command": self.command, "files": sorted(dict.fromkeys(files))}
        atomic_write_text(self.path / MARKER, json.dumps(data, indent=2) + "\n")

    def record(self, *names: str) -> None:
        """Record top-level names (files or folders) as this command's outputs."""
        self.prepare()
        current = self.recorded()
        new = [n for n in names if n not in current]
        if new:
            self._write_marker(current + new)

    def file(self, name: str) -> Path:
        """The path of output ``name``, recorded as ours (write it atomically yourself)."""
        top = Path(name).parts[0]
        self.record(top)
        return self.path / name

    # -- writers ---------------------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.file(name), text)

    def write_bytes(self, name: str, data: bytes) -> Path:
        return atomic_write_bytes(self.file(name), data)

    def write_json(self, name: str, value: Any, *, matrix_rows: bool = False) -> Path:
        return atomic_write_json(self.file(name), value, matrix_rows=matrix_rows)

    def save_torch(self, name: str, obj: Any) -> Path:
        return atomic_torch_save(obj, self.file(name))

    def save_figure(self, name: str, fig: Any, dpi: int = 120, **kwargs: Any) -> Path:
        return save_figure(fig, self.file(name), dpi=dpi, **kwargs)

    def remove(self, name: str) -> None:
        """Delete one of our outputs (a resume file after success, say) and drop it from the marker."""
        path = self.path / name
        if path.exists() or path.is_symlink():
            _remove(path)
        current = self.recorded()
        if name in current:
            self._write_marker([n for n in current if n != name])


def _listing(names: Sequence[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")

