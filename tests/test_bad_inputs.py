"""Every bad input a clear error, nothing lost: a table of hostile or careless command lines.

For each row the command exits with status 2 and prints one line on stderr that starts with
``s3prl-redundancy CMD: error:`` and names the problem (the expected words of the row), with no traceback;
the ``--out`` folder and every input file are unchanged (content hashes of the whole tree before and
after). The CLI runs in this process (``cli.main``); the inputs are built once per session.

Below the table: what bad input must not do beyond exiting 2 (a clip too short for the model is skipped and
named, a leaderboard run whose metric is not a number shows as failed), Ctrl-C (a real SIGINT: one line,
exit 130, the command that resumes, and that command finishes the run) and temporaries of a killed export.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from s3prl_redundancy import cli

UNWRITABLE = "/proc/s3prl-redundancy-bad-inputs/out"  # /proc refuses new folders, even to root


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """``{name: path}`` of every input the table uses, all under one folder (``root``)."""
    import soundfile
    import torch

    from s3prl_redundancy.io import OutputDir
    from s3prl_redundancy.testing.audio import write_tone_corpus
    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    root = tmp_path_factory.mktemp("bad_inputs")
    p = {"root": root}
    p["ckpt"] = save_tiny_checkpoint("hubert", root / "hubert.pt", num_layers=2)
    p["wavlm"] = save_tiny_checkpoint("wavlm", root / "wavlm.pt", num_layers=2)
    p["wavs"] = root / "wavs"
    tones = write_tone_corpus(p["wavs"], 3, seconds=(0.3, 0.5))
    p["short"] = root / "short"  # only a 10 ms clip: shorter than the 400-sample receptive field
    p["short"].mkdir()
    soundfile.write(str(p["short"] / "click.wav"), np.zeros(160, np.float32), 16000)
    p["mixed"] = root / "mixed"  # two usable clips and one too short
    write_tone_corpus(p["mixed"], 2, seconds=(0.3, 0.5))
    soundfile.write(str(p["mixed"] / "click.wav"), np.zeros(160, np.float32), 16000)
    p["trunc"] = root / "trunc"  # a wav whose header promises twice the samples it holds
    p["trunc"].mkdir()
    data = tones[0].read_bytes()
    (p["trunc"] / "cut.wav").write_bytes(data[: len(data) // 2])
    p["empty_dir"] = root / "empty_dir"
    p["empty_dir"].mkdir()
    p["missing"] = root / "does_not_exist"
    p["list_missing"] = root / "list_missing.txt"
    p["list_missing"].write_text("wavs/tone_0000.wav\nwavs/nope.wav\n")
    p["list_empty"] = root / "list_empty.txt"
    p["list_empty"].write_text("# nothing\n")
    p["not_audio"] = root / "not_audio"
    p["not_audio"].mkdir()
    (p["not_audio"] / "notes.wav").write_text("these are my notes, not audio\n")
    p["text_pt"] = root / "text.pt"
    p["text_pt"].write_text("hello, I am not a checkpoint\n")
    p["empty_pt"] = root / "empty.pt"
    p["empty_pt"].write_bytes(b"")
    p["zip_pt"] = root / "zip.pt"
    with zipfile.ZipFile(p["zip_pt"], "w") as archive:
        archive.writestr("readme.txt", "a zip of something else")
    p["random_pt"] = root / "random.pt"
    p["random_pt"].write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    p["plain_pt"] = root / "plain.pt"  # a real torch file that is not a model
    torch.save({"weights": torch.zeros(3)}, p["plain_pt"])
    p["labels_bad"] = root / "labels.csv"
    p["labels_bad"].write_text("path,label\ntone_0000.wav\n")
    p["foreign"] = root / "foreign"  # a folder with a user's file in it
    p["foreign"].mkdir()
    (p["foreign"] / "thesis.tex").write_text("\\documentclass{article}\n")
    p["sim_out"] = root / "sim_out"  # another command's output folder
    OutputDir(p["sim_out"], "similarity").prepare()
    p["pretrain_bad"] = root / "pretrain_bad"  # a pretrain-tiny folder whose train_state.pt is damaged
    out = OutputDir(p["pretrain_bad"], "pretrain-tiny")
    out.prepare()
    out.write_bytes("train_state.pt", b"not a state")
    p["distill_bad"] = root / "distill_bad"
    out = OutputDir(p["distill_bad"], "distill")
    out.prepare()
    out.write_bytes("checkpoint.pt", b"PK\x03\x04 cut short")
    p["under_file"] = p["ckpt"] / "out"  # a folder inside a file
    return p


def _tree(root: Path):
    """``{relative path: content hash or 'dir'}`` of everything under ``root``."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        state[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


