"""SUPERB on a cluster (:mod:`s3prl_redundancy.superb.cluster`) without SLURM: the sbatch script submitit would
submit for the given options (rendered, not submitted), the job callable's resume logic, and real submitit jobs
through submitit's ``LocalExecutor`` (separate processes, pickled callables) running a stand-in for s3prl that
saves ``states-<step>.ckpt`` like s3prl does: a SIGTERM to the job stops it, the job is requeued and resumes from
its last checkpoint; a second launcher adopts a running job; a launcher that does not wait detaches.

LocalExecutor's requeue: its controller restarts a task that exits with status 144, which submitit's
preemption handler (USR2, :meth:`S3prlJob.checkpoint`) does after dumping the resubmission; a SIGTERM sent to the
controller is forwarded to the task. The end-to-end runs through s3prl are in ``test_superb_cluster_e2e.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest

from s3prl_redundancy import cli
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.superb.cluster import (
    ClusterOptions, S3prlJob, SubmititLauncher, known_job, sbatch_script, torchrun_command, with_checkpoint,
)
from s3prl_redundancy.superb.launch import JobDetached, LaunchRequest

FAKE_S3PRL = textwrap.dedent('''
    """Stand-in for s3prl's run_downstream -m train: steps of 0.3 s to --total, states-<step>.ckpt every 2 steps,
    -e CKPT resumes after that step (the last -e wins, as with argparse)."""
    import os, sys, time, zipfile
    args = sys.argv[1:]
    expdir, total = args[args.index("-p") + 1], int(args[args.index("--total") + 1])
    start = 0
    if "-e" in args:
        ckpt = args[len(args) - 1 - args[::-1].index("-e") + 1]
        start = int(os.path.basename(ckpt)[len("states-"):-len(".ckpt")])
        print(f"Resume from {ckpt}", flush=True)
    else:
        print("Start a new experiment", flush=True)
    os.makedirs(expdir, exist_ok=True)
    for step in range(start + 1, total + 1):
        time.sleep(0.3)
        print(f"step {step}", flush=True)
        if step % 2 == 0:
            with zipfile.ZipFile(os.path.join(expdir, f"states-{step}.ckpt"), "w") as z:
                z.writestr("step", str(step))
    print("done", flush=True)
''')


@pytest.fixture
def fake_run(tmp_path):
    script = tmp_path / "fake_s3prl.py"
    script.write_text(FAKE_S3PRL)
    run_dir = tmp_path / "exp" / "runs" / "base" / "ks"
    run_dir.mkdir(parents=True)

    def request(total: int) -> LaunchRequest:
        command = [sys.executable, str(script), "-m", "train", "-p", str(run_dir / "expdir"), "--total", str(total)]
        return LaunchRequest(command=command, log=run_dir / "train.log", cwd=run_dir, env=dict(os.environ),
                             phase="train", name="base/ks")

    return run_dir, request


def _launcher(tmp_path: Path, **kwargs) -> SubmititLauncher:
    launcher = SubmititLauncher("submitit-local", tmp_path / "exp" / "runs" / ".submitit", **kwargs)
    launcher.batch_window_s = 0.2
    return launcher


def _wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# the sbatch script and the command lines (no process)
# --------------------------------------------------------------------------------------------------


def test_sbatch_script_has_the_options_as_sbatch_lines(tmp_path):
    options = ClusterOptions(partition="gpu", gpus_per_run=2, cpus_per_run=10, mem_gb=64, time_min=720,
                             account="speech", qos="high", array_parallelism=3, sbatch={"constraint": "a100"},
                             setup=["module load cuda/12.1"])
    text = sbatch_script(options, tmp_path / "%j", array_size=8)
    lines = set(text.splitlines())
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=10",
                 "#SBATCH --mem=64GB", "#SBATCH --time=720", "#SBATCH --account=speech", "#SBATCH --qos=high",
                 "#SBATCH --constraint=a100", "#SBATCH --array=0-7%3", "#SBATCH --nodes=1",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@120", "module load cuda/12.1"):
        assert line in lines, (line, text)
    assert "submitit.core._submit" in text
    single = sbatch_script(ClusterOptions(gpus_per_run=0), tmp_path / "%j", name="superb-base-ks-train")
    assert "#SBATCH --array" not in single and "gpus-per-node" not in single and "--partition" not in single
    assert "#SBATCH --job-name=superb-base-ks-train" in single.splitlines()


def test_cli_options_become_cluster_options(tmp_path, monkeypatch):
    from s3prl_redundancy.commands import superb as command

    seen = {}
    monkeypatch.setattr("s3prl_redundancy.superb.cluster.slurm_available", lambda: True)
    monkeypatch.setattr("s3prl_redundancy.superb.runner.run_superb",
                        lambda opts, launcher=None: seen.update(opts=opts, launcher=launcher) or {"failed": []})
    (tmp_path / "data").mkdir()
    code = cli.main(["superb", "--upstreams", "fbank", "--tasks", "ks", "--data-root", str(tmp_path / "data"),
                     "--out", str(tmp_path / "exp"), "--launcher", "slurm", "--device", "cuda", "--no-wait",
                     "--partition", "gpu",
                     "--gpus-per-run", "2", "--cpus-per-run", "6", "--mem-gb", "40", "--time-min", "90",
                     "--account", "a", "--qos", "q", "--array-parallelism", "4", "--sbatch", "constraint=a100",
                     "--sbatch", "mail-type=END", "--slurm-setup", "module load cuda"])
    assert code == 0
    launcher = seen["launcher"]
    assert launcher.name == "slurm" and not launcher.wait
    assert launcher.folder == (tmp_path / "exp" / "runs" / ".submitit").resolve()
    o = launcher.options
    assert (o.partition, o.gpus_per_run, o.cpus_per_run, o.mem_gb, o.time_min, o.account, o.qos,
            o.array_parallelism) == ("gpu", 2, 6, 40.0, 90, "a", "q", 4)
    assert o.sbatch == {"constraint": "a100", "mail-type": "END"} and o.setup == ["module load cuda"]
    assert command.parse_sbatch(["--exclusive=user"]) == {"exclusive": "user"}
    with pytest.raises(UserInputError, match="KEY=VALUE"):
        command.parse_sbatch(["constraint"])


def test_options_that_do_not_apply_are_refused(tmp_path, capsys):
    from s3prl_redundancy.commands.superb import cluster_options

    with pytest.raises(UserInputError) as e:
        cluster_options("local", "cpu", partition="gpu")
    assert e.value.argument == "partition" and "`launcher='slurm'` only" in str(e.value)
    with pytest.raises(UserInputError) as e:
        cluster_options("local", "cpu", time_min=60)
    assert e.value.argument == "time_min"
    assert cluster_options("submitit-local", "cpu", time_min=60).time_min == 60
    with pytest.raises(UserInputError) as e:
        cluster_options("slurm", "cpu")  # a GPU per job by default, but s3prl would run on cpu
    assert e.value.argument == "device"
    assert cluster_options("slurm", "cpu", gpus_per_run=0).gpus_per_run == 0
    assert cluster_options("slurm", "cuda").gpus_per_run == 1
    (tmp_path / "data").mkdir()
    code = cli.main(["superb", "--upstreams", "fbank", "--tasks", "ks", "--data-root", str(tmp_path / "data"),
                     "--out", str(tmp_path / "exp"), "--sbatch", "constraint=a100"])
    assert code == 2 and "--sbatch: applies to --launcher 'slurm' only, not to --launcher 'local'" in capsys.readouterr().err


def test_bad_cluster_options_are_refused_by_name(tmp_path):
    with pytest.raises(UserInputError) as e:
        ClusterOptions(gpus_per_run=-1).validate()
    assert e.value.argument == "gpus_per_run"
    with pytest.raises(UserInputError) as e:
        ClusterOptions(time_min=0).validate()
    assert e.value.argument == "time_min"
    from s3prl_redundancy.superb.cluster import make_launcher, slurm_available

    with pytest.raises(UserInputError) as e:
        make_launcher("local", tmp_path, wait=False)
    assert e.value.argument == "wait"
    if not slurm_available():  # this machine: refused before anything is planned, with the way out
        with pytest.raises(UserInputError, match="submitit-local") as e:
            make_launcher("slurm", tmp_path)
        assert e.value.argument == "launcher"


def test_training_job_resumes_from_the_latest_complete_checkpoint(fake_run):
    run_dir, request = fake_run
    req = request(4)
    job = S3prlJob(req.command, req.log, req.cwd, {}, "train")
    assert job.command_now() == req.command  # nothing saved yet: from scratch
    (run_dir / "expdir").mkdir()
    for step in (2, 4):
        with zipfile.ZipFile(run_dir / "expdir" / f"states-{step}.ckpt", "w") as z:
            z.writestr("x", "1")
    (run_dir / "expdir" / "states-6.ckpt").write_bytes(b"cut short by a kill")
    assert job.command_now() == [*req.command, "-e", str(run_dir / "expdir" / "states-4.ckpt")]
    test_job = S3prlJob(req.command, req.log, req.cwd, {}, "test")
    assert test_job.command_now() == req.command  # an evaluation is simply run again
    assert with_checkpoint(["a"], None) == ["a"]
    ddp = S3prlJob(req.command, req.log, req.cwd, {}, "train", gpus=2).command_now()
    assert ddp[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert ddp[-2:] == ["-e", str(run_dir / "expdir" / "states-4.ckpt")]
    assert S3prlJob(req.command, req.log, req.cwd, {}, "test", gpus=2).command_now() == req.command  # one process


@pytest.mark.slow
def test_torchrun_wrapper_passes_local_rank_to_the_command(tmp_path):
    """s3prl reads the rank from --local_rank only; the wrapper appends it for each torchrun process."""
    (tmp_path / "show_args.py").write_text("import sys; print('ARGV', sys.argv[1:], flush=True)\n")
    command = torchrun_command([sys.executable, "-m", "show_args", "-m", "train"], 2)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), OMP_NUM_THREADS="1")
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = sorted(line for line in out.stdout.splitlines() if line.startswith("ARGV"))
    assert lines == ["ARGV ['-m', 'train', '--local_rank', '0']", "ARGV ['-m', 'train', '--local_rank', '1']"]


# --------------------------------------------------------------------------------------------------
# real submitit jobs (LocalExecutor): several processes each, a few seconds: slow-marked
# --------------------------------------------------------------------------------------------------


def _pids_of(*parts):
    """Processes whose command line holds every one of ``parts``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and all(str(p).encode() in (proc / "cmdline").read_bytes() for p in parts):
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("target", ["job", "s3prl", "usr2", "job+usr2"])
def test_a_stopped_job_is_requeued_and_resumes_from_its_checkpoint(fake_run, tmp_path, target):
    """``job``: SLURM stops the job (the controller forwards SIGTERM to the job process, which stops s3prl);
    ``s3prl``: only the s3prl process gets it (on SLURM every process of the job does); ``usr2``: the signal
    SLURM sends before the time limit (``--signal=USR2@120``), to the job process: submitit's own handler;
    ``job+usr2``: both at once, as submitit's ``SlurmJob._interrupt`` sends them for a preemption (one requeue)."""
    run_dir, request = fake_run
    launcher = _launcher(tmp_path)
    handle = launcher.launch(request(12))
    assert handle.job_id and (tmp_path / "exp" / "runs" / ".submitit" / handle.job_id).is_dir()
    _wait_for(lambda: (run_dir / "expdir" / "states-4.ckpt").exists())
    (task,) = _pids_of("submitit.core._submit", tmp_path / "exp" / "runs" / ".submitit")  # the job process
    if target.startswith("job"):
        os.kill(int(handle.job_id), signal.SIGTERM)
    if target.endswith("usr2"):
        os.kill(task, signal.SIGUSR2)
    if target == "s3prl":
        (pid,) = _pids_of(tmp_path / "fake_s3prl.py")
        os.kill(pid, signal.SIGTERM)
    assert handle.wait() == 0
    log = (run_dir / "train.log").read_text()
    assert log.count("Start a new experiment") == 1 and log.count("Resume from") == 1
    assert "job stopped (preemption or time limit): requeued" in log
    resumed_at = int(log.split("Resume from")[1].split("states-")[1].split(".ckpt")[0])
    steps = [int(line.split()[1]) for line in log.splitlines() if line.startswith("step ")]
    first_run, second_run = steps[:steps.index(resumed_at + 1, 1)], steps[steps.index(resumed_at + 1, 1):]
    assert resumed_at >= 4 and second_run == list(range(resumed_at + 1, 13))  # went on, not from step 1
    assert first_run[0] == 1 and max(first_run) >= resumed_at
    assert sorted(int(p.name[7:-5]) for p in (run_dir / "expdir").glob("states-*.ckpt"))[-1] == 12


