"""Run SUPERB (KS, SID, ER, ASR) on several upstreams with s3prl's own ``run_downstream``, resumably.

For every upstream x task (ER: x fold) the runner

1. writes the recipe (:func:`.recipe_files.write_recipe`: the official config, the profile, the
   recipe overrides, the per-upstream learning rate and the data paths) to ``recipe.yaml``;
2. trains with ``python -m s3prl.run_downstream -m train -u ENTRY [-k] [-g] -d DOWNSTREAM -c recipe.yaml
   -p expdir`` in a subprocess (s3prl's code, unchanged; our hub entries and compatibility layer are active in
   every process through the start-up hook), its output in ``train.log``;
3. tests with ``-m evaluate -t <test split> -e <dev-best.ckpt, else the last states-*.ckpt>``, its output in
   ``test.log``, and reads the metric (:mod:`.results`);
4. keeps ``run.json``: upstream, arguments, task, fold, profile, recipe hash, learning rate, status, metric,
   logs, wall time and the commands.

The experiment folder (``out``) holds ``superb.json``, ``runs/`` (see :mod:`.runs`) and the leaderboard
(``leaderboard.{csv,md,json}``, ``pareto.png``, ``cost.json``; see :mod:`.leaderboard`). It follows the output
policy of :class:`..io.OutputDir` (command ``superb``): a folder of an earlier ``superb`` run is continued (its
runs are reused or resumed), a folder with other files is refused unless ``force=True`` (they are never deleted).

The modules: :mod:`.planning` (options, data, the list of runs), :mod:`.runs` (the run folder and
``run.json``), :mod:`.launch` (how a process is executed: the :class:`~.launch.Launcher` interface), this
module (executing the runs and recording them), :mod:`.leaderboard` (the table, called at the end).

Resume: a finished run with the same configuration is skipped; an interrupted one continues from its
latest complete ``states-*.ckpt`` (``-m train -e <ckpt>``; s3prl restores step, optimizer and the downstream
weights) or starts over when there is none; a run whose training finished but whose test did not only
re-runs the test. A failed run is retried. A run directory recorded with a different configuration is
refused unless ``force=True``, which deletes it and starts that run again. SID runs keep s3prl's voxceleb1
file-list cache in their own ``voxceleb1_cache/`` (emptied when training starts from scratch; see :mod:`.launch`).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..io import OutputDir
from . import recipe_files as rf
from . import results as res
from .launch import JobDetached, LaunchFunction, Launcher, LaunchRequest, as_launcher, s3prl_command
from .leaderboard import COST_JSON, FILES, LR_TRIAL
from .planning import (
    RunPlan, SuperbOptions, check_existing, choose_rates, plan_lr_trials, plan_runs, resolve_data, validate_upstreams,
)
from .runs import (
    RECIPE_NAME, RUN_FORMAT, RUNS_DIR, SID_CACHE_NAME, STATUS_FAILED, STATUS_FINISHED, STATUS_INTERRUPTED,
    STATUS_PLANNED, STATUS_TESTING, STATUS_TRAINING, SUPERB_FORMAT, SUPERB_JSON, TEST_LOG, TRAIN_LOG,
    check_s3prl_path, choose_test_checkpoint, latest_checkpoint, now, read_run_json, read_superb_json, run_dir_name,
    run_lock, write_run_json,
)
from .tasks import TASKS

Report = Callable[[str], None]
_OUTPUTS = (SUPERB_JSON, RUNS_DIR, COST_JSON, *FILES.values())
"""The top-level names ``superb`` writes in its folder."""


# ==================================================================================================
# one run
# ==================================================================================================


class _Printer:
    def __init__(self, total: int):
        self.total = total
        self.lock = threading.Lock()
        self.bar = None
        if total > 1 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="SUPERB runs", unit="run", leave=False)

    def __call__(self, index: int, name: str, message: str) -> None:
        line = f"[{index}/{self.total}] {name}: {message}"
        with self.lock:
            if self.bar is not None:
                self.bar.write(line, file=sys.stdout)
            else:
                print(line, flush=True)

    def done(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _metric_text(metric: Optional[Mapping[str, Any]]) -> str:
    if not metric:
        return "no metric"
    return f"test {metric['metric']} {res.percent(metric):.2f}%"


def _log_header(log_path: Path, title: str, command: List[str]) -> int:
    """Append a header for one attempt; return the log's size after it (where the command's output starts)."""
    import shlex

    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(f"\n===== {now()} {title}\n$ {' '.join(shlex.quote(c) for c in command)}\n")
    return log_path.stat().st_size


def _child_env(opts: SuperbOptions) -> Dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    threads = opts.threads
    if threads is None and opts.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // opts.jobs)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def _new_record(plan: RunPlan, opts: SuperbOptions) -> Dict[str, Any]:
    import platform

    try:
        from importlib.metadata import version

        s3prl_version = version("s3prl")
    except Exception:
        s3prl_version = None
    return {
        "format": RUN_FORMAT,
        "upstream": plan.upstream.label,
        "hub_entry": plan.upstream.entry,
        "upstream_args": {"k": plan.upstream.ckpt, "g": plan.upstream.model_config},
        "task": plan.task,
        "fold": plan.fold,
        "downstream": TASKS[plan.task].downstream,
        "profile": opts.profile,
        "recipe_overrides": plan.overrides,
        "learning_rate": {"override": plan.learning_rate},
        "datarc": plan.datarc,
        "config": plan.config_fields,
        "config_hash": plan.config_hash,
        "device": opts.device,
        "status": STATUS_PLANNED,
        "metric": None,
        "dev_best": None,
        "error": None,
        "log": None,
        "train": {"done": False, "attempts": 0, "seconds": 0.0},
        "test": {"done": False, "attempts": 0, "seconds": 0.0},
        "wall_seconds": 0.0,
        "created_at": now(),
        "versions": {"s3prl": s3prl_version, "python": platform.python_version()},
        **({LR_TRIAL: dict(plan.trial)} if plan.trial else {}),
    }


def execute_run(plan: RunPlan, opts: SuperbOptions, launcher: Launcher, report: Report) -> Dict[str, Any]:
    """Train (or resume) and test one run; returns its final ``run.json`` record. Never raises for a crash of
    s3prl or another error of this run (only KeyboardInterrupt passes): the record's status is ``failed`` with
    the error and the log path."""
    run_dir = plan.run_dir
    with run_lock(run_dir) as lock_fd:
        if lock_fd is None:
            report(f"skipped: another process holds {run_dir / '.lock'} (it is running this run now)")
            record = read_run_json(run_dir) or _new_record(plan, opts)
            return dict(record, status=record.get("status"), skipped="locked by another process")
        record = read_run_json(run_dir)
        if record is not None and record.get("status") == STATUS_FINISHED:
            report(f"finished earlier ({_metric_text(record.get('metric'))}); skipped")
            return dict(record, skipped="finished earlier")
        if record is None:
            record = _new_record(plan, opts)
        elif record.get("status") in (STATUS_TRAINING, STATUS_TESTING, STATUS_INTERRUPTED, STATUS_FAILED):
            report(f"previous attempt ended as '{record['status']}' ({record.get('error') or 'interrupted'}); continuing")
        record["device"] = opts.device
        started = time.perf_counter()
        base_wall = float(record.get("wall_seconds") or 0.0)
        detached = None
        try:
            _Step(plan, opts, launcher, report, record, keep_fds=(lock_fd,)).execute()
        except KeyboardInterrupt:
            record.update(status=STATUS_INTERRUPTED, error="interrupted by the user (Ctrl-C)")
            raise
        except JobDetached as e:  # the job runs on; run.json keeps its id for a later invocation to adopt
            report(f"{e}")
            detached = e.job_id
        except Exception as e:  # a problem of this run (a file it cannot write, ...) must not stop the others
            _fail(record, f"runner error: {type(e).__name__}: {e}", Path(record.get("log") or run_dir / TRAIN_LOG), report)
        finally:
            record["wall_seconds"] = base_wall + time.perf_counter() - started
            record["updated_at"] = now()
            write_run_json(run_dir, record)
        return dict(record, detached=detached) if detached else record


def _fail(record: Dict[str, Any], message: str, log: Path, report: Report) -> None:
    record.update(status=STATUS_FAILED, error=message, log=str(log))
    report(f"FAILED: {message}; log: {log}")


class _Step:
    """The steps of one run (recipe, train, test), each recorded in ``record`` and ``run.json`` as it goes."""

    def __init__(self, plan: RunPlan, opts: SuperbOptions, launcher: Launcher, report: Report,
                 record: Dict[str, Any], keep_fds: Tuple[int, ...] = ()):
        self.plan, self.opts, self.launcher, self.report, self.record = plan, opts, launcher, report, record
        self.keep_fds = keep_fds
        self.sid_cache = plan.run_dir / SID_CACHE_NAME if plan.task == "sid" else None
        self.env = _child_env(opts)
        self.expdir_arg = check_s3prl_path(plan.expdir, "out")

    def execute(self) -> None:
        plan, record = self.plan, self.record
        recipe = rf.write_recipe(plan.run_dir / RECIPE_NAME, plan.task, self.opts.profile, plan.overrides,
                                 learning_rate=plan.learning_rate, test_fold=plan.fold, datarc=plan.datarc, force=True)
        record["recipe"] = {k: recipe[k] for k in ("config_path", "sha256", "recipe_source", "changes")}
        record["learning_rate"] = {"override": plan.learning_rate, "effective": recipe["effective_learning_rate"],
                                   "official": recipe["official_learning_rate"],
                                   **({"search": plan.search} if plan.search else {})}
        if not record["train"].get("done") and not self.train(recipe["config_path"]):
            return
        if plan.trial:  # an exploration of the learning-rate search is scored on dev during training, not tested
            dev = record.get("dev_best")
            record.update(status=STATUS_FINISHED, error=None, finished_at=now())
            self.report(f"explored lr {plan.learning_rate:g}: best {TASKS[plan.task].dev_split} "
                        f"{TASKS[plan.task].metric} " + (f"{dev['value']:.4g} at step {dev['step']}" if dev else "none"))
            return
        self.test()

    def _launch(self, phase: str, args: List[str], log: Path, title: str, status: str, header: Optional[str] = None,
                **fields: Any) -> Tuple[int, int]:
        """Run one s3prl process for ``phase`` (train / test) and record it; returns ``(exit status, offset in
        the log where its output starts)``. A job that an earlier invocation launched and the launcher can
        still see is adopted instead of launched again."""
        record, section = self.record, self.record[phase]
        command = s3prl_command(args, self.sid_cache)
        request = LaunchRequest(command=command, log=log, cwd=self.plan.run_dir, env=self.env, phase=phase,
                                name=self.plan.name, keep_fds=tuple(fd for fd in self.keep_fds if fd is not None))
        handle = None
        if self._job_out(phase, status):
            handle = self.launcher.adopt(str(section["job_id"]), request)
        if handle is None:
            section.update(command=command, log=str(log), attempts=int(section.get("attempts", 0)) + 1,
                           started_at=now(), **fields)
            record.update(status=status, error=None, log=str(log))
            write_run_json(self.plan.run_dir, record)
            self.report(f"{title} (log: {log})")
            start = _log_header(log, header or title, command)
            handle = self.launcher.launch(request)
            if handle.job_id is not None:  # a job that outlives this process: a later invocation may adopt it
                section.update(job_id=handle.job_id, launcher=self.launcher.name, **handle.details)
                write_run_json(self.plan.run_dir, record)
        else:
            self.report(f"adopted {self.launcher.name} job {section['job_id']} ({phase}; log: {log})")
            start = 0  # its output starts somewhere in the log; the last metric line in it is the one read
        t0 = time.perf_counter()
        try:
            code = handle.wait()
        except JobDetached:
            raise
        except BaseException:
            handle.cancel()
            raise
        section["seconds"] = float(section.get("seconds", 0.0)) + time.perf_counter() - t0
        section["returncode"] = code
        section.pop("job_id", None)
        section.pop("launcher", None)
        return code, start

    def _job_out(self, phase: str, status: str) -> bool:
        """Whether run.json names a job of this launcher for ``phase`` that :meth:`_launch` may adopt."""
        section = self.record[phase]
        return bool(section.get("job_id")) and section.get("launcher") == self.launcher.name and \
            self.record.get("status") == status

    def train(self, config_path: str) -> bool:
        """Train from scratch, or resume from the latest complete checkpoint; False when it failed."""
        plan, opts, expdir = self.plan, self.opts, self.plan.expdir
        resume = latest_checkpoint(expdir) if expdir.is_dir() else None
        if resume is not None:
            args = ["-m", "train", "-e", str(resume), "-o", f"args.expdir={self.expdir_arg!r}", "--device", opts.device]
            what = f"resuming training from {resume.name}"
        else:
            if not self._job_out("train", STATUS_TRAINING):  # no usable checkpoint (and no job using them): clean
                if expdir.exists():
                    shutil.rmtree(expdir)
                if self.sid_cache is not None and self.sid_cache.exists():
                    shutil.rmtree(self.sid_cache)
            args = ["-m", "train", *plan.upstream.s3prl_args(), "-d", TASKS[plan.task].downstream,
                    "-c", config_path, "-p", self.expdir_arg, "--device", opts.device]
            what = "training"
        train_log = plan.run_dir / TRAIN_LOG
        code, _ = self._launch("train", args, train_log, what, STATUS_TRAINING,
                               resumed_from=str(resume) if resume else None)
        if code != 0:
            _fail(self.record, f"training exited with status {code}", train_log, self.report)
            return False
        self.record["train"]["done"] = True
        self.record["dev_best"] = res.best_dev(plan.task, expdir, plan.fold)
        write_run_json(plan.run_dir, self.record)
        return True

    def test(self) -> None:
        """Evaluate the dev-best (else the last) checkpoint on the task's test split and read the metric."""
        plan, record, expdir = self.plan, self.record, self.plan.expdir
        train_log, test_log = plan.run_dir / TRAIN_LOG, plan.run_dir / TEST_LOG
        ckpt, kind = choose_test_checkpoint(plan.task, expdir)
        if ckpt is None:
            _fail(record, f"training finished but left no dev-best or states-*.ckpt in {expdir}", train_log, self.report)
            return
        split = TASKS[plan.task].evaluate_split
        log_file = expdir / "log.log"
        offset = log_file.stat().st_size if log_file.is_file() else 0
        # --device explicitly: s3prl keeps the command line's device (default cuda) when resuming from -e CKPT, so
        # without it an evaluation on a CPU machine fails with "Torch not compiled with CUDA enabled"
        args = ["-m", "evaluate", "-t", split, "-e", str(ckpt), "-o", f"args.expdir={self.expdir_arg!r}",
                "--device", self.opts.device]
        code, start = self._launch("test", args, test_log, f"testing {kind} checkpoint {ckpt.name} on {split}",
                                   STATUS_TESTING, header=f"evaluate {ckpt.name} on {split}", checkpoint=str(ckpt),
                                   checkpoint_kind=kind)
        if code != 0:
            _fail(record, f"evaluation exited with status {code}", test_log, self.report)
            return
        with open(test_log, "rb") as fh:
            fh.seek(start)
            output = fh.read().decode("utf-8", errors="replace")
        try:
            metric = res.read_test_result(plan.task, expdir, test_log=output, log_offset=offset, fold=plan.fold)
        except res.ResultError as e:
            _fail(record, f"could not read the test metric: {e}", test_log, self.report)
            return
        record["test"]["done"] = True
        record.update(status=STATUS_FINISHED, metric=metric, error=None, log=str(test_log), finished_at=now())
        self.report(f"finished: {_metric_text(metric)} ({kind} checkpoint; train {record['train']['seconds']:.1f} s, "
                    f"test {record['test']['seconds']:.1f} s)")


