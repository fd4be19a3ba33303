"""s3prl's real run_downstream trains and evaluates on pruned upstreams (s3prl's `example` task)."""

import shutil

import pytest

from s3prl_redundancy.testing.processes import RECIPES, run_python
from s3prl_redundancy.tfevents import read_dir_scalars


def _train_then_evaluate(launcher, entry, ckpt, workdir, evaluate=True):
    """Train s3prl's example task for 4 steps through ``launcher``; with ``evaluate``, test the saved checkpoint
    with ``-m evaluate`` too.

    The example task's dev and test splits are 100 batches of 5-20 s random audio each (s3prl's constants), so
    every evaluation forwards ~40 minutes of audio: training runs with validation switched off
    (``-o config.runner.eval_step=...``), and only the first launcher pays for one test pass (``-m evaluate``
    resolves the upstream like ``-m train``; dev-best selection and the test phase of every SUPERB task are
    covered by ``test_superb_e2e``)."""
    (workdir / "keep.yaml").write_text("keep_layers: [0, 2]\n")
    train = launcher + ["-m", "train", "-u", entry, "-k", str(ckpt), "-g", "keep.yaml", "-d", "example",
                        "-c", str(RECIPES / "example_smoke.yaml"), "-p", "exp", "--device", "cpu",
                        "-o", "config.runner.eval_step=1000"]
    out = run_python(train, cwd=workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Take a list of 3 features" in out.stdout + out.stderr  # 2 kept layers + transformer input
    assert (workdir / "exp" / "states-4.ckpt").is_file()
    assert read_dir_scalars(workdir / "exp")["example/train-acc"]  # s3prl logged the training steps
    if not evaluate:
        return
    ev = run_python(launcher + ["-m", "evaluate", "-e", "exp/states-4.ckpt", "--device", "cpu"], cwd=workdir)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "Loading Downstream weights from the previous experiment" in ev.stdout + ev.stderr


@pytest.mark.slow
def test_python_m_s3prl_run_downstream_with_pruned_hubert(tiny_ckpts, tmp_path):
    _train_then_evaluate(["-m", "s3prl.run_downstream"], "pruned_hubert", tiny_ckpts["hubert"], tmp_path)


@pytest.mark.slow
def test_git_clone_style_run_downstream_script(tiny_ckpts, tmp_path):
    """`python run_downstream.py` from a copy of s3prl's script (what a git clone user runs)."""
    import s3prl

    script = tmp_path / "run_downstream.py"
    shutil.copy(s3prl.__path__[0] + "/run_downstream.py", script)
    _train_then_evaluate([str(script)], "pruned_wavlm", tiny_ckpts["wavlm"], tmp_path, evaluate=False)


@pytest.mark.slow
def test_explicit_wrapper_command(tiny_ckpts, tmp_path):
    _train_then_evaluate(["-m", "s3prl_redundancy.cli", "run-downstream"], "pruned_wav2vec2", tiny_ckpts["wav2vec2"], tmp_path,
                         evaluate=False)