SIM = "similarity --upstream hubert_local --ckpt {ckpt} --data {wavs} --out {out} --quiet --metrics cosine"
PRUNE = "prune --upstream hubert_local --ckpt {ckpt} --out {out}"
PRUNE_DATA = PRUNE + " --strategy block-influence --drop 1 --data {wavs}"
DISTILL = "distill --teacher hubert_local --ckpt {ckpt} --data {wavs} --out {out} --steps 2 --no-progress --no-report"
EXPORT = "export --ckpt {ckpt} --out {out}"
SUPERB = "superb --upstreams base=hubert_local --upstream-args base:k={ckpt} --tasks ks --data-root {empty_dir} --out {out}"
PRETRAIN = "pretrain-tiny --out {out} --steps 1"
SWEEP = "sweep --upstream hubert_local --ckpt {ckpt} --strategies backward --data {wavs} --max-drop 1 --out {out}"


def _replace(cmd: str, old: str, new: str) -> str:
    assert old in cmd, (old, cmd)
    return cmd.replace(old, new)


# (id, command line, words the error line must contain: the argument and the problem)
CASES = [
    # --- audio: too short for the receptive field, truncated, missing, not audio
    ("similarity-max-seconds-below-one-frame", SIM + " --max-seconds 0.001", ["--max-seconds", "400 samples", "at least 0.025"]),
    ("similarity-every-clip-too-short", _replace(SIM, "{wavs}", "{short}"), ["--data", "shorter than", "click.wav"]),
    ("similarity-truncated-wav", _replace(SIM, "{wavs}", "{trunc}"), ["--data", "truncated", "cut.wav"]),
    ("similarity-data-missing", _replace(SIM, "{wavs}", "{missing}"), ["--data", "does not exist"]),
    ("similarity-data-empty-folder", _replace(SIM, "{wavs}", "{empty_dir}"), ["--data", "no audio files"]),
    ("similarity-list-names-missing-file", _replace(SIM, "{wavs}", "{list_missing}"), ["--data", "missing file", "nope.wav"]),
    ("similarity-empty-list", _replace(SIM, "{wavs}", "{list_empty}"), ["--data", "empty file list"]),
    ("similarity-file-is-not-audio", _replace(SIM, "{wavs}", "{not_audio}"), ["cannot read audio file", "notes.wav"]),
    ("prune-max-seconds-below-one-frame", PRUNE_DATA + " --max-seconds 0.01", ["--max-seconds", "400 samples"]),
    ("prune-every-clip-too-short", _replace(PRUNE_DATA, "{wavs}", "{short}"), ["--data", "shorter than", "click.wav"]),
    ("prune-truncated-wav", _replace(PRUNE_DATA, "{wavs}", "{trunc}"), ["--data", "truncated"]),
    ("distill-max-seconds-below-one-frame", DISTILL + " --max-seconds 0.001", ["--max-seconds", "400 samples"]),
    ("distill-every-clip-too-short", _replace(DISTILL, "{wavs}", "{short}"), ["--data", "shorter than"]),
    ("distill-truncated-wav", _replace(DISTILL, "{wavs}", "{trunc}"), ["--data", "truncated"]),
    ("distill-data-missing", _replace(DISTILL, "{wavs}", "{missing}"), ["--data", "does not exist"]),
    ("sweep-every-clip-too-short", _replace(SWEEP, "{wavs}", "{short}"), ["--data", "shorter than"]),
    # --- checkpoints
    ("similarity-ckpt-is-text", _replace(SIM, "{ckpt}", "{text_pt}"), ["text", "not a PyTorch checkpoint"]),
    ("similarity-ckpt-missing", _replace(SIM, "{ckpt}", "{missing}"), ["does_not_exist"]),
    ("prune-ckpt-is-text", _replace(PRUNE, "{ckpt}", "{text_pt}") + " --keep-layers 0", ["--ckpt", "not a PyTorch checkpoint"]),
    ("prune-ckpt-empty", _replace(PRUNE, "{ckpt}", "{empty_pt}") + " --keep-layers 0", ["--ckpt", "empty"]),
    ("prune-ckpt-zip-of-other-files", _replace(PRUNE, "{ckpt}", "{zip_pt}") + " --keep-layers 0", ["--ckpt", "zip archive"]),
    ("prune-ckpt-random-bytes", _replace(PRUNE, "{ckpt}", "{random_pt}") + " --keep-layers 0", ["--ckpt", "binary data"]),
    ("prune-ckpt-not-a-model", _replace(PRUNE, "{ckpt}", "{plain_pt}") + " --keep-layers 0", ["--ckpt", "not in an s3prl local format"]),
    ("prune-ckpt-other-family", _replace(PRUNE, "{ckpt}", "{wavlm}") + " --keep-layers 0", ["--ckpt", "wavlm checkpoint, not hubert"]),
    ("distill-ckpt-is-text", _replace(DISTILL, "{ckpt}", "{text_pt}"), ["--ckpt", "not a PyTorch checkpoint"]),
    ("distill-local-teacher-without-ckpt", _replace(DISTILL, " --ckpt {ckpt}", ""), ["--ckpt"]),
    ("export-ckpt-is-text", _replace(EXPORT, "{ckpt}", "{text_pt}"), ["--ckpt", "not a PyTorch checkpoint"]),
    ("export-ckpt-missing", _replace(EXPORT, "{ckpt}", "{missing}"), ["--ckpt", "does not exist"]),
    ("export-ckpt-not-a-model", _replace(EXPORT, "{ckpt}", "{plain_pt}"), ["--ckpt", "not in an s3prl local format"]),
    # --- output folders: unwritable, inside a file, someone else's
    ("similarity-out-unwritable", _replace(SIM, "{out}", UNWRITABLE), ["--out", "s3prl-redundancy-bad-inputs"]),
    ("prune-out-unwritable", _replace(PRUNE, "{out}", UNWRITABLE) + " --keep-layers 0", ["--out"]),
    ("distill-out-unwritable", _replace(DISTILL, "{out}", UNWRITABLE), ["--out"]),
    ("export-out-unwritable", _replace(EXPORT, "{out}", UNWRITABLE), ["--out"]),
    ("superb-out-unwritable", _replace(SUPERB, "{out}", UNWRITABLE), ["--out"]),
    ("corpus-out-unwritable", f"corpus --out {UNWRITABLE}", ["--out"]),
    ("sweep-out-unwritable", _replace(SWEEP, "{out}", UNWRITABLE), ["--out"]),
    ("pretrain-out-unwritable", _replace(PRETRAIN, "{out}", UNWRITABLE), ["--out"]),
    ("similarity-out-inside-a-file", _replace(SIM, "{out}", "{under_file}"), ["--out"]),
    ("prune-out-inside-a-file", _replace(PRUNE, "{out}", "{under_file}") + " --keep-layers 0", ["--out"]),
    ("export-out-inside-a-file", _replace(EXPORT, "{out}", "{under_file}"), ["--out"]),
    ("corpus-out-inside-a-file", "corpus --out {under_file}", ["--out"]),
    ("prune-out-holds-user-files", _replace(PRUNE, "{out}", "{foreign}") + " --keep-layers 0", ["--out", "thesis.tex"]),
    ("similarity-out-holds-user-files", _replace(SIM, "{out}", "{foreign}"), ["--out", "thesis.tex"]),
    ("prune-out-of-another-command", _replace(PRUNE, "{out}", "{sim_out}") + " --keep-layers 0", ["--out", "similarity"]),
    # --- resume
    ("similarity-checkpoint-every-zero", SIM + " --checkpoint-every 0", ["--checkpoint-every", "must be >= 1"]),
    ("distill-resume-without-a-run", DISTILL + " --resume", ["--resume"]),
    ("distill-resume-damaged-checkpoint", _replace(DISTILL, "{out}", "{distill_bad}") + " --resume", ["--resume", "checkpoint.pt"]),
    ("pretrain-resume-damaged-state", _replace(PRETRAIN, "{out}", "{pretrain_bad}").replace(" --steps 1", "") + " --resume",
     ["--resume", "train_state.pt"]),
    ("pretrain-resume-without-a-run", _replace(PRETRAIN, " --steps 1", "") + " --resume", ["--resume"]),
    # --- option values
    ("similarity-unknown-metric", _replace(SIM, "--metrics cosine", "--metrics cosine,nope"), ["nope"]),
    ("similarity-unknown-upstream", _replace(SIM, "hubert_local", "hubert_lcoal"), ["hubert_lcoal"]),
    ("similarity-batch-size-zero", SIM + " --batch-size 0", ["--batch-size", "must be >= 1"]),
    ("similarity-max-seconds-negative", SIM + " --max-seconds -1", ["--max-seconds"]),
    ("similarity-num-workers-negative", SIM + " --num-workers -1", ["--num-workers", ">= 0"]),
    ("prune-unknown-strategy", PRUNE + " --strategy nope --drop 1", ["nope"]),
    ("prune-strategy-needs-data", PRUNE + " --strategy block-influence --drop 1", ["--data"]),
    ("prune-drop-every-layer", PRUNE + " --strategy backward --drop 2", ["--drop"]),
    ("prune-keep-layer-out-of-range", PRUNE + " --keep-layers 0,7", ["--keep-layers", "7"]),
    ("prune-labels-without-data", PRUNE + " --keep-layers 0 --labels {labels_bad}", ["--labels", "--data"]),
    ("prune-bridge-without-data", PRUNE + " --keep-layers 0 --bridge linear", ["--bridge", "--data"]),
    ("prune-ratio-above-one", PRUNE + " --strategy backward --ratio 1.5", ["--ratio"]),
    ("distill-unknown-teacher", _replace(DISTILL, "hubert_local", "bert"), ["--teacher", "bert"]),
    ("distill-target-layer-out-of-range", DISTILL + " --targets 9", ["--targets", "9"]),
    ("distill-negative-learning-rate", DISTILL + " --lr -1", ["--lr"]),
    ("distill-zero-width", DISTILL + " --hidden 0", ["--hidden", "positive width"]),
    ("distill-heads-do-not-divide-width", DISTILL + " --arch transformer --heads 3", ["--hidden", "not divisible by 3"]),
    ("distill-teacher-cache-too-large", DISTILL + " --cache-teacher --cache-max-gb 1e-9", ["--cache-teacher", "--cache-max-gb"]),
    ("distill-heldout-more-than-data", DISTILL + " --heldout 500", ["--heldout", "hold out 0..2"]),
    ("superb-local-entry-without-checkpoint", _replace(SUPERB, " --upstream-args base:k={ckpt}", ""),
     ["--upstream-args", "hubert_local", "base:k=PATH"]),
    ("superb-checkpoint-missing", _replace(SUPERB, "base:k={ckpt}", "base:k={missing}"), ["--upstream-args", "does_not_exist", "give the path"]),
    ("superb-unknown-task", _replace(SUPERB, "--tasks ks", "--tasks ks,xx"), ["--tasks", "xx"]),
    ("superb-unknown-entry", _replace(SUPERB, "base=hubert_local", "base=hubert_lcoal"), ["--upstreams", "hubert_lcoal"]),
    ("superb-data-root-missing", _replace(SUPERB, "{empty_dir}", "{missing}"), ["does_not_exist"]),
    ("leaderboard-exproot-missing", "leaderboard {missing} --no-cost", ["does not exist"]),
    ("leaderboard-exproot-without-runs", "leaderboard {empty_dir} --no-cost", ["nothing has run there"]),
    ("leaderboard-cost-repeats-zero", "leaderboard {empty_dir} --cost-repeats 0", ["--cost-repeats"]),
    ("pretrain-zero-steps", _replace(PRETRAIN, "--steps 1", "--steps 0"), ["--steps", "positive"]),
    ("pretrain-one-cluster", PRETRAIN + " --clusters 1", ["--clusters", "at least 2"]),
    ("pretrain-targets-from-text", PRETRAIN + " --targets-from {text_pt}", ["--targets-from", "not a PyTorch checkpoint"]),
    ("pretrain-targets-from-other-family", PRETRAIN + " --targets-from {wavlm}", ["--targets-from", "wavlm checkpoint"]),
    ("pretrain-target-layer-out-of-range", PRETRAIN + " --targets-from {ckpt} --target-layer 9", ["--target-layer", "0..2"]),
    ("sweep-no-strategies", _replace(SWEEP, "--strategies backward", "--strategies ,"), ["--strategies", "empty"]),
    ("export-negative-tolerance", EXPORT + " --atol -1", ["--atol", ">= 0"]),
    ("export-missing-out", "export --ckpt {ckpt}", ["--out", "required"]),
]