@pytest.mark.slow
def test_a_second_launcher_adopts_the_running_job_and_no_wait_detaches(fake_run, tmp_path):
    run_dir, request = fake_run
    first = _launcher(tmp_path, wait=False)
    handle = first.launch(request(6))
    with pytest.raises(JobDetached) as e:
        handle.wait()
    assert e.value.job_id == handle.job_id
    second = _launcher(tmp_path)  # another invocation: a new launcher, the job id from run.json
    adopted = second.adopt(handle.job_id, request(6))
    assert adopted is not None and adopted.job_id == handle.job_id
    assert adopted.wait() == 0
    assert (run_dir / "train.log").read_text().count("Start a new experiment") == 1
    jobs = [p.name for p in (tmp_path / "exp" / "runs" / ".submitit").iterdir() if p.name != "%j"]
    assert jobs == [handle.job_id]  # nothing submitted twice
    # finished with a result: still adoptable (its status is reported); an unknown id is not
    assert known_job("submitit-local", tmp_path / "exp" / "runs" / ".submitit", handle.job_id) is not None
    assert second.adopt("999999999", request(6)) is None


def _launch_concurrently(launcher, request, count: int):
    """``count`` requests launched from as many threads at once (what a batching window must gather);
    their handles."""
    handles = []
    threads = [threading.Thread(target=lambda: handles.append(launcher.launch(request(2)))) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return handles


@pytest.mark.slow
def test_requests_arriving_together_are_submitted_in_one_batch(fake_run, tmp_path, monkeypatch):
    run_dir, request = fake_run
    launcher = _launcher(tmp_path)
    launcher.batch_window_s = 0.5
    batches = []
    original = launcher._submit
    monkeypatch.setattr(launcher, "_submit", lambda batch: (batches.append(len(batch)), original(batch))[1])
    handles = _launch_concurrently(launcher, request, 3)
    assert batches == [3] and len({h.job_id for h in handles}) == 3
    assert [h.wait() for h in handles] == [0, 0, 0]


def test_a_cluster_launcher_needs_no_cuda_on_the_submitting_host():
    import torch

    from s3prl_redundancy.superb.launch import SubprocessLauncher
    from s3prl_redundancy.superb.runner import _cost_device

    if torch.cuda.is_available():
        pytest.skip("checks a host without CUDA")
    slurm = SubmititLauncher("slurm", Path("unused"), ClusterOptions())
    assert _cost_device("cuda", slurm) == "cpu"  # the runs get their GPUs on the cluster; latency on this cpu
    assert _cost_device("cpu", SubprocessLauncher()) == "cpu"
    with pytest.raises(UserInputError, match="cuda"):
        _cost_device("cuda", SubprocessLauncher())  # local runs need CUDA here
    with pytest.raises(UserInputError):
        _cost_device("cuda", SubmititLauncher("submitit-local", Path("unused")))


def test_superb_status_prints_every_run(tmp_path, capsys):
    import json

    from s3prl_redundancy.superb.runs import RUN_FORMAT, write_run_json

    out = tmp_path / "exp"

    def run(label, task, status, **fields):
        folder = out / "runs" / label / task
        folder.mkdir(parents=True)
        record = {"format": RUN_FORMAT, "upstream": label, "task": task, "status": status, "train": {}, "test": {}}
        for key, value in fields.items():
            record[key] = value
        write_run_json(folder, record)
        return folder

    run("base", "ks", "finished", metric={"metric": "acc", "value": 0.93})
    failed = run("base", "asr", "failed", error="training exited with status 1")
    (failed / "train.log").write_text("".join(f"line {i}\n" for i in range(40)) + "CUDA out of memory\n")
    (tmp_path / "job.err").write_text("srun: error: module cuda/12.1 not found\n")
    write_run_json(failed, dict(json.loads((failed / "run.json").read_text()), log=str(failed / "train.log"),
                                train={"job_log": str(tmp_path / "job.err")}))
    run("base", "sid", "training", train={"job_id": "4242", "launcher": "slurm", "log": "x"})  # no sacct here
    run("base", "er-fold1", "testing", test={"job_id": "999999999", "launcher": "submitit-local"})  # gone
    run("small", "ks", "training")  # no job, nobody holds its lock
    run("small", "sid", "planned")
    assert cli.main(["superb-status", str(out), "--tail", "3"]) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines() if line and not line.startswith(" ")}
    assert lines["base/ks"].split()[1] == "finished" and "acc 0.93" in lines["base/ks"]
    assert lines["base/asr"].split()[1] == "failed" and "training exited with status 1" in lines["base/asr"]
    assert "  | CUDA out of memory" in text and "  | line 38" in text and "line 36" not in text
    assert f"  | --- {tmp_path / 'job.err'}" in text and "  | srun: error: module cuda/12.1 not found" in text
    assert lines["base/sid"].split()[1] == "unknown" and "job 4242 (slurm, train)" in lines["base/sid"]
    assert lines["base/er-fold1"].split()[1] == "ended" and "job 999999999 (submitit-local, test)" in lines["base/er-fold1"]
    assert lines["small/ks"].split()[1] == "interrupted" and lines["small/sid"].split()[1] == "planned"
    assert cli.main(["superb-status", str(out), "--json"]) == 0
    states = {s["run"]: s["state"] for s in json.loads(capsys.readouterr().out)}
    assert states["base/sid"] == "unknown" and len(states) == 6
    assert cli.main(["superb-status", str(tmp_path / "nothing")]) == 2
    assert "has no runs/ folder" in capsys.readouterr().err


