"""SUPERB runs as submitit jobs: on SLURM (``launcher="slurm"``) or with submitit's local executor on this machine
(``launcher="submitit-local"``: the same code path without a cluster; jobs outlive the command).

Every s3prl process of a run (train, then test; see :mod:`.launch`) becomes one job executing :class:`S3prlJob`:
a picklable callable that runs the s3prl command line as a child process, its output appended to the run's
``train.log`` / ``test.log``, and returns its exit status. Runs that reach the launcher within
:attr:`SubmititLauncher.batch_window_s` of each other are submitted together (``executor.batch()``: one SLURM job
array, ``array_parallelism`` of them at a time).

Stopped jobs lose nothing twice. :class:`S3prlJob` is *resume-aware*: whenever it starts (first start, submitit's
requeue, SLURM's own requeue after a preemption) a training job looks for the latest complete
``expdir/states-*.ckpt`` and, when there is one, runs s3prl with ``-e <checkpoint>`` appended (s3prl restores
step, optimizer and downstream from it; its other arguments come from the checkpoint). submitit's checkpointing
hook (:meth:`S3prlJob.checkpoint`, called on the time-limit / preemption signal, USR2) stops the child gracefully
and returns a resubmission of the same callable. A SIGTERM (SLURM's preemption; it reaches the child too) takes
the same steps (checkpoint, requeue) and exits without a result, so a waiting runner keeps waiting for the
requeued job; a cancelled job cannot be requeued, ends without a result, and its run fails.

The folder of the executor is ``<out>/runs/.submitit/`` (submitit's pickles and its own logs, ``%j`` per job); the
run folders stay the record: ``run.json[phase]`` holds the job id and the launcher name while a job is out, so a
later ``superb`` adopts it (:meth:`SubmititLauncher.adopt`) instead of submitting it again, and
``superb-status`` asks the launcher for its state (:func:`job_state`).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..errors import UserInputError
from .launch import Handle, JobDetached, Launcher, LaunchRequest
from .runs import (
    EXPDIR_NAME, RUNS_DIR, STATUS_FAILED, STATUS_FINISHED, STATUS_TESTING, STATUS_TRAINING, job_of, latest_checkpoint,
    log_tail, now, run_lock, run_records,
)

JOBS_DIR = ".submitit"
"""The executor's folder under ``<out>/runs/`` (a label never starts with '.', so it is no upstream's folder)."""

LAUNCHERS = ("local", "slurm", "submitit-local")

DDP_LAUNCH_CODE = (
    "import os, runpy, sys; a = sys.argv[1:]; extra = ['--local_rank', os.environ['LOCAL_RANK']]\n"
    "if a[0] == '-m':\n    sys.argv = [a[1]] + a[2:] + extra; runpy.run_module(a[1], run_name='__main__', alter_sys=True)\n"
    "else:\n    sys.argv = ['-c'] + a[2:] + extra; exec(compile(a[1], '<string>', 'exec'), {'__name__': '__main__'})"
)
"""``python -c DDP_LAUNCH_CODE -m MODULE ARGS`` / ``-c CODE ARGS``: the python command line after it, with
``--local_rank $LOCAL_RANK`` appended: s3prl's run_downstream reads the rank from ``--local_rank`` only, torchrun
gives it in the environment (and ``torch.distributed.launch`` now passes ``--local-rank``, which s3prl refuses)."""


@dataclasses.dataclass
class ClusterOptions:
    """The resources of every job (one run's train or test process). Python names; see :func:`executor_parameters`.

    partition / account / qos: SLURM's. gpus_per_run: GPUs of one run (> 1: s3prl's DDP through torchrun in the
    job). cpus_per_run: CPUs of one run. mem_gb: memory per job. time_min: time limit of one job (a longer run is
    requeued from its checkpoint when it is reached). array_parallelism: jobs of one array running at once.
    sbatch: extra ``#SBATCH`` parameters ``{key: value}``. setup: shell lines run before the job (``module load``).
    max_timeouts: how often a job may be requeued after its time limit (preemptions do not count).
    """

    partition: Optional[str] = None
    gpus_per_run: int = 1
    cpus_per_run: int = 8
    mem_gb: Optional[float] = None
    time_min: int = 24 * 60
    account: Optional[str] = None
    qos: Optional[str] = None
    array_parallelism: int = 64
    sbatch: Dict[str, str] = dataclasses.field(default_factory=dict)
    setup: List[str] = dataclasses.field(default_factory=list)
    max_timeouts: int = 20

    def validate(self) -> "ClusterOptions":
        for name in ("gpus_per_run", "cpus_per_run", "time_min", "array_parallelism"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "gpus_per_run" else 1):
                raise UserInputError(f"must be a whole number >= {0 if name == 'gpus_per_run' else 1}, got {value!r}",
                                     argument=name)
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise UserInputError(f"must be positive, got {self.mem_gb!r}", argument="mem_gb")
        if self.max_timeouts < 0:
            raise UserInputError(f"must be >= 0, got {self.max_timeouts!r}", argument="max_timeouts")
        return self


def executor_parameters(options: ClusterOptions) -> Dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords (its own, sbatch-like names) for ``options``: one task on one
    node with all the run's GPUs (torchrun starts the DDP processes inside the job)."""
    from submitit.slurm.slurm import _convert_mem

    params: Dict[str, Any] = {"nodes": 1, "ntasks_per_node": 1, "cpus_per_task": options.cpus_per_run,
                              "time": options.time_min, "array_parallelism": options.array_parallelism,
                              "signal_delay_s": 120}
    if options.gpus_per_run:
        params["gpus_per_node"] = options.gpus_per_run
    if options.mem_gb is not None:
        params["mem"] = _convert_mem(options.mem_gb)
    for key, value in (("partition", options.partition), ("account", options.account), ("qos", options.qos)):
        if value is not None:
            params[key] = value
    if options.sbatch:
        params["additional_parameters"] = dict(options.sbatch)
    if options.setup:
        params["setup"] = list(options.setup)
    return params


