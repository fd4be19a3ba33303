"""Pruned upstreams equal the source model with the dropped layers deleted (an independent pruning)."""

import copy
import json

import pytest
import torch
import yaml

from s3prl_redundancy.checkpoints import load_checkpoint
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.compression.layers import META_KEY, prune_checkpoint
from s3prl_redundancy.testing.audio import random_wavs
from s3prl_redundancy.upstreams.pruned.hubconf import pruned_hubert, pruned_wav2vec2, pruned_wavlm

ENTRIES = {"hubert": pruned_hubert, "wav2vec2": pruned_wav2vec2, "wavlm": pruned_wavlm}
KEEPS = [[0, 2], [1, 3], [0, 1, 2, 3], [3]]


def _reference_hidden_states(family, ckpt_path, keep, wavs):
    """The source model from s3prl's own expert, with dropped layers deleted from the live ModuleList."""
    expert = FAMILIES[family].expert_class()(str(ckpt_path)).eval()
    layers = expert.model.encoder.layers
    if family == "wavlm" and 0 not in keep:  # the position-bias table moves to the new first layer
        first = layers[keep[0]].self_attn
        first.relative_attention_bias = layers[0].self_attn.relative_attention_bias
        first.has_relative_attention_bias = True
    expert.model.encoder.layers = torch.nn.ModuleList([layers[i] for i in keep])
    with torch.no_grad():
        return expert(wavs)["hidden_states"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("keep", KEEPS, ids=lambda k: "keep" + "".join(map(str, k)))
def test_pruned_entry_equals_independently_pruned_source(family, keep, tiny_ckpts, tmp_path):
    wavs = random_wavs((16000, 11111))
    config = tmp_path / "keep.yaml"
    config.write_text(yaml.safe_dump({"keep_layers": keep}))
    upstream = ENTRIES[family](ckpt=str(tiny_ckpts[family]), model_config=str(config)).eval()
    with torch.no_grad():
        ours = upstream(wavs)["hidden_states"]
    ref = _reference_hidden_states(family, tiny_ckpts[family], keep, wavs)
    assert len(ours) == len(keep) + 1 == len(ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert upstream.get_downsample_rates("hidden_states") == 320
    assert upstream.pruning["keep_layers"] == keep


def test_wavlm_position_bias_survives_dropping_layer_0(tiny_ckpts):
    """The bias table moves to the new first layer; deleting layer 0 naively would lose it and change outputs."""
    ckpt = load_checkpoint(tiny_ckpts["wavlm"])
    pruned = prune_checkpoint(ckpt, [1, 2])
    key = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    assert torch.equal(pruned["model"][key], ckpt["model"][key])
    ours = _run_ckpt(pruned)
    naive = FAMILIES["wavlm"].expert_class()(str(tiny_ckpts["wavlm"])).eval()
    layers = naive.model.encoder.layers
    naive.model.encoder.layers = torch.nn.ModuleList([layers[1], layers[2]])
    with torch.no_grad():
        naive_out = naive(random_wavs((16000,)))["hidden_states"]
    assert not torch.allclose(ours[-1], naive_out[-1], atol=1e-4)


def _run_ckpt(ckpt):
    from s3prl_redundancy.checkpoints import checkpoint_buffer

    family = ckpt[META_KEY]["family"]
    expert = FAMILIES[family].expert_class()(checkpoint_buffer(ckpt)).eval()
    with torch.no_grad():
        return expert(random_wavs((16000,)))["hidden_states"]


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_checkpoint_loads_in_unchanged_s3prl_local_entry(family, tiny_ckpts, tmp_path):
    import s3prl.hub as hub

    ckpt = load_checkpoint(tiny_ckpts[family])
    pruned = prune_checkpoint(ckpt, [0, 3])
    path = tmp_path / "pruned.pt"
    torch.save(pruned, path)
    expert = getattr(hub, FAMILIES[family].local_entry)(ckpt=str(path)).eval()
    with torch.no_grad():
        hs = expert(random_wavs((16000,)))["hidden_states"]
    assert len(hs) == 3
    ref = _reference_hidden_states(family, tiny_ckpts[family], [0, 3], random_wavs((16000,)))
    for a, b in zip(hs, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_pruning_a_pruned_checkpoint_uses_source_indices(tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    once = prune_checkpoint(ckpt, [0, 2, 3])
    twice = prune_checkpoint(once, [0, 3])
    direct = prune_checkpoint(ckpt, [0, 3])
    assert twice[META_KEY]["keep_layers"] == [0, 3] and twice[META_KEY]["source_num_layers"] == 4
    assert twice[META_KEY]["parameters_before"] == direct[META_KEY]["parameters_before"]
    assert twice["model_weight"].keys() == direct["model_weight"].keys()
    for k in direct["model_weight"]:
        assert torch.equal(twice["model_weight"][k], direct["model_weight"][k])
    with pytest.raises(UserInputError, match=r"layers \[1\] are not in .*keeps source layers \[0, 2, 3\]"):
        prune_checkpoint(once, [0, 1])


def test_parameter_counts_in_metadata(tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    meta = prune_checkpoint(ckpt, [0, 1])[META_KEY]
    per_layer = sum(v.numel() for k, v in ckpt["model_weight"].items() if k.startswith("encoder.layers.0."))
    assert meta["parameters_before"]["total"] - meta["parameters_after"]["total"] == 2 * per_layer
    assert meta["parameters_after"]["transformer_layers"] == 2 * per_layer
    assert meta["removed_layers"] == [2, 3]


def test_featurizer_weighted_sum_works(tiny_ckpts, tmp_path):
    from s3prl.upstream.interfaces import Featurizer

    config = tmp_path / "k.yaml"
    config.write_text("keep_layers: [0, 2]\n")
    upstream = pruned_hubert(ckpt=str(tiny_ckpts["hubert"]), model_config=str(config)).eval()
    featurizer = Featurizer(upstream, "hidden_states", upstream_device="cpu")
    wavs = random_wavs((16000, 8000))
    with torch.no_grad():
        feats = featurizer(wavs, upstream(wavs))
    assert len(featurizer.weights) == 3
    frames = upstream(wavs)["hidden_states"][0].shape[1]  # padded batch length (49 for 1 s)
    assert [f.shape[0] for f in feats] == [min(frames, round(len(w) / 320)) for w in wavs] == [49, 25]


@pytest.mark.parametrize(
    "keep_yaml, message",
    [
        ("keep_layers: [0, 7]", r"layers \[7\] do not exist: .* has 4 transformer layers \(valid indices 0..3\)"),
        ("keep_layers: [2, 1]", "strictly increasing"),
        ("keep_layers: [1, 1]", "strictly increasing with no duplicates"),
        ("keep_layers: []", "empty"),
        ("layers: [0, 1]", "has no `keep_layers` key"),
        ("keep_layers: [a, b]", "list of integers"),
    ],
)
def test_bad_keep_layers(keep_yaml, message, tiny_ckpts, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(keep_yaml + "\n")
    with pytest.raises(UserInputError, match=message):
        pruned_hubert(ckpt=str(tiny_ckpts["hubert"]), model_config=str(config))


def test_wrong_family_and_bad_files(tiny_ckpts, tmp_path):
    config = tmp_path / "k.yaml"
    config.write_text("keep_layers: [0]\n")
    with pytest.raises(UserInputError, match="is a wav2vec2 checkpoint, not hubert; use .*pruned_wav2vec2"):
        pruned_hubert(ckpt=str(tiny_ckpts["wav2vec2"]), model_config=str(config))
    with pytest.raises(UserInputError, match="does not exist"):
        pruned_hubert(ckpt=str(tmp_path / "missing.pt"), model_config=str(config))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserInputError, match="zip archive that is cut short or damaged"):
        pruned_hubert(ckpt=str(corrupt), model_config=str(config))
    with pytest.raises(UserInputError, match=r"model config .*missing.yaml \(-g\) does not exist"):
        pruned_hubert(ckpt=str(tiny_ckpts["hubert"]), model_config=str(tmp_path / "missing.yaml"))
    with pytest.raises(UserInputError, match="no layers were chosen"):
        pruned_hubert(ckpt=str(tiny_ckpts["hubert"]))


def _bad_files(tiny_ckpts, tmp_path):
    """One file of every kind the checkpoint reader must name, with the words its error must contain."""
    import random
    import zipfile

    text = tmp_path / "notes.txt"
    text.write_text("these are my notes, not a model\n")
    whole = tiny_ckpts["hubert"].read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes([0x01]) + random.Random(0).randbytes(4095))  # not a pickle PROTO byte
    legacy_noise = tmp_path / "legacy_noise.pt"
    legacy_noise.write_bytes(b"\x80\x02" + random.Random(1).randbytes(4094))  # starts like a pickle, then garbage
    return [
        (text, r"not a PyTorch checkpoint: it is a text file \(starts with 'these are my notes"),
        (truncated, "zip archive that is cut short or damaged"),
        (other_zip, r"zip archive of other files \(readme.txt\), not a PyTorch checkpoint"),
        (noise, r"not a PyTorch checkpoint: it is binary data \(starts with bytes 01 "),
        (legacy_noise, "corrupt or truncated"),
        (tiny_ckpts["wav2vec2"], "is a wav2vec2 checkpoint, not hubert"),
    ]


def test_checkpoint_reader_names_each_kind_of_bad_file(tiny_ckpts, tmp_path):
    from s3prl_redundancy.checkpoints import load_family_checkpoint

    for path, message in _bad_files(tiny_ckpts, tmp_path):
        with pytest.raises(UserInputError, match=message) as info:
            load_family_checkpoint(path, expected_family="hubert")
        assert info.value.argument == "ckpt"
        assert "holds Python objects" not in str(info.value)


def test_pickled_objects_are_never_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    torch.save({"task_cfg": {}, "model_cfg": {}, "model_weight": {}, "dictionaries_symbols": Payload()}, evil)
    with pytest.raises(UserInputError, match="weights_only=True never executes a pickle"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_default_weights_are_those_of_s3prls_default_entry(family, tiny_ckpts, monkeypatch, tmp_path):
    """With no -k, a pruned entry downloads exactly what s3prl's own hubert/wav2vec2/wavlm entry downloads."""
    from s3prl_redundancy.testing.processes import capture_default_download

    asked = capture_default_download(monkeypatch, family, tiny_ckpts[family])
    config = tmp_path / "k.yaml"
    config.write_text("keep_layers: [0, 1]\n")
    upstream = ENTRIES[family](model_config=str(config))
    assert asked["ours"] == asked["s3prl"] == FAMILIES[family].default_url
    assert upstream.pruning["source"] == FAMILIES[family].default_url