def _argv(cmd: str, inputs, case_id: str):
    paths = {k: str(v) for k, v in inputs.items()}
    paths["out"] = str(inputs["root"] / "outs" / case_id)
    return [part.format(**paths) for part in shlex.split(cmd)]


@pytest.mark.parametrize("case_id, cmd, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(case_id, cmd, words, inputs, capsys, one_torch_thread):
    argv = _argv(cmd, inputs, case_id)
    before = _tree(inputs["root"])
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"s3prl-redundancy {argv[0]}: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _tree(inputs["root"]) == before  # no output folder made, no input touched
    assert not Path(UNWRITABLE).parent.exists()


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------------------------
# what must happen beyond the refusals
# ---------------------------------------------------------------------------------------------------------
def test_receptive_field_comes_from_the_conv_config():
    from s3prl_redundancy.families import FAMILIES, module_min_samples, receptive_field
    from s3prl_redundancy.testing.models import BASE_OVERRIDES, build_checkpoint

    assert receptive_field(eval(BASE_OVERRIDES["conv_feature_layers"])) == 400  # noqa: S307
    assert receptive_field([(8, 4, 2), (8, 3, 3)]) == 4 + 2 * 2
    for family in FAMILIES:
        ckpt = build_checkpoint(family, num_layers=1, conv_feature_layers="[(8, 6, 3)] + [(8, 2, 2)]")
        assert FAMILIES[family].min_samples(ckpt) == 6 + 1 * 3
        assert module_min_samples(FAMILIES[family].build_model(ckpt)) == 9


def test_a_clip_too_short_is_skipped_and_named(inputs, capsys, one_torch_thread, tmp_path):
    code = cli.main(_argv(_replace(SIM, "{wavs}", "{mixed}").replace("{out}", str(tmp_path / "sim")), inputs, "x"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "skipping 1 of 3 audio clip(s) shorter than the model's receptive field, 400 samples" in captured.err
    assert "click.wav (160 samples)" in captured.err
    assert '"num_utterances": 2' in captured.out


def test_a_leaderboard_run_whose_metric_is_not_a_number_shows_as_failed(tmp_path, capsys):
    from s3prl_redundancy.superb.runs import RUN_FORMAT, write_run_json

    for label, value in (("good", 0.5), ("odd", "n/a")):
        run = tmp_path / "runs" / label / "ks"
        run.mkdir(parents=True)
        write_run_json(run, {"format": RUN_FORMAT, "upstream": label, "task": "ks", "status": "finished",
                             "metric": {"value": value, "unit": "fraction"}, "log": "log.txt"})
    assert cli.main(["leaderboard", str(tmp_path), "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert "'n/a'" in out and "is not a number" in out and str(tmp_path / "runs" / "odd" / "ks") in out
    assert "50.0" in out or "50.00" in out


def _interrupted_after_first_checkpoint(argv, checkpoint: Path, cwd):
    """Run ``s3prl-redundancy ARGV`` in a fresh process, SIGINT it once ``checkpoint`` exists."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    # a shell's background job (`make test-slow &`) starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the default disposition, as a terminal's foreground job has
    proc = subprocess.Popen([sys.executable, "-m", "s3prl_redundancy.cli", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for _ in range(1200):  # a bounded wait (up to about 2 minutes) for the first checkpoint
        if checkpoint.is_file() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.slow
def test_ctrl_c_in_distill_says_what_was_saved_and_how_to_resume(inputs, tmp_path, capsys, one_torch_thread):
    out = tmp_path / "run"
    argv = shlex.split(DISTILL.format(ckpt=inputs["ckpt"], wavs=inputs["wavs"], out=out))
    argv[argv.index("--steps") + 1] = "80"  # long enough that the interrupt lands mid-run
    argv += ["--save-every", "2", "--heldout", "1"]
    code, err = _interrupted_after_first_checkpoint(argv, out / "checkpoint.pt", tmp_path)
    lines = [line for line in err.splitlines() if line.strip() and "Warning" not in line and "WeightNorm" not in line]
    assert code == 130 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("s3prl-redundancy distill: interrupted; "), err
    assert str(out / "checkpoint.pt") in lines[0]
    resume = lines[0].split("continue with: ", 1)[1]
    assert resume.endswith(" --resume") and not (out / "student.pt").exists()
    # the printed command continues the run to its end
    resumed = shlex.split(resume)
    assert resumed[:2] == ["s3prl-redundancy", "distill"]
    assert cli.main(resumed[1:]) == 0, capsys.readouterr().err
    assert (out / "student.pt").is_file()


@pytest.mark.slow
def test_ctrl_c_in_pretrain_tiny_names_the_state_and_the_resume_command(tmp_path, capsys, one_torch_thread):
    import torch

    out = tmp_path / "tiny"
    argv = ["pretrain-tiny", "--out", str(out), "--steps", "400", "--sentences", "14", "--phrases", "2", "--clusters", "8",
            "--batch-size", "4", "--checkpoint-every", "2"]
    code, err = _interrupted_after_first_checkpoint(argv, out / "train_state.pt", tmp_path)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 130 and "Traceback" not in err, err
    assert lines[-1].startswith(f"s3prl-redundancy pretrain-tiny: interrupted; the last state is {out / 'train_state.pt'}")
    resume = shlex.split(lines[-1].split("continue with: ", 1)[1])
    assert resume == ["s3prl-redundancy", *argv, "--resume"]
    step = int(torch.load(out / "train_state.pt", weights_only=True)["step"])
    assert cli.main([*resume[1:], "--stop-after", str(step + 1)]) == 0, capsys.readouterr().err  # it continues
    assert int(torch.load(out / "train_state.pt", weights_only=True)["step"]) == step + 1


def test_ctrl_c_without_a_hint_is_still_one_line(monkeypatch, capsys):
    from s3prl_redundancy.commands import export

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "run", interrupted)
    assert cli.main(["export", "--ckpt", "x.pt", "--out", "y"]) == 130
    assert capsys.readouterr().err == "s3prl-redundancy export: interrupted\n"


def test_resume_hints_name_the_command_that_continues(tmp_path):
    import argparse

    from s3prl_redundancy.commands import pretrain_tiny, similarity, superb

    args = argparse.Namespace(out=str(tmp_path), checkpoint_every=None, resume=False, force=False)
    assert "--checkpoint-every" in similarity.resume_hint(args, ["--out", str(tmp_path)])
    (tmp_path / ".partial").mkdir()
    (tmp_path / ".partial" / "rank0.pt").write_bytes(b"")
    args.checkpoint_every = 5
    hint = similarity.resume_hint(args, ["--out", str(tmp_path), "--force", "--checkpoint-every", "5"])
    assert hint.endswith(f"s3prl-redundancy similarity --out {tmp_path} --checkpoint-every 5 --resume")
    hint = superb.resume_hint(argparse.Namespace(out="exp"), ["--upstreams", "a b", "--out", "exp", "--force"])
    assert hint.endswith("s3prl-redundancy superb --upstreams 'a b' --out exp")
    (tmp_path / "train_state.pt").write_bytes(b"")
    hint = pretrain_tiny.resume_hint(argparse.Namespace(out=str(tmp_path), checkpoint_every=100, resume=False,
                                                        force=True), ["--out", str(tmp_path), "--steps", "9", "--force"])
    assert hint.endswith(f"s3prl-redundancy pretrain-tiny --out {tmp_path} --steps 9 --resume")


def test_a_killed_exports_temporaries_do_not_survive_the_next_export(inputs, tmp_path, capsys):
    out = tmp_path / "export"
    assert cli.main(["export", "--ckpt", str(inputs["ckpt"]), "--out", str(out)]) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs: what a killed export leaves in its temporaries' names
    (out / f".files.tmp{dead.pid}-dir").mkdir()
    (out / f".files.tmp{dead.pid}-dir" / "model.safetensors").write_bytes(b"half")
    (out / f".config.json.tmp{dead.pid}").write_text("{")
    assert cli.main(["export", "--ckpt", str(inputs["ckpt"]), "--out", str(out), "--force"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".s3prl-redundancy.json"]


def test_truncated_wavs_are_noticed_in_every_subtype(tmp_path):
    import soundfile

    from s3prl_redundancy.audio import clip_samples, load_audio, wav_header_frames
    from s3prl_redundancy.errors import UserInputError

    wav = np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32)
    for subtype in ("PCM_16", "PCM_24", "FLOAT"):
        whole = tmp_path / f"{subtype}.wav"
        soundfile.write(str(whole), wav, 16000, subtype=subtype)
        assert wav_header_frames(whole) == 8000 and clip_samples(whole) == 8000
        cut = tmp_path / f"{subtype}_cut.wav"
        cut.write_bytes(whole.read_bytes()[:-1000])
        for read in (load_audio, clip_samples):
            with pytest.raises(UserInputError, match="truncated: its header promises 8000 samples"):
                read(cut)
    flac = tmp_path / "a.flac"
    soundfile.write(str(flac), wav, 16000)
    assert wav_header_frames(flac) is None and clip_samples(flac) == 8000
    streamed = bytearray((tmp_path / "PCM_16.wav").read_bytes())  # a writer that left the sizes unset
    data = streamed.index(b"data")
    streamed[data + 4 : data + 8] = b"\xff\xff\xff\xff"
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    assert wav_header_frames(tmp_path / "streamed.wav") is None


def test_short_waveforms_given_directly_are_refused_by_name(inputs):
    import torch

    from s3prl_redundancy.errors import UserInputError
    from s3prl_redundancy.probes import pooled_features
    from s3prl_redundancy.similarity.collector import HiddenStateCollector
    from s3prl_redundancy.upstream_loading import load_upstream

    upstream = load_upstream("hubert_local", ckpt=inputs["ckpt"])
    collector = HiddenStateCollector(upstream, [lambda batch: None], plugin_manager=False)
    assert collector.min_samples == 400
    with pytest.raises(UserInputError, match=r"utterance\(s\) b \(399 samples\) are shorter than the 400 samples"):
        collector([torch.zeros(400), torch.zeros(399)], utterance_ids=["a", "b"])
    with pytest.raises(UserInputError, match=r"wavs: 1 waveform\(s\) \(e.g. number 1, 160 samples\)"):
        pooled_features(upstream, [np.zeros(1600, np.float32), np.zeros(160, np.float32)])