# ==================================================================================================
# the whole benchmark
# ==================================================================================================


def _output_dir(opts: SuperbOptions) -> OutputDir:
    """The experiment folder under the output policy (command ``superb``): a folder of an earlier ``superb``
    invocation is continued (``resume``: its runs are reused, resumed or, with ``force``, replaced one by one by
    :func:`.planning.check_existing`); a folder holding other files needs ``force`` (they are left alone). A
    folder written before the policy existed (``superb.json`` without the marker) is continued as well."""
    probe = OutputDir(opts.out, "superb")
    ours = bool(probe.previous_outputs())
    legacy = probe.marker() is None and (opts.out / SUPERB_JSON).is_file()
    out = OutputDir(opts.out, "superb", force=(opts.force and not ours) or legacy, resume=ours, argument="out")
    out.check(outputs=() if legacy else _OUTPUTS)
    check_s3prl_path(opts.out, "out")
    return out


def _update_superb_json(opts: SuperbOptions, out: OutputDir, data_info: Mapping[str, Any]) -> Dict[str, Any]:
    state = read_superb_json(opts.out)
    order = list(state.get("upstreams", []))
    for spec in opts.upstreams:
        if spec.label not in order:
            order.append(spec.label)
    reference = opts.reference or state.get("reference") or opts.upstreams[0].label
    invocation = {
        "at": now(),
        "argv": list(sys.argv),
        "upstreams": [s.describe() for s in opts.upstreams],
        "tasks": opts.tasks,
        "profile": opts.profile,
        "er_folds": opts.er_folds,
        "learning_rates": {f"{k[0]}:{k[1]}": v for k, v in sorted(opts.learning_rates.items())},
        "recipe_overrides": opts.recipe_overrides,
        "device": opts.device,
        "data": dict(data_info),
    }
    state.update(format=SUPERB_FORMAT, upstreams=order, reference=reference,
                 invocations=(state.get("invocations") or [])[-19:] + [invocation])
    out.write_json(SUPERB_JSON, state)
    return state


