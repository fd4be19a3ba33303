"""The run record: where a SUPERB run lives on disk and what it says about itself.

Layout of an experiment folder (``out``)::

    superb.json                          the invocations (upstream order, reference, options)
    runs/<label>/<task>/                 one run (folded tasks: runs/<label>/<task>-<fold>/)
        run.json  recipe.yaml  train.log  test.log  expdir/ (s3prl's -p folder)  voxceleb1_cache/ (SID)
        .lock                            held (flock) while a process runs it

``run.json`` is written atomically after every step, so it always says how far a run got (:data:`STATUS_*`).
While a process of a run is out as a job of a batch launcher, ``run.json[phase]`` holds ``job_id`` and
``launcher`` (and the log it writes in ``log``); the runner removes them when the job has ended.
Both the runner (which writes runs) and the leaderboard (which reads them) import this module; it imports
neither.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple, Union

from ..errors import UserInputError
from ..io import atomic_write_json, read_json
from .tasks import get_task

PathLike = Union[str, "os.PathLike[str]"]

RUN_FORMAT = "s3prl_redundancy.superb.run/1"
SUPERB_FORMAT = "s3prl_redundancy.superb/1"
SUPERB_JSON = "superb.json"
RUNS_DIR = "runs"
RUN_JSON = "run.json"
RECIPE_NAME = "recipe.yaml"
TRAIN_LOG = "train.log"
TEST_LOG = "test.log"
EXPDIR_NAME = "expdir"
SID_CACHE_NAME = "voxceleb1_cache"
LOCK_NAME = ".lock"

STATUS_PLANNED = "planned"
STATUS_FINISHED, STATUS_FAILED = "finished", "failed"
STATUS_TRAINING, STATUS_TESTING, STATUS_INTERRUPTED = "training", "testing", "interrupted"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run_dir_name(task: str, fold: Optional[str]) -> str:
    """``ks``, ``er-fold1``: the folder of one run under ``runs/<label>/``."""
    return f"{task}-{fold}" if fold else task


def run_dir(out: PathLike, label: str, task: str, fold: Optional[str] = None) -> Path:
    return Path(out) / RUNS_DIR / label / run_dir_name(task, fold)


def read_run_json(run_dir: PathLike) -> Optional[Dict[str, Any]]:
    """The ``run.json`` of a run folder; None when there is none. A file that is not a run record is refused."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        return None
    data = read_json(path, "run record", argument="out")
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise UserInputError(f"{path} was not written by the SUPERB runner ({RUN_FORMAT}); use another `out` "
                             "or pass `force=True`", argument="out")
    return data


def write_run_json(run_dir: PathLike, record: Mapping[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / RUN_JSON, record)


def read_superb_json(out: PathLike) -> Dict[str, Any]:
    """``superb.json`` of an experiment folder (``{}`` when missing or unreadable: it is rebuilt on the next run)."""
    path = Path(out) / SUPERB_JSON
    if not path.is_file():
        return {}
    try:
        state = read_json(path)
    except UserInputError:
        return {}
    return state if isinstance(state, dict) else {}


def check_s3prl_path(path: Path, argument: str = "out") -> str:
    """``str(path)``, refused when it holds '=' or ',,' (s3prl's ``-o`` parser cannot carry them)."""
    text = str(path)
    if "=" in text or ",," in text:
        raise UserInputError(f"{text} contains '=' or ',,', which s3prl's -o parser cannot carry; use another path",
                             argument=argument)
    return text


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Optional[int]]:
    """An exclusive lock on ``run_dir/.lock``, released when every process holding it has ended; yields the
    file descriptor (hand it to the run's processes so the lock outlives this one), or None when another
    process holds the lock."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield None
            return
        try:
            yield fh.fileno()
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


def run_records(out: PathLike) -> Iterator[Tuple[Path, Dict[str, Any]]]:
    """``(run folder, run.json)`` of every run of an experiment folder, in folder order."""
    for path in sorted((Path(out) / RUNS_DIR).glob(f"*/*/{RUN_JSON}")):
        record = read_run_json(path.parent)
        if record is not None:
            yield path.parent, record


def job_of(record: Mapping[str, Any]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """``(phase, run.json section)`` of the job a run has out (a ``job_id`` in its train or test section), if any."""
    for phase in ("train", "test"):
        section = record.get(phase) or {}
        if section.get("job_id"):
            return phase, section
    return None


def log_tail(path: PathLike, lines: int = 20) -> str:
    """The last ``lines`` lines of a log ('' when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 200 * lines))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def latest_checkpoint(expdir: Path) -> Optional[Path]:
    """The complete ``states-<step>.ckpt`` with the highest step (a file cut short by a kill is skipped)."""
    found = []
    for path in Path(expdir).glob("states-*.ckpt"):
        match = re.match(r"^states-(\d+)\.ckpt$", path.name)
        if match and zipfile.is_zipfile(path):
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def choose_test_checkpoint(task: str, expdir: Path) -> Tuple[Optional[Path], Optional[str]]:
    """``(path, kind)``: the expert's ``<dev split>-best.ckpt`` if it saved one, else the last states ckpt."""
    best = Path(expdir) / f"{get_task(task).dev_split}-best.ckpt"
    if best.is_file() and zipfile.is_zipfile(best):
        return best, "dev-best"
    last = latest_checkpoint(expdir)
    return (last, "last") if last is not None else (None, None)


__all__ = [
    "RUN_FORMAT", "SUPERB_FORMAT", "SUPERB_JSON", "RUNS_DIR", "RUN_JSON", "RECIPE_NAME", "TRAIN_LOG", "TEST_LOG",
    "EXPDIR_NAME", "SID_CACHE_NAME", "LOCK_NAME", "STATUS_PLANNED", "STATUS_FINISHED", "STATUS_FAILED",
    "STATUS_TRAINING", "STATUS_TESTING", "STATUS_INTERRUPTED", "now", "run_dir_name", "run_dir", "read_run_json",
    "write_run_json", "read_superb_json", "check_s3prl_path", "run_lock", "run_records", "job_of", "log_tail", "latest_checkpoint", "choose_test_checkpoint",
]