def test_a_slurm_job_whose_state_is_unknown_is_adopted_not_submitted_again(tmp_path):
    """Without an answer from sacct (here: no SLURM at all) the job may still run: never submit twice on a guess."""
    assert known_job("slurm", tmp_path, "4242") is not None


def test_a_local_job_is_alive_while_its_controller_runs():
    from s3prl_redundancy.superb.cluster import _controller_alive

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # alive, not submitit's
    ended = subprocess.Popen([sys.executable, "-c", "pass"])  # a zombie until reaped
    try:
        _wait_for(lambda: Path(f"/proc/{ended.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 30)
        assert not _controller_alive(str(ended.pid)) and not _controller_alive(str(other.pid))
        assert not _controller_alive("999999999") and not _controller_alive("not-a-pid")
    finally:
        other.kill()
        other.wait()
        ended.wait()


def test_runs_reaching_the_slurm_launcher_together_are_one_job_array(fake_run, tmp_path):
    """Through submitit's real SlurmExecutor with sbatch/sacct mocked by submitit's own test helper: one sbatch
    call with ``--array=0-2%2`` and the options, job ids ``<array>_<i>``, and a later launcher adopts them."""
    mocked_slurm = pytest.importorskip("submitit.slurm.test_slurm").mocked_slurm
    run_dir, request = fake_run
    folder = tmp_path / "exp" / "runs" / ".submitit"
    options = ClusterOptions(partition="gpu", gpus_per_run=1, cpus_per_run=4, array_parallelism=2, time_min=60)
    with mocked_slurm() as mock:
        launcher = SubmititLauncher("slurm", folder, options, wait=False)
        launcher.batch_window_s = 0.5
        handles = _launch_concurrently(launcher, request, 3)
        ids = sorted(h.job_id for h in handles)
        array_id = ids[0].split("_")[0]
        assert ids == [f"{array_id}_{i}" for i in range(3)] and mock.job_count == 13  # one sbatch call
        from submitit.core.core import Job

        script = Job(folder / "%j", job_id=array_id).paths.submission_file.read_text().splitlines()
        for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                     "#SBATCH --cpus-per-task=4", "#SBATCH --time=60", "#SBATCH --job-name=superb"):
            assert line in script, (line, script)
        with pytest.raises(JobDetached):
            handles[0].wait()
        later = SubmititLauncher("slurm", folder, options)  # the next superb: queued / running jobs are adopted
        adopted = later.adopt(ids[1], request(2))
        assert adopted is not None and adopted.job_id == ids[1]
        assert adopted.details["job_log"].endswith(f"{ids[1]}_0_log.err")
        alone = SubmititLauncher("slurm", folder, ClusterOptions(mem_gb=48, sbatch={"constraint": "a100"}), wait=False)
        alone.batch_window_s = 0.0
        single = alone.launch(request(2)).job_id
        assert "_" not in single and mock.job_count == 14
        script = Job(folder / "%j", job_id=single).paths.submission_file.read_text().splitlines()
        for line in ("#SBATCH --job-name=superb-base-ks-train", "#SBATCH --mem=48GB", "#SBATCH --constraint=a100"):
            assert line in script, (line, script)
        assert not any("--array" in line for line in script)


@pytest.mark.parametrize("state, shown, adopted", [("PENDING", "queued", True), ("RUNNING", "running", True),
                                                   ("REQUEUED", "queued", True), ("COMPLETED", "ended", False),
                                                   ("CANCELLED", "ended", False), ("TIMEOUT", "ended", False)])
def test_slurm_states_decide_status_and_adoption(state, shown, adopted, tmp_path):
    """sacct mocked by submitit's test helper: a queued or running job is adopted; one that ended without a
    result is submitted again (its training resumes from the checkpoint)."""
    from s3prl_redundancy.superb.cluster import job_state, refresh_slurm_states

    mocked_slurm = pytest.importorskip("submitit.slurm.test_slurm").mocked_slurm
    with mocked_slurm() as mock:
        mock.set_job_state("77", state)
        refresh_slurm_states(["77"])
        assert job_state("slurm", tmp_path, "77", mode="cache") == shown
        assert (known_job("slurm", tmp_path, "77") is not None) == adopted