def _run_all(plans: List[RunPlan], opts: SuperbOptions, launcher: Launcher) -> List[Dict[str, Any]]:
    """Execute every plan (``opts.jobs`` at a time); the records in plan order."""
    printer = _Printer(len(plans))

    def one(i_plan: Tuple[int, RunPlan]) -> Dict[str, Any]:
        i, plan = i_plan
        try:
            return execute_run(plan, opts, launcher, lambda msg: printer(i + 1, plan.name, msg))
        finally:
            printer.done()

    try:
        workers = max(opts.jobs, min(len(plans), launcher.parallel_runs or 0))
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(one, enumerate(plans)))
        return [one(item) for item in enumerate(plans)]
    finally:
        printer.close()


def _cost_device(device: str, launcher: Launcher) -> str:
    """Where the leaderboard measures latency: ``device``, checked here; a launcher whose runs execute on other
    machines (a cluster) does not need CUDA on this one, and latency is then measured on cpu when it has none."""
    if not device.startswith("cuda"):
        return device
    if launcher.runs_elsewhere:
        import torch

        if not torch.cuda.is_available():
            print(f"note: runs go to {device} on the cluster; this host has no CUDA, so the leaderboard measures "
                  "latency on cpu", flush=True)
            return "cpu"
    from ..upstream_loading import resolve_device

    resolve_device(device)
    return device


