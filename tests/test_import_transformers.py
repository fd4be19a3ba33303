"""Import from transformers: a HubertModel / Wav2Vec2Model / WavLMModel folder becomes the family's s3prl local
checkpoint (``s3prl-redundancy import``), and every command and pruned entry takes the folder directly."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from s3prl_redundancy.checkpoints import checkpoint_buffer, load_family_checkpoint
from s3prl_redundancy.cli import main
from s3prl_redundancy.compression.export_transformers import export
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES, conv_layers
from s3prl_redundancy.testing.models import build_checkpoint
from s3prl_redundancy.transformers_import import import_transformers

FAMILY_NAMES = ("hubert", "wav2vec2", "wavlm")
LARGE_STYLE = dict(layer_norm_first=True, extractor_mode="layer_norm", conv_bias=True)
PRETRAINING_HEADS = {"hubert": {"final_proj.weight", "final_proj.bias", "label_embs_concat"},
                     "wav2vec2": {"final_proj.weight", "final_proj.bias", "project_q.weight", "project_q.bias"},
                     "wavlm": set()}


def _hf_folder(folder, family, variant="Model", stable=False, normalize=False, seed=0, **overrides):
    """A small random transformers model of ``family`` saved with save_pretrained (CNN width 48, model width 32:
    a real feature projection, as in the released models)."""
    stem = FAMILIES[family].hf_model_class[: -len("Model")]
    kwargs = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(48, 48, 48), conv_kernel=(10, 3, 2), conv_stride=(5, 4, 4), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  feat_proj_dropout=0.0, layerdrop=0.0, vocab_size=7)
    if family == "wavlm":
        kwargs.update(num_buckets=32, max_bucket_distance=64)
    if stable:
        kwargs.update(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = getattr(transformers, stem + variant)(getattr(transformers, FAMILIES[family].hf_config_class)(**kwargs))
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                          do_normalize=normalize).save_pretrained(folder)
    return folder


def _waves():
    g = torch.Generator().manual_seed(5)
    return [torch.randn(n, generator=g) for n in (16000, 13000)]


def _s3prl_expert(ckpt, family):
    return FAMILIES[family].expert_class()(checkpoint_buffer(ckpt)).eval()


def _transformers_states(model, folder, wav):
    """``(per-layer inputs + last raw output, last_hidden_state)`` from transformers' own pipeline: its feature
    extractor (normalisation) then the model."""
    features = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
    x = features(wav.numpy(), sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        result = model(x, output_hidden_states=True)
    return result.hidden_states, result.last_hidden_state


@pytest.mark.parametrize("layout", ["base", "large"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_export_then_import_gives_identical_tensors(family, layout, tmp_path):
    fam = FAMILIES[family]
    ckpt = build_checkpoint(family, num_layers=3, seed=1, **(LARGE_STYLE if layout == "large" else {}))
    export(ckpt, tmp_path / "hf")
    back, report = import_transformers(tmp_path / "hf")
    before, after = fam.weights(ckpt), fam.weights(back)
    assert set(report["zero_filled"]) == PRETRAINING_HEADS[family] and report["skipped_head"] == []
    for name, value in before.items():
        if name not in PRETRAINING_HEADS[family]:
            assert torch.equal(value, after[name]), name
    assert all(not after[name].any() for name in report["zero_filled"])
    cfg, cfg_back = fam.checkpoint_config(ckpt), fam.checkpoint_config(back)
    for src, _, kind in fam.hf_config_keys():
        assert kind(getattr(cfg, src)) == kind(getattr(cfg_back, src)), src
    assert conv_layers(cfg_back) == conv_layers(cfg) and fam.normalizes_waveform(back) is False
    assert fam.num_layers(back) == 3


@pytest.mark.parametrize("stable", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_imported_model_gives_transformers_hidden_states(family, stable, tmp_path):
    folder = _hf_folder(tmp_path / "hf", family, stable=stable, normalize=stable)
    ckpt, report = import_transformers(folder)
    assert report["normalize"] is stable and report["normalize_from"] == "preprocessor_config.json do_normalize"
    ours = _s3prl_expert(ckpt, family)
    hf = getattr(transformers, FAMILIES[family].hf_model_class).from_pretrained(folder).eval()
    for wav in _waves():
        with torch.no_grad():
            ref = ours([wav])["hidden_states"]
        states, last = _transformers_states(hf, folder, wav)
        assert len(states) == len(ref) == 4
        for a, b in zip(states[:-1], ref[:-1]):  # each layer's input: the same in both conventions
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(last, ref[-1], rtol=1e-4, atol=1e-4)  # pre-LN: after the final layer norm


@pytest.mark.parametrize("family, variant", [("hubert", "ForCTC"), ("wav2vec2", "ForSequenceClassification"),
                                             ("wavlm", "Model")])
def test_pruned_entry_on_a_folder_equals_transformers_with_layers_deleted(family, variant, tmp_path):
    import s3prl.hub as hub

    folder = _hf_folder(tmp_path / "hf", family, variant=variant, num_hidden_layers=4)
    (tmp_path / "keep.yaml").write_text("keep_layers: [0, 2]\n")
    pruned = getattr(hub, f"pruned_{family}")(ckpt=str(folder), model_config=str(tmp_path / "keep.yaml")).eval()
    hf = getattr(transformers, FAMILIES[family].hf_model_class).from_pretrained(folder).eval()
    del hf.encoder.layers[3]
    del hf.encoder.layers[1]
    for wav in _waves():
        with torch.no_grad():
            ours = pruned([wav])["hidden_states"]
        states, last = _transformers_states(hf, folder, wav)
        assert len(ours) == len(states) == 3
        for a, b in zip(states, ours):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert pruned.pruning["keep_layers"] == [0, 2] and pruned.pruning["source"] == str(folder)


def test_head_variant_reports_the_skipped_head_and_a_foreign_weight_is_refused(tmp_path):
    folder = _hf_folder(tmp_path / "ctc", "hubert", variant="ForCTC")
    _, report = import_transformers(folder)
    assert report["architecture"] == "HubertForCTC" and report["skipped_head"] == ["lm_head.bias", "lm_head.weight"]
    base = _hf_folder(tmp_path / "base", "wav2vec2")
    weights = load_file(str(base / "model.safetensors"))
    weights["encoder.layers.0.attention.extra.weight"] = torch.zeros(2)
    save_file(weights, str(base / "model.safetensors"))
    with pytest.raises(UserInputError, match=r"1 transformers weights have no place .*encoder.layers.0.attention.extra"):
        import_transformers(base)


def test_old_weight_norm_names_and_missing_mask_embedding_are_read(tmp_path):
    """Released checkpoints name the position convolution's weight norm weight_g / weight_v, and a model
    configured without masking has no masked_spec_embed (s3prl's mask_emb, training only: zeroed)."""
    folder = _hf_folder(tmp_path / "hf", "hubert")
    reference, _ = import_transformers(folder)
    weights = load_file(str(folder / "model.safetensors"))
    for old, new in (("weight_g", "parametrizations.weight.original0"), ("weight_v", "parametrizations.weight.original1")):
        weights[f"encoder.pos_conv_embed.conv.{old}"] = weights.pop(f"encoder.pos_conv_embed.conv.{new}")
    del weights["masked_spec_embed"]
    save_file(weights, str(folder / "model.safetensors"))
    ckpt, report = import_transformers(folder)
    assert "mask_emb" in report["zero_filled"]
    for name, value in reference["model_weight"].items():
        if name != "mask_emb":
            assert torch.equal(value, ckpt["model_weight"][name]), name


@pytest.mark.parametrize("overrides, message", [
    (dict(add_adapter=True), "add_adapter=True: s3prl's wav2vec2 has no such module"),
    (dict(hidden_act="swish"), "hidden_act='swish': s3prl's wav2vec2 supports"),
    (dict(layer_norm_eps=1e-6), "layer_norm_eps=1e-06: s3prl's wav2vec2 always uses 1e-05"),
    (dict(conv_dim=(32, 32, 32)), "feature_projection.projection is not the identity"),
])
def test_what_s3prl_cannot_represent_is_refused(overrides, message, tmp_path):
    folder = _hf_folder(tmp_path / "hf", "wav2vec2", **overrides)
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_transformers(folder)


def test_hubert_without_feature_projection_norm_is_refused(tmp_path):
    folder = _hf_folder(tmp_path / "hf", "hubert", feat_proj_layer_norm=False)
    with pytest.raises(UserInputError, match="feat_proj_layer_norm=False"):
        import_transformers(folder)


def test_import_command_writes_a_local_checkpoint(tmp_path, capsys):
    import s3prl.hub as hub

    folder = _hf_folder(tmp_path / "hf", "wavlm", stable=True, normalize=True)
    out = tmp_path / "wavlm.pt"
    assert main(["import", "--from-transformers", str(folder), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["family"] == "wavlm" and printed["local_entry"] == "wavlm_local" and printed["max_abs_diff"] < 1e-4
    expert = hub.wavlm_local(ckpt=str(out)).eval()  # s3prl's own entry
    assert expert.model.cfg.normalize is True and len(expert.model.encoder.layers) == 3
    assert main(["import", "--from-transformers", str(folder), "--out", str(out)]) == 2
    assert "--out: " in capsys.readouterr().err
    assert main(["import", "--from-transformers", str(folder), "--out", str(out), "--force"]) == 0


class _WritesMarker:
    """A pickle payload: unpickling it would call ``open(marker, "w")``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _bad_folder(case, tmp_path):
    folder = tmp_path / case
    if case == "no_config":
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
    elif case == "bert":
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    elif case == "pickle_with_code":
        _hf_folder(folder, "hubert")
        (folder / "model.safetensors").unlink()
        torch.save({"encoder.layer_norm.weight": _WritesMarker(tmp_path / "marker")}, folder / "pytorch_model.bin")
    elif case == "pretraining_only_architecture":
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "hubert", "architectures": ["HubertForMaskedLM"]}))
    return folder


@pytest.mark.parametrize("case, message", [
    ("no_config", "has no config.json, so it is not a transformers model folder"),
    ("bert", "describes a model_type 'bert' (BertForMaskedLM) model; only HubertModel, Wav2Vec2Model, WavLMModel"),
    ("pickle_with_code", "holds Python objects that are not plain tensors"),
    ("pretraining_only_architecture", "is a HubertForMaskedLM; of hubert models only HubertModel, HubertForCTC"),
])
def test_bad_folders_exit_2_with_one_line(case, message, tmp_path, capsys):
    folder = _bad_folder(case, tmp_path)
    assert main(["import", "--from-transformers", str(folder), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("s3prl-redundancy import: error: --from-transformers: ") and message in err, err
    assert err.count("\n") == 1
    assert not (tmp_path / "marker").exists() and not (tmp_path / "m.pt").exists()
    # the same reader serves every command: prune refuses the folder in the same words
    out = tmp_path / "pruned"
    assert main(["prune", "--upstream", "hubert_local", "--ckpt", str(folder), "--keep-layers", "0", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "marker").exists()


def test_prune_takes_a_folder_and_the_result_exports_back(tmp_path, capsys):
    folder = _hf_folder(tmp_path / "hf", "hubert", variant="ForCTC", num_hidden_layers=4)
    out = tmp_path / "pruned"
    assert main(["prune", "--upstream", "hubert_local", "--ckpt", str(folder), "--keep-layers", "0,3", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["keep_layers"] == [0, 3] and manifest["source"] == str(folder)
    assert main(["export", "--ckpt", str(out / "pruned.pt"), "--out", str(tmp_path / "back")]) == 0
    hf = transformers.HubertModel.from_pretrained(tmp_path / "back")
    assert hf.config.num_hidden_layers == 2
    original = load_file(str(folder / "model.safetensors"))
    exported = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert torch.equal(exported["encoder.layers.1.feed_forward.output_dense.weight"],
                       original["hubert.encoder.layers.3.feed_forward.output_dense.weight"])
    assert load_family_checkpoint(folder, expected_family="hubert")[0].name == "hubert"
    from s3prl_redundancy.distill.teacher import resolve_teacher  # distill's --teacher hubert_local --ckpt DIR

    teacher = resolve_teacher("hubert_local", str(folder))
    assert teacher.family.name == "hubert" and teacher.family.num_layers(teacher.checkpoint) == 4
    with pytest.raises(UserInputError, match="transformers folder .* is a hubert checkpoint, not wavlm"):
        load_family_checkpoint(folder, expected_family="wavlm")


def _audio(folder):
    import numpy as np
    import soundfile

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, seconds in enumerate((0.5, 0.4, 0.6)):
        soundfile.write(folder / f"u{i}.wav", (0.1 * rng.standard_normal(int(seconds * 16000))).astype("float32"), 16000)
    return folder


@pytest.mark.parametrize("upstream", ["hf_hubert_custom", "hubert_local", "pruned_hubert"])
def test_similarity_on_a_transformers_folder(upstream, tiny_ckpts, tmp_path, capsys):
    """Issue 17 class 9: s3prl's hf_* entries take a folder (or hub id) as -k; the family's local entry and
    ours take the folder through the one checkpoint reader."""
    from s3prl_redundancy.checkpoints import load_checkpoint

    export(load_checkpoint(tiny_ckpts["hubert"]), tmp_path / "hf")
    extra = []
    if upstream == "pruned_hubert":
        (tmp_path / "keep.yaml").write_text("keep_layers: [0, 1, 2]\n")
        extra = ["--model-config", str(tmp_path / "keep.yaml")]
    argv = ["similarity", "--upstream", upstream, "--ckpt", str(tmp_path / "hf"), "--data", str(_audio(tmp_path / "a")),
            "--out", str(tmp_path / "out"), "--metrics", "cka", "--quiet", *extra]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["layers"] == (4 if upstream == "pruned_hubert" else 5) and summary["num_utterances"] == 3


def test_an_entry_that_fails_on_its_ckpt_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a missing path is also tried as a hub id
    argv = ["similarity", "--upstream", "hf_hubert_custom", "--ckpt", str(tmp_path / "no-such-model"),
            "--data", str(_audio(tmp_path / "a")), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("s3prl-redundancy similarity: error: could not build upstream 'hf_hubert_custom' from ")
    assert err.count("\n") == 1
