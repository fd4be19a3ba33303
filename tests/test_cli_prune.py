import json

import pytest
import torch

from s3prl_redundancy.cli import main
from s3prl_redundancy.testing.audio import random_wavs


def test_prune_writes_checkpoint_and_manifest_loadable_by_s3prl(tiny_ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", "--upstream", "wavlm_local", "--ckpt", str(tiny_ckpts["wavlm"]),
                 "--keep-layers", "1,3", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["keep_layers"] == [1, 3] and manifest["removed_layers"] == [0, 2]
    assert manifest["source"] == str(tiny_ckpts["wavlm"]) and manifest["family"] == "wavlm"
    assert manifest["parameters_after"]["total"] < manifest["parameters_before"]["total"]
    import s3prl.hub as hub

    expert = hub.wavlm_local(ckpt=str(out / "pruned.pt")).eval()  # s3prl's unchanged entry
    ours = hub.pruned_wavlm(ckpt=str(out / "pruned.pt")).eval()  # no -g needed for a pruned checkpoint
    with torch.no_grad():
        a, b = expert(random_wavs())["hidden_states"], ours(random_wavs())["hidden_states"]
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--keep-layers", "0,9"], "do not exist"),
        (["--keep-layers", "3,1"], "strictly increasing"),
        (["--keep-layers", ""], "empty"),
        (["--keep-layers", "0,x"], "comma-separated list"),
        (["--keep-layers", "0", "--upstream", "hubert_local", "--ckpt", "WAVLM"], "is a wavlm checkpoint"),
        (["--keep-layers", "0", "--upstream", "bert"], "not a family this project can prune"),
    ],
)
def test_bad_input_writes_nothing(args, message, tiny_ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    base = {"--upstream": "hubert_local", "--ckpt": str(tiny_ckpts["hubert"])}
    for flag in ("--upstream", "--ckpt"):
        if flag in args:
            i = args.index(flag)
            base[flag] = str(tiny_ckpts["wavlm"]) if args[i + 1] == "WAVLM" else args[i + 1]
            args = args[:i] + args[i + 2:]
    argv = ["prune", "--upstream", base["--upstream"], "--ckpt", base["--ckpt"], "--out", str(out), *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_existing_output_needs_force(tiny_ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prune", "--upstream", "hubert_local", "--ckpt", str(tiny_ckpts["hubert"]), "--keep-layers", "0", "--out", str(out)]
    assert main(argv) == 0
    before = (out / "pruned.pt").read_bytes()
    assert main(argv[:-2] + ["--keep-layers", "0,1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert 'already holds the outputs of a previous "prune" run (manifest.json, pruned.pt, scores.png)' in err
    assert "pass --force" in err and "force=True" not in err
    assert (out / "pruned.pt").read_bytes() == before
    assert main(argv + ["--force"]) == 0


def test_force_removes_only_what_prune_wrote(tiny_ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["prune", "--upstream", "hubert_local", "--ckpt", str(tiny_ckpts["hubert"]), "--keep-layers", "0", "--out", str(out)]
    assert main(argv) == 2
    assert "holds files that \"prune\" did not write (notes.txt)" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0
    assert main(argv + ["--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "pruned.pt").is_file()


def test_output_folder_and_checkpoint_kind_are_checked_before_loading(tmp_path, capsys):
    text = tmp_path / "model.txt"
    text.write_text("not a model\n")
    occupied = tmp_path / "file"
    occupied.write_text("x")
    base = ["prune", "--upstream", "hubert_local", "--keep-layers", "0", "--ckpt", str(text)]
    assert main(base + ["--out", str(occupied)]) == 2  # the folder is refused before the checkpoint is read
    err = capsys.readouterr().err
    assert "--out" in err and "ckpt" not in err.split("error:", 1)[1].split(":", 1)[0]
    assert main(base + ["--out", str(tmp_path / "out")]) == 2  # a text file as checkpoint: a message, no traceback
    err = capsys.readouterr().err
    assert "--ckpt" in err and "not a PyTorch checkpoint: it is a text file" in err and "Traceback" not in err


def test_embedded_tiny_hubert_is_a_prune_source_without_ckpt(tmp_path):
    from s3prl_redundancy.upstreams.tiny.expert import DEFAULT_CKPT

    out = tmp_path / "out"
    assert main(["prune", "--upstream", "tiny_hubert", "--strategy", "backward", "--ratio", "0.4", "--out", str(out),
                 "--no-latency"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == str(DEFAULT_CKPT) and manifest["family"] == "hubert"
    assert manifest["keep_layers"] == [0, 1, 2, 3] and manifest["removed_layers"] == [4, 5]  # 40% of 6 layers
