"""s3prl's real run_downstream trains and evaluates on pruned upstreams (s3prl's `example` task)."""

import shutil

import pytest

from conftest import RECIPES, run_python
from s3prl_redundancy.tfevents import read_dir_scalars


def _train_then_evaluate(launcher, entry, ckpt, workdir, evaluate=True):
    """Train s3prl's example task for 4 steps; then (``evaluate``) test the dev-best checkpoint with ``-m evaluate``.

    The evaluate process resolves the upstream the same way the train process does, so it runs once (first
    launcher) and the other launchers only train: one s3prl process each instead of two."""
    (workdir / "keep.yaml").write_text("keep_layers: [0, 2]\n")
    train = launcher + ["-m", "train", "-u", entry, "-k", str(ckpt), "-g", "keep.yaml", "-d", "example",
                        "-c", str(RECIPES / "example_smoke.yaml"), "-p", "exp", "--device", "cpu"]
    out = run_python(train, cwd=workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Take a list of 3 features" in out.stdout + out.stderr  # 2 kept layers + transformer input
    scalars = read_dir_scalars(workdir / "exp")
    assert [step for step, _ in scalars["example/dev-acc"]] == [4]
    assert (workdir / "exp" / "dev-best.ckpt").is_file()
    if not evaluate:
        return
    ev = run_python(launcher + ["-m", "evaluate", "-e", "exp/dev-best.ckpt", "--device", "cpu"], cwd=workdir)
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
