"""Export to transformers: the saved model, loaded back independently, gives s3prl's hidden states."""

import json

import pytest
import torch

from s3prl_redundancy.checkpoints import load_checkpoint
from s3prl_redundancy.cli import main
from s3prl_redundancy.compression import structure as St
from s3prl_redundancy.compression.export_transformers import build_hf_model, compare_with_s3prl, export
from s3prl_redundancy.compression.head_pruning import prune_heads
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.compression.layers import prune_checkpoint
from s3prl_redundancy.testing.audio import random_wavs
from s3prl_redundancy.testing.models import build_checkpoint

CLASSES = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model", "wavlm": "WavLMModel"}
LARGE_STYLE = dict(layer_norm_first=True, extractor_mode="layer_norm", conv_bias=True)


def _check_independently(ckpt, folder, family, normalize=False):
    """transformers 5: ``hidden_states`` = every layer's input + the raw output of the last layer (hooks on
    the layers here); ``last_hidden_state`` = s3prl's last hidden state (after the final LN of pre-LN models)."""
    import transformers

    hf = getattr(transformers, CLASSES[family]).from_pretrained(folder, local_files_only=True).eval()
    s3prl = St.make_upstream(ckpt)
    assert hf.config.num_hidden_layers == ckpt[{"wavlm": "cfg"}.get(family, "model_cfg")]["encoder_layers"]
    inputs, last = [], []
    for layer in s3prl.model.encoder.layers:
        layer.register_forward_hook(lambda m, i, o: inputs.append(i[0].transpose(0, 1)) and None)
    s3prl.model.encoder.layers[-1].register_forward_hook(lambda m, i, o: last.append(o[0].transpose(0, 1)) and None)
    for wav in random_wavs((16000, 20000), seed=3):
        inputs.clear(), last.clear()
        with torch.no_grad():
            ref = s3prl([wav])["hidden_states"]
            x = torch.nn.functional.layer_norm(wav, wav.shape) if normalize else wav
            result = hf(x[None], output_hidden_states=True)
        t = ref[0].shape[1]
        raw = [h[:, :t] for h in inputs + last]
        assert len(result.hidden_states) == len(raw) == len(ref)
        for a, b in zip(result.hidden_states, raw):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(result.last_hidden_state, ref[-1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
def test_layer_pruned_export_equals_s3prl(family, tiny_ckpts, tmp_path):
    ckpt = prune_checkpoint(load_checkpoint(tiny_ckpts[family]), [1, 3])  # WavLM: layer 0 (bias owner) dropped
    report = export(ckpt, tmp_path / "hf")
    assert report["num_hidden_layers"] == 2 and report["check"]["max_abs_diff"] <= 1e-4
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "s3prl_redundancy_export.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # the temporary folder is gone
    _check_independently(ckpt, tmp_path / "hf", family)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
def test_large_style_layout_exports_too(family, tmp_path):
    """Pre-LN stack with a final layer norm, layer-norm conv front end with conv bias, normalised input."""
    ckpt = build_checkpoint(family, num_layers=3, seed=2, **LARGE_STYLE)
    if family == "wavlm":
        ckpt["cfg"] = dict(ckpt["cfg"], normalize=True)  # input normalisation: no weight depends on it
    else:
        ckpt["task_cfg"] = dict(ckpt["task_cfg"], normalize=True)
    ckpt = prune_checkpoint(ckpt, [0, 2])
    export(ckpt, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["do_stable_layer_norm"] is True and config["feat_extract_norm"] == "layer" and config["conv_bias"] is True
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())["do_normalize"] is True
    _check_independently(ckpt, tmp_path / "hf", family, normalize=True)


def test_the_check_detects_a_wrong_weight(tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    model = build_hf_model(ckpt)
    assert compare_with_s3prl(ckpt, model)["max_abs_diff"] <= 1e-5
    with torch.no_grad():
        model.encoder.layers[2].feed_forward.output_dense.weight[0, 0] += 0.5
    assert compare_with_s3prl(ckpt, model)["max_abs_diff"] > 1e-3


def test_what_cannot_be_exported_is_refused_and_nothing_is_written(tiny_ckpts, tmp_path):
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    model = St.convert_attention(St.load_model(ckpt), "hubert")
    prune_heads(model, {1: [0]})
    structured = St.model_to_checkpoint(model, ckpt, {"family": "hubert"}, St.describe_structure(model, "hubert", range(4)))
    with pytest.raises(UserInputError, match="one head count for every layer"):
        export(structured, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    plain_wavlm = build_checkpoint("wavlm", num_layers=2)
    plain_wavlm["cfg"] = dict(plain_wavlm["cfg"], gru_rel_pos=False)
    with pytest.raises(UserInputError, match="always uses gated relative position bias"):
        export(plain_wavlm, tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not empty"):
        export(ckpt, tmp_path / "c")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["keep.txt"]


def test_export_command(tiny_ckpts, tmp_path, capsys):
    path = tmp_path / "pruned.pt"
    torch.save(prune_checkpoint(load_checkpoint(tiny_ckpts["wav2vec2"]), [0, 2]), path)
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "hf")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["class"] == "Wav2Vec2Model" and printed["num_hidden_layers"] == 2
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "hf")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "hf"), "--force"]) == 0


def test_killed_export_leaves_no_temporary_after_the_next_run(tiny_ckpts, tmp_path):
    ckpt = prune_checkpoint(load_checkpoint(tiny_ckpts["hubert"]), [0, 2])
    out = tmp_path / "hf"
    out.mkdir()
    stale = out / ".files.tmp999999999-dir"  # what a kill mid-export leaves (no process has that id)
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="did not write"):
        export(ckpt, out)
    export(ckpt, out, force=True)
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    export(ckpt, out, force=True)  # a second forced export replaces only its own files
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").stat().st_size > 4


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
def test_config_mapping_reads_both_ways(family, tiny_ckpts):
    """The family's transformers config mapping is data: s3prl -> transformers -> s3prl gives the same values."""
    from s3prl_redundancy.compression.export_transformers import hf_config
    from s3prl_redundancy.families import FAMILIES, conv_layers

    fam = FAMILIES[family]
    ckpt = load_checkpoint(tiny_ckpts[family])
    cfg = fam.checkpoint_config(ckpt)
    back = fam.model_config(fam.s3prl_config_from_hf(hf_config(ckpt).to_dict()))
    for src, _, kind in fam.hf_config_keys():
        assert kind(getattr(back, src)) == kind(getattr(cfg, src)), src
    assert conv_layers(back) == conv_layers(cfg)
    names = fam.hf_weight_names(cfg, list(fam.weights(ckpt)))
    assert len({n.hf for n in names}) == len(names) and len({n.s3prl for n in names}) == len(names)