def _delete_replaced(replace: Sequence[RunPlan]) -> None:
    for plan in replace:
        print(f"force: deleting {plan.run_dir} (recorded with another configuration)", flush=True)
        shutil.rmtree(plan.run_dir)


def run_superb(opts: SuperbOptions, launcher: Union[Launcher, LaunchFunction, None] = None,
               validate_hub: bool = True) -> Dict[str, Any]:
    """Run (or resume) every upstream x task of ``opts``; write the leaderboard at the end.

    With ``opts.lr_search`` the exploration runs of the learning-rate search run first (:func:`.planning.plan_lr_trials`)
    and every full run trains at the rate chosen on dev (:func:`.planning.choose_rates`).
    ``launcher``: a :class:`~.launch.Launcher` (default: :class:`~.launch.SubprocessLauncher`) or a function
    ``(command, log, cwd, env) -> status``. Returns ``{"runs": [run.json records in plan order], "failed": [...],
    "detached": [...], "lr_search": {"label:task": search}, "leaderboard": {...} or None}``. Bad input raises
    :class:`UserInputError` before anything runs; a crash inside s3prl only fails its run.
    """
    opts.validate()
    launcher = as_launcher(launcher)
    cost_device = _cost_device(opts.device, launcher)
    out = _output_dir(opts)
    if validate_hub:
        validate_upstreams(opts.upstreams)
    datarc, data_info = resolve_data(opts.data_root, opts.tasks, opts.er_folds, opts.datarc_overrides)
    trials = plan_lr_trials(opts, datarc, data_info)
    plans = [] if trials else plan_runs(opts, datarc, data_info)
    replace = check_existing(trials or plans, opts.force)
    out.prepare()
    out.record(RUNS_DIR)
    _update_superb_json(opts, out, data_info)
    _delete_replaced(replace)
    runs = len(opts.upstreams) * sum(len(opts.er_folds) if TASKS[t].folds else 1 for t in opts.tasks)
    print(f"SUPERB: {len(opts.upstreams)} upstream(s) x {len(opts.tasks)} task(s) = {runs} run(s) "
          f"({'ER folds ' + ','.join(f[4:] for f in opts.er_folds) if 'er' in opts.tasks else 'no ER'}), profile "
          f"{opts.profile}, device {opts.device}, data {data_info['kind']} at {data_info['root']}, out {opts.out}",
          flush=True)
    searches: Dict[Tuple[str, str], Dict[str, Any]] = {}
    records: List[Dict[str, Any]] = []
    if trials:
        steps = ", ".join(sorted({f"{p.task} {p.trial['steps']} steps" for p in trials}))
        print(f"learning-rate search: {len(trials)} exploration run(s) ({steps}), scored on dev", flush=True)
        records = _run_all(trials, opts, launcher)
        if not any(r.get("detached") for r in records):  # jobs still out: the next call adopts them and chooses
            searches = _report_search(choose_rates(trials, records))
            plans = plan_runs(opts, datarc, data_info, searches)
            _delete_replaced(check_existing(plans, opts.force))
            records = _run_all(plans, opts, launcher)
    else:
        records = _run_all(plans, opts, launcher)
    return _finish(opts, out, records, searches, cost_device)


