"""How a run's s3prl processes are executed: the :class:`Launcher` interface and the local one.

A run executes s3prl's ``run_downstream`` twice (train, then test). The runner describes each process as a
:class:`LaunchRequest` and hands it to a launcher::

    handle = launcher.launch(request)     # start it (locally, on a cluster, ...)
    # the runner records handle.job_id (when not None) in run.json[phase]["job_id"] with the launcher's name
    status = handle.wait()                # block until it ends: its exit status (0: success)

A later invocation that finds a run whose ``run.json`` says a job is still in ``training`` / ``testing`` asks
``launcher.adopt(job_id, request)`` for a handle on that job before launching anything: a launcher whose jobs
outlive the invoking process (a batch scheduler) re-attaches there; :class:`SubprocessLauncher` cannot, and
returns None (the run is launched again, resuming from its last checkpoint).

``handle.cancel()`` is called when the user interrupts (Ctrl-C) while waiting. A handle of a launcher told not to
wait (``superb --no-wait``) raises :class:`JobDetached` from ``wait()``: the job goes on without this process, the
run stays recorded as ``training`` / ``testing`` with its job id, and a later invocation adopts it.

:class:`SubprocessLauncher` (the default) runs the command as a child process with its output appended to the
request's log. :class:`FunctionLauncher` wraps a plain function ``(command, log, cwd, env) -> status`` (tests,
simple custom back ends).

SID: s3prl's voxceleb1 dataset caches its file lists in ``<site-packages>/s3prl/downstream/voxceleb1/.cache``
whatever the data path (so two corpora collide). SID runs therefore go through :data:`SID_LAUNCH_CODE`, which
points the dataset's ``CACHE_PATH`` at the run's own ``voxceleb1_cache/`` before s3prl's ``run_downstream``
runs; the shared cache in site-packages is never used.
"""

from __future__ import annotations

import abc
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

SID_LAUNCH_CODE = (
    "import runpy, sys; import s3prl.downstream.voxceleb1.dataset as d; "
    "d.CACHE_PATH = sys.argv[1].rstrip('/') + '/'; sys.argv = ['run_downstream.py'] + sys.argv[2:]; "
    "runpy.run_module('s3prl.run_downstream', run_name='__main__', alter_sys=True)"
)
"""``python -c SID_LAUNCH_CODE <cache dir> <run_downstream arguments>``: s3prl's run_downstream, unchanged,
with the voxceleb1 file-list cache in ``<cache dir>`` instead of inside the installed package."""


def s3prl_command(args: Sequence[str], sid_cache: Optional[Path] = None) -> List[str]:
    """The command line running s3prl's ``run_downstream`` with ``args`` (SID: through :data:`SID_LAUNCH_CODE`)."""
    if sid_cache is not None:
        return [sys.executable, "-c", SID_LAUNCH_CODE, str(sid_cache), *args]
    return [sys.executable, "-m", "s3prl.run_downstream", *args]


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    """One s3prl process of a run."""

    command: List[str]  # the full command line (:func:`s3prl_command`)
    log: Path  # where stdout and stderr go (appended: one log keeps every attempt)
    cwd: Path  # the run folder
    env: Dict[str, str]  # the complete environment of the process
    phase: str  # "train" or "test": the run.json section this process belongs to
    name: str  # "<upstream label>/<run folder>", e.g. "base/er-fold1": a job name
    keep_fds: Tuple[int, ...] = ()  # descriptors the process inherits (the run's lock, held while it lives)


class JobDetached(Exception):
    """Raised by :meth:`Handle.wait` of a job that runs on without this process (it is not waited for)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} submitted; not waiting for it")
        self.job_id = job_id


class Handle(abc.ABC):
    """A launched process or job."""

    job_id: Optional[str] = None
    """An identifier that a later invocation can :meth:`Launcher.adopt` (recorded in run.json when not None)."""

    details: Dict[str, str] = {}
    """More about the job for run.json, recorded next to its id (e.g. ``job_log``: the scheduler's own log)."""

    @abc.abstractmethod
    def wait(self) -> int:
        """Block until it ends; its exit status (0: success; negative: killed by that signal). Raises
        :class:`JobDetached` when the launcher does not wait for its jobs."""

    def cancel(self) -> None:
        """Stop it (the user interrupted the runner). Default: nothing to stop."""


class Launcher(abc.ABC):
    """Executes :class:`LaunchRequest` s (see the module docstring)."""

    name: str = "launcher"
    """Recorded in run.json next to a job id, so a later invocation knows which launcher may adopt it."""

    runs_elsewhere: bool = False
    """True when the processes execute on other machines (a cluster): this host need not have their device."""

    parallel_runs: Optional[int] = None
    """How many runs the runner drives at once with this launcher; None: the runner's ``jobs``. A batch scheduler
    takes every run at once (its own limits decide what executes)."""

    @abc.abstractmethod
    def launch(self, request: LaunchRequest) -> Handle:
        """Start ``request``; returns at once (or when it has finished, for a synchronous launcher)."""

    def adopt(self, job_id: str, request: LaunchRequest) -> Optional[Handle]:
        """A handle on job ``job_id`` that an earlier invocation launched for ``request``, if it is still known
        to this launcher (running, or finished with a status to report); None to launch ``request`` again."""
        return None


class _ProcessHandle(Handle):
    def __init__(self, proc: subprocess.Popen, log) -> None:
        self.proc, self.log = proc, log

    def wait(self) -> int:
        try:
            return self.proc.wait()
        except BaseException:
            self.cancel()
            raise
        finally:
            self.log.close()

    def cancel(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SubprocessLauncher(Launcher):
    """Runs each request as a child process of this one, stdout and stderr appended to its log. On
    KeyboardInterrupt while waiting the child is stopped (terminate, then kill after 15 s) before re-raising."""

    name = "subprocess"

    def launch(self, request: LaunchRequest) -> Handle:
        log = open(request.log, "ab")
        try:
            proc = subprocess.Popen(request.command, cwd=str(request.cwd), env=request.env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=request.keep_fds)
        except BaseException:
            log.close()
            raise
        return _ProcessHandle(proc, log)


class _Finished(Handle):
    def __init__(self, status: int) -> None:
        self.status = status

    def wait(self) -> int:
        return self.status


LaunchFunction = Callable[[List[str], Path, Path, Dict[str, str]], int]
"""``function(command, log_path, cwd, env) -> exit status``."""


class FunctionLauncher(Launcher):
    """A synchronous launcher from a function ``(command, log_path, cwd, env) -> exit status``."""

    name = "function"

    def __init__(self, function: LaunchFunction) -> None:
        self.function = function

    def launch(self, request: LaunchRequest) -> Handle:
        return _Finished(int(self.function(list(request.command), request.log, request.cwd, dict(request.env))))


def as_launcher(launcher: Union[Launcher, LaunchFunction, None]) -> Launcher:
    """``None`` -> :class:`SubprocessLauncher`; a function -> :class:`FunctionLauncher`; a launcher as is."""
    if launcher is None:
        return SubprocessLauncher()
    if isinstance(launcher, Launcher):
        return launcher
    if callable(launcher):
        return FunctionLauncher(launcher)
    raise TypeError(f"launcher must be a Launcher or a function (command, log, cwd, env) -> status, got {launcher!r}")


__all__ = ["SID_LAUNCH_CODE", "s3prl_command", "LaunchRequest", "JobDetached", "Handle", "Launcher", "SubprocessLauncher",
           "FunctionLauncher", "LaunchFunction", "as_launcher"]