def sbatch_script(options: ClusterOptions, folder: Path, array_size: Optional[int] = None,
                  name: str = "superb") -> str:
    """The sbatch script submitit writes for a job (``array_size``: a job array) of ``options``, without
    submitting anything (what ``superb --launcher slurm`` would submit; for review and tests)."""
    from submitit.slurm import slurm

    params = dict(executor_parameters(options), job_name=name)
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return slurm._make_sbatch_string(command=command, folder=folder, map_count=array_size, **params)


# ==================================================================================================
# the job
# ==================================================================================================


def with_checkpoint(command: Sequence[str], checkpoint: Optional[Path]) -> List[str]:
    """``command`` resuming from ``checkpoint`` (``-e`` appended: argparse keeps the last one, and s3prl takes
    every other argument from the checkpoint), or ``command`` itself when there is none."""
    return [*command, "-e", str(checkpoint)] if checkpoint is not None else list(command)


def torchrun_command(command: Sequence[str], nproc: int) -> List[str]:
    """``command`` (``python -m ...`` / ``python -c ...``) as ``nproc`` DDP processes on this node (torchrun)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "--no-python",
            command[0], "-c", DDP_LAUNCH_CODE, *command[1:]]


class S3prlJob:
    """One s3prl process of a run, as a submitit job (see the module docstring). Picklable; ``__call__`` returns
    the exit status of s3prl (0: success)."""

    grace_s = 60.0
    """How long a stopped child gets to exit after SIGTERM before it is killed."""

    def __init__(self, command: Sequence[str], log: Path, cwd: Path, env: Mapping[str, str], phase: str,
                 gpus: int = 1) -> None:
        self.command, self.log, self.cwd, self.phase = list(command), Path(log), Path(cwd), phase
        self.env = dict(env)  # only what differs from the submitting environment: the job keeps its own (SLURM_*, GPUs)
        self.gpus = int(gpus)
        self._proc = None
        self._stopped = False

    def __getstate__(self) -> Dict[str, Any]:
        return dict(self.__dict__, _proc=None, _stopped=False)

    def command_now(self) -> List[str]:
        """The command to run now: a training job resumes from the latest complete checkpoint of the run, and
        trains with DDP on its GPUs; a test (s3prl's evaluation is not distributed) runs as one process."""
        if self.phase != "train":
            return list(self.command)
        command = with_checkpoint(self.command, latest_checkpoint(self.cwd / EXPDIR_NAME))
        return torchrun_command(command, self.gpus) if self.gpus > 1 else command

    def _environment(self) -> Dict[str, str]:
        env = dict(os.environ, **self.env)
        if "OMP_NUM_THREADS" not in self.env and os.environ.get("SLURM_CPUS_PER_TASK"):
            env["OMP_NUM_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]
        return env

    def __call__(self) -> int:
        import subprocess

        command = self.command_now()
        with open(self.log, "ab") as log:
            job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or "?"
            log.write(f"\n===== {now()} job {job}: {self.phase}\n$ {shlex.join(command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(command, cwd=str(self.cwd), env=self._environment(), stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            while (code := self._proc.poll()) is None:
                time.sleep(0.5)
            if code != 0 and (self._stopped or code == -signal.SIGTERM):
                self._requeue()
            return code
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._stop_child()

    def _on_sigterm(self, signum, frame) -> None:
        """SLURM stops the job (preemption): stop s3prl; :meth:`__call__` then asks for the requeue."""
        self._stopped = True
        if self._proc is not None and self._proc.returncode is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _requeue(self) -> None:
        """After a SIGTERM (preemption): submitit's own steps on USR2 (dump the resubmission from
        :meth:`checkpoint`, ask the scheduler to requeue the job), then exit *without* a result, so that a
        waiting runner keeps waiting for the requeued job, or sees a cancelled one end. When the requeue is
        refused (the job was cancelled, or the scheduler requeues preempted jobs itself) nothing else changes."""
        from submitit.core import job_environment, utils

        env = job_environment.JobEnvironment()
        signal.signal(env._usr_sig(), signal.SIG_IGN)  # a USR2 right after the SIGTERM would requeue a second time
        path = env.paths.submitted_pickle
        delayed = utils.DelayedSubmission.load(path)
        if not job_environment._checkpoint(delayed, path, delayed._timeout_countdown):
            try:
                env._requeue(delayed._timeout_countdown)  # LocalExecutor: exits with its requeue status here
            except Exception as e:  # scontrol refused
                print(f"requeue refused ({e}): the job was cancelled, or the scheduler requeues it itself",
                      file=sys.stderr, flush=True)
        sys.exit(-1)

    def _stop_child(self) -> None:
        """SIGTERM to the child's process group, SIGKILL after :attr:`grace_s`; reaps it without Popen's lock (this
        may run inside a signal handler while ``__call__`` polls)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(proc.pid, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid:
                    return
                time.sleep(0.2)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook on preemption / time limit: stop s3prl and resubmit this job (it resumes from the
        latest checkpoint when it starts again)."""
        from submitit.helpers import DelayedSubmission

        self._stop_child()
        with open(self.log, "ab") as log:
            log.write(f"\n===== {now()} job stopped (preemption or time limit): requeued\n".encode())
        return DelayedSubmission(S3prlJob(self.command, self.log, self.cwd, self.env, self.phase, self.gpus))


def job_environment_delta(env: Mapping[str, str]) -> Dict[str, str]:
    """The variables of ``env`` that differ from this process's environment (what a job must set on top of its
    own; the submitting host's ``CUDA_VISIBLE_DEVICES``, ``SLURM_*`` and paths are not carried over)."""
    return {k: v for k, v in env.items() if os.environ.get(k) != v}


# ==================================================================================================
# the launcher
# ==================================================================================================


class _JobHandle(Handle):
    def __init__(self, job: Any, poll_s: float, detach: bool) -> None:
        self.job, self.job_id, self.poll_s, self.detach = job, str(job.job_id), poll_s, detach
        self.details = {"job_log": str(job.paths.stderr)}  # submitit's log: tracebacks, signals, requeues

    def wait(self) -> int:
        if self.detach:
            raise JobDetached(self.job_id)
        while not self.job.done():
            time.sleep(self.poll_s)
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return int(self.job.result())
        except (FailedJobError, UncompletedJobError) as e:  # the job died (cancelled, out of memory, node failure)
            first = str(e).strip().splitlines()[:1]
            print(f"job {self.job_id} ended without a result: {first[0] if first else e} (its log: "
                  f"{self.job.paths.stderr})", flush=True)
            return -1

    def cancel(self) -> None:
        self.job.cancel(check=False)


class _Pending:
    def __init__(self, job: S3prlJob, name: str) -> None:
        self.job, self.name = job, name
        self.submitted: Any = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()


class SubmititLauncher(Launcher):
    """Runs each request as a submitit job: ``kind="slurm"`` (SlurmExecutor) or ``"submitit-local"``
    (LocalExecutor). ``folder``: the executor's folder (``<out>/runs/.submitit``). ``wait=False``: submit and
    return (the runner records the job ids; a later call adopts them)."""

    batch_window_s = 2.0
    """Requests arriving within this time of the first are submitted together (one job array on SLURM)."""

    def __init__(self, kind: str, folder: Path, options: Optional[ClusterOptions] = None, wait: bool = True,
                 poll_s: Optional[float] = None) -> None:
        if kind not in ("slurm", "submitit-local"):
            raise UserInputError(f"{kind!r}: use one of {list(LAUNCHERS)}", argument="launcher")
        self.name, self.folder, self.wait = kind, Path(folder), wait
        self.options = (options or ClusterOptions()).validate()
        self.poll_s = poll_s if poll_s is not None else (30.0 if kind == "slurm" else 1.0)
        self.parallel_runs = 100000  # every run at once: the scheduler (array_parallelism) decides what runs
        self.runs_elsewhere = kind == "slurm"
        self._executor = None
        self._pending: List[_Pending] = []
        self._lock, self._submit_lock = threading.Lock(), threading.Lock()

    def executor(self):
        if self._executor is None:
            import submitit

            folder = self.folder / "%j"
            if self.name == "slurm":
                self._executor = submitit.SlurmExecutor(folder, max_num_timeout=self.options.max_timeouts)
                self._executor.update_parameters(**executor_parameters(self.options))
            else:
                self._executor = submitit.LocalExecutor(folder, max_num_timeout=self.options.max_timeouts)
                self._executor.update_parameters(timeout_min=self.options.time_min, signal_delay_s=30)
        return self._executor

    def launch(self, request: LaunchRequest) -> Handle:
        job = S3prlJob(request.command, request.log, request.cwd, job_environment_delta(request.env), request.phase,
                       gpus=self.options.gpus_per_run if self.name == "slurm" else 1)
        slot = _Pending(job, f"superb-{request.name}-{request.phase}".replace("/", "-"))
        with self._lock:
            self._pending.append(slot)
            leader = len(self._pending) == 1
        if leader:
            time.sleep(self.batch_window_s)
            with self._lock:
                batch, self._pending = self._pending, []
            self._submit(batch)
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return _JobHandle(slot.submitted, self.poll_s, detach=not self.wait)

    def _submit(self, batch: List[_Pending]) -> None:
        try:
            with self._submit_lock:
                executor = self.executor()
                if len(batch) == 1:
                    if self.name == "slurm":
                        executor.update_parameters(job_name=batch[0].name)
                    batch[0].submitted = executor.submit(batch[0].job)
                else:
                    if self.name == "slurm":
                        executor.update_parameters(job_name="superb")
                    with executor.batch():
                        jobs = [executor.submit(slot.job) for slot in batch]
                    for slot, job in zip(batch, jobs):
                        slot.submitted = job
        except BaseException as e:  # every waiting run hears of it
            for slot in batch:
                slot.error = e
        finally:
            for slot in batch:
                slot.done.set()

    def adopt(self, job_id: str, request: LaunchRequest) -> Optional[Handle]:
        job = known_job(self.name, self.folder, job_id)
        return _JobHandle(job, self.poll_s, detach=not self.wait) if job is not None else None


# ==================================================================================================
# jobs of an earlier invocation
# ==================================================================================================

SLURM_WAITING = ("PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD")
SLURM_ALIVE = SLURM_WAITING + ("RUNNING", "COMPLETING", "SUSPENDED", "PREEMPTED", "RESIZING", "STAGE_OUT", "SIGNALING",
                                "READY", "UNKNOWN")
"""States in which a job may still run. UNKNOWN (sacct does not answer, or does not list a job submitted a moment
ago) counts: a job is never submitted twice on a guess."""


def _local_job_class():
    from submitit.local.local import LocalJob

    class AdoptedLocalJob(LocalJob):
        """A LocalJob of another process: running while its controller (pid = job id) lives."""

        def get_info(self, mode: str = "force") -> Dict[str, str]:
            if self.paths.result_pickle.exists():
                return {"jobState": "FINISHED"}
            return {"jobState": "RUNNING" if _controller_alive(self.job_id) else "NO PROCESS AND NO RESULT"}

    return AdoptedLocalJob


def _controller_alive(job_id: str) -> bool:
    """Whether the local job's controller process still runs: its pid is the job id, it is no zombie, and its
    command line is submitit's (empty for a moment while the process starts; a reused pid has another one)."""
    try:
        proc = Path(f"/proc/{int(job_id)}")
        state = proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = proc.joinpath("cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False
    return state not in ("Z", "X") and (not cmdline or b"submitit" in cmdline)


def known_job(kind: str, folder: Path, job_id: str) -> Any:
    """The submitit job ``job_id`` of launcher ``kind`` when it is queued, running, or finished with a result;
    None when it is gone without one (it is launched again)."""
    import submitit

    folder = Path(folder) / "%j"
    if kind == "slurm":
        job = submitit.SlurmJob(folder, job_id)
        if job.paths.result_pickle.exists() or job.watcher.get_state(job_id, mode="force") in SLURM_ALIVE:
            return job
        return None
    if kind == "submitit-local":
        job = _local_job_class()(folder, job_id)
        return job if job.get_info()["jobState"] != "NO PROCESS AND NO RESULT" else None
    return None


def job_state(kind: str, folder: Path, job_id: str, mode: str = "force") -> str:
    """``queued``, ``running``, ``ended`` (finished or died; the next ``superb`` collects it) or ``unknown``.
    ``mode``: submitit's watcher mode for SLURM (``cache`` after :func:`refresh_slurm_states`)."""
    try:
        if kind == "slurm":
            from submitit.slurm.slurm import SlurmJob

            state = SlurmJob.watcher.get_state(job_id, mode=mode)
            if state == "UNKNOWN":
                return "unknown"
            return "queued" if state in SLURM_WAITING else "running" if state in SLURM_ALIVE else "ended"
        if kind == "submitit-local":
            return "running" if _controller_alive(job_id) else "ended"
    except Exception:  # no sacct here, ...
        return "unknown"
    return "unknown"


def refresh_slurm_states(job_ids: Sequence[str]) -> None:
    """One ``sacct`` call for all ``job_ids`` (submitit's shared watcher), instead of one per job."""
    from submitit.slurm.slurm import SlurmJob

    for job_id in job_ids:
        SlurmJob.watcher.register_job(str(job_id))
    SlurmJob.watcher.update()


def run_state(run_dir: Path, record: Mapping[str, Any], jobs_folder: Path, tail: int = 15,
              mode: str = "force") -> Dict[str, Any]:
    """What one run is doing now: ``{"run", "state", "phase", "job_id", "launcher", "detail", "log", "log_tail"}``.
    ``state``: finished, failed, queued, running, ended (its job ended; the next ``superb`` collects it),
    interrupted (no process or job runs it) or planned."""
    status = record.get("status")
    out: Dict[str, Any] = {"run": f"{record.get('upstream')}/{run_dir.name}", "state": status, "phase": None,
                           "job_id": None, "launcher": None, "detail": "", "log": record.get("log"), "log_tail": ""}
    if status == STATUS_FINISHED:
        metric = record.get("metric") or {}
        out["detail"] = f"{metric.get('metric')} {metric.get('value')}" if metric else ""
    elif status == STATUS_FAILED:
        out["detail"] = record.get("error") or ""
        out["log_tail"] = log_tail(record["log"], tail) if record.get("log") else ""
        job_log = (record.get("test") or {}).get("job_log") or (record.get("train") or {}).get("job_log")
        if job_log and Path(job_log).is_file():  # the scheduler's side (a job that died before s3prl ran)
            out["job_log"] = job_log
            out["log_tail"] += f"\n--- {job_log}\n" + log_tail(job_log, tail)
    elif status in (STATUS_TRAINING, STATUS_TESTING):
        job = job_of(record)
        out["phase"] = "train" if status == STATUS_TRAINING else "test"
        if job is not None:
            phase, section = job
            out.update(phase=phase, job_id=str(section["job_id"]), launcher=section.get("launcher"),
                       log=section.get("log") or out["log"])
            out["state"] = job_state(str(section.get("launcher")), jobs_folder, str(section["job_id"]), mode)
        else:
            with run_lock(run_dir) as fd:  # held while a local superb process runs it
                out["state"] = "running" if fd is None else "interrupted"
    return out


def experiment_status(out: Path, tail: int = 15) -> List[Dict[str, Any]]:
    """:func:`run_state` of every run of the experiment folder ``out``."""
    jobs_folder = Path(out) / RUNS_DIR / JOBS_DIR
    runs = list(run_records(out))
    slurm = [job[1]["job_id"] for _, record in runs if (job := job_of(record)) and job[1].get("launcher") == "slurm"]
    if slurm:
        try:
            refresh_slurm_states(slurm)
        except Exception:  # no sacct on this host: the states say unknown
            pass
    return [run_state(run_dir, record, jobs_folder, tail, mode="cache") for run_dir, record in runs]


def make_launcher(kind: str, out: Path, options: Optional[ClusterOptions] = None, wait: bool = True) -> Optional[Launcher]:
    """The launcher of ``superb`` for ``kind``: None for ``local`` (the runner's subprocess launcher)."""
    if kind == "local":
        if not wait:
            raise UserInputError("`wait=False` needs a launcher whose jobs outlive the command (slurm, submitit-local)",
                                 argument="wait")
        return None
    if kind == "slurm" and not slurm_available():
        raise UserInputError("SLURM's commands (srun, sbatch) are not on this machine: run it on a login node of the "
                             "cluster (`launcher='submitit-local'` runs the same jobs here)", argument="launcher")
    return SubmititLauncher(kind, Path(out) / RUNS_DIR / JOBS_DIR, options, wait=wait)


def slurm_available() -> bool:
    """Whether jobs can be submitted from here (submitit's own test: ``srun`` is found)."""
    import shutil

    return shutil.which("srun") is not None and shutil.which("sbatch") is not None


__all__ = ["JOBS_DIR", "LAUNCHERS", "DDP_LAUNCH_CODE", "ClusterOptions", "executor_parameters", "sbatch_script",
           "with_checkpoint", "torchrun_command", "S3prlJob", "job_environment_delta", "SubmititLauncher",
           "known_job", "job_state", "refresh_slurm_states", "run_state", "experiment_status", "make_launcher",
           "slurm_available"]