def _report_search(searches: Dict[Tuple[str, str], Dict[str, Any]]) -> Dict[Tuple[str, str], Dict[str, Any]]:
    for (label, task), search in searches.items():
        scores = ", ".join(f"{t['rate']:g}: {'n/a' if t['value'] is None else format(t['value'], '.4g')}"
                           for t in search["trials"])
        chosen = f"{search['chosen']:g}" if search["chosen"] is not None else "none scored, the recipe's rate"
        print(f"  {label}/{task}: best {search['split']} {search['metric']} ({scores}) -> lr {chosen}", flush=True)
    return searches


def _finish(opts: SuperbOptions, out, records: List[Dict[str, Any]], searches, cost_device: str) -> Dict[str, Any]:
    """The summary of a call, and the leaderboard once every run has finished here."""
    detached = [r for r in records if r.get("detached")]
    failed = [r for r in records if r.get("status") != STATUS_FINISHED and not r.get("detached")]
    summary: Dict[str, Any] = {"runs": records, "failed": failed, "detached": detached, "leaderboard": None,
                               "lr_search": {f"{label}:{task}": s for (label, task), s in searches.items()}}
    if detached:
        print(f"{len(detached)} job(s) submitted and not waited for; run the same command again to collect them "
              "(it adopts them), or see their state with superb-status", flush=True)
    if opts.leaderboard and not detached:
        from .leaderboard import build_leaderboard, write_leaderboard

        board = build_leaderboard(opts.out, reference=opts.reference, device=cost_device,
                                  cost_seconds=opts.cost_seconds, cost_repeats=opts.cost_repeats, threads=opts.threads)
        out.record(COST_JSON, *FILES.values())
        summary["leaderboard"] = write_leaderboard(board, opts.out)
        print(board.markdown, flush=True)
    if failed:
        print(f"{len(failed)} of {len(records)} run(s) did not finish:", flush=True)
        for r in failed:
            print(f"  {r['upstream']}/{run_dir_name(r['task'], r.get('fold'))}: {r.get('status')}: "
                  f"{r.get('error') or r.get('skipped')}; log: {r.get('log')}", flush=True)
    return summary


__all__ = ["execute_run", "run_superb", "resolve_data", "plan_runs", "check_existing", "validate_upstreams"]
