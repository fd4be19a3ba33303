"""Layer consistency (arXiv 2105.00812): shared layers, uniform depth sampling, LC fine-tuning (learns at every
depth, resumes exactly, two gloo ranks equal one process) and the shallow-layer-inference upstream."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from s3prl_redundancy import layer_consistency as lc
from s3prl_redundancy.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILY_NAMES = ("hubert", "wav2vec2", "wavlm")

SMALL = dict(encoder_layers=4, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
             conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2", conv_pos=16, conv_pos_groups=4,
             layer_norm_first=True, label_rate=50.0, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
             encoder_layerdrop=0.0, dropout_input=0.0, dropout_features=0.0, feature_grad_mult=1.0, mask_prob=0.8,
             mask_length=5)


def _small_model(share=None, seed=0):
    from s3prl_redundancy.pretrain.model import build_model

    return build_model(seed, SMALL, n_clusters=8, share_layers=share)


# ------------------------------------------------------------------------------------------- sharing
@pytest.mark.parametrize("groups", [1, 2])
def test_a_shared_model_holds_one_set_of_weights_per_group(groups):
    shared, _ = _small_model(share=groups)
    plain, _ = _small_model()
    keys = [k for k in shared.state_dict() if k.startswith("encoder.layers.")]
    blocks = {k.split(".")[3] for k in keys}
    assert blocks == {str(g) for g in range(groups)}
    assert all(k.startswith("encoder.layers.blocks.") for k in keys)
    per_layer = sum(p.numel() for p in plain.encoder.layers[0].parameters())
    assert lc.n_parameters(plain) - lc.n_parameters(shared) == (4 - groups) * per_layer
    assert len(shared.encoder.layers) == 4
    # consecutive groups: layer i uses block i * G // L
    assert [shared.encoder.layers[i] is shared.encoder.layers.blocks[i * groups // 4] for i in range(4)] == [True] * 4


def test_expanded_state_is_the_same_network_and_compacts_back():
    from s3prl_redundancy.pretrain.model import build_model

    shared, _ = _small_model(share=2, seed=1)
    state = shared.state_dict()
    expanded = lc.expand_shared_state(state, 4, 2)
    plain, _ = build_model(5, SMALL, n_clusters=8)
    plain.load_state_dict(expanded)  # strict: every key of the unshared architecture, nothing else
    torch.testing.assert_close(expanded["encoder.layers.1.fc1.weight"], state["encoder.layers.blocks.0.fc1.weight"])
    torch.testing.assert_close(expanded["encoder.layers.2.fc1.weight"], state["encoder.layers.blocks.1.fc1.weight"])
    back = lc.compact_state(expanded, 4, 2)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    wav = torch.randn(2, 8000)
    shared.eval(), plain.eval()
    with torch.no_grad():
        for depth in (1, 3, None):
            a = lc.encode_to_depth(shared, lc.transformer_input(shared, wav)[0], depth)
            b = lc.encode_to_depth(plain, lc.transformer_input(plain, wav)[0], depth)
            torch.testing.assert_close(a, b)


def test_export_is_an_s3prl_hubert_local_checkpoint_with_the_compact_form(tmp_path):
    from s3prl.upstream.hubert.convert import load_converted_model

    from s3prl_redundancy.pretrain.model import hubert_local_checkpoint

    shared, cfg = _small_model(share=1, seed=2)
    ckpt = hubert_local_checkpoint(shared, cfg, 8, half=False,
                                   layer_consistency={"share_layers": 1, "depth_range": [1, 4]})
    assert ckpt[lc.META_KEY]["share_layers"] == 1
    assert {k.split(".")[3] for k in ckpt[lc.COMPACT_KEY]} == {"0"}
    path = tmp_path / "lc.pt"
    torch.save(ckpt, path)
    assert torch.load(path, weights_only=True)[lc.META_KEY]["depth_range"] == [1, 4]
    model, _ = load_converted_model(str(path))  # s3prl's own hubert_local loader
    wav = torch.randn(1, 8000)
    shared.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.extract_features(wav)[0], shared.extract_features(wav)[0])


def test_options_are_checked():
    assert lc.parse_share_layers("all", 6) == 1 and lc.parse_share_layers("3", 6) == 3
    assert lc.parse_share_layers(None, 6) is None and lc.parse_share_layers("6", 6) is None
    assert lc.parse_depth_range("2,5", 6) == (2, 5)
    for bad in ("0", "7", "two"):
        with pytest.raises(UserInputError, match="share_layers|between|groups"):
            lc.parse_share_layers(bad, 6)
    for bad in ("0,3", "4,2", "1,7", "3"):
        with pytest.raises(UserInputError) as e:
            lc.parse_depth_range(bad, 6)
        assert e.value.argument == "depth_range"


# ------------------------------------------------------------------------------------------- depth sampling
@pytest.mark.parametrize("depth_range", [(1, 6), (2, 4)])
def test_sampled_depths_cover_their_range_uniformly(depth_range):
    from scipy.stats import chisquare

    lo, hi = depth_range
    draws = np.array([lc.sample_depth(0, step, depth_range) for step in range(6000)])
    assert draws.min() == lo and draws.max() == hi
    counts = np.bincount(draws - lo, minlength=hi - lo + 1)
    assert chisquare(counts).pvalue > 0.001, counts
    assert [lc.sample_depth(0, s, depth_range) for s in range(50)] == list(draws[:50])  # a function of (seed, step)
    assert [lc.sample_depth(1, s, depth_range) for s in range(50)] != list(draws[:50])


def test_exit_at_depth_k_is_the_first_k_layers_and_the_final_norm():
    model, _ = _small_model(seed=3)
    model.eval()
    x = torch.randn(2, 30, 32)
    with torch.no_grad():
        h = x + model.encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        h = h.transpose(0, 1)
        for layer in list(model.encoder.layers)[:2]:
            h, _ = layer(h, self_attn_padding_mask=None, need_weights=False)
        ref = model.encoder.layer_norm(h.transpose(0, 1))
        torch.testing.assert_close(lc.encode_to_depth(model, x, 2), ref)
        torch.testing.assert_close(lc.encode_to_depth(model, x, None), model.encoder(x)[0])


def _s3prl_forward(model, family, wav, padding_mask):
    """``(x, frame padding mask)`` of s3prl's own forward of the family's model (features only, no masking)."""
    if family == "wav2vec2":
        res = model.extract_features(wav, padding_mask)
        return res["x"], res["padding_mask"]
    return model.extract_features(wav, padding_mask=padding_mask, mask=False)


@pytest.mark.parametrize("layer_norm_first", [True, False], ids=["preLN", "postLN"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_transformer_input_and_encoder_equal_s3prls_forward_on_a_padded_batch(family, layer_norm_first):
    from s3prl_redundancy.families import FAMILIES
    from s3prl_redundancy.testing.models import build_checkpoint

    model = FAMILIES[family].trained_model(build_checkpoint(family, seed=9, layer_norm_first=layer_norm_first)).eval()
    lengths = torch.tensor([16000, 9000])
    wav = torch.randn(2, 16000) * 0.1
    wav[1, 9000:] = 0
    padding = torch.arange(16000)[None] >= lengths[:, None]
    with torch.no_grad():
        for pad in (padding, None):
            x, features, mask = lc.transformer_input(model, wav, pad)
            ours = lc.encode_to_depth(model, x, None, padding_mask=mask)
            ref, ref_mask = _s3prl_forward(model, family, wav, pad)
            torch.testing.assert_close(ours, ref)
            assert (mask is None) == (ref_mask is None) and (mask is None or torch.equal(mask, ref_mask))
            assert features.shape[1:] == (32, 49)
    assert mask is None and ref_mask is None


# ------------------------------------------------------------------------------------------- LC fine-tuning
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from s3prl_redundancy.testing.audio import write_tone_corpus

    folder = tmp_path_factory.mktemp("tones")
    write_tone_corpus(folder, 14, seed=4, seconds=(0.8, 1.4))
    return folder


@pytest.fixture(scope="module")
def preln_hubert(tmp_path_factory):
    """A 4-layer pre-LN HuBERT (as tiny_hubert) in s3prl's hubert_local format."""
    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    return save_tiny_checkpoint("hubert", tmp_path_factory.mktemp("preln") / "hubert.pt", layer_norm_first=True)


def _cfg(model, data, out, family="hubert", **kw):
    from s3prl_redundancy.families import FAMILIES
    from s3prl_redundancy.layer_consistency.finetune import LCFinetuneConfig

    base = dict(upstream=FAMILIES[family].local_entry, ckpt=str(model), data=str(data), out=str(out), steps=12, batch_size=4,
                crop_seconds=0.6, lr=3e-3, save_every=4, heldout=3, progress=False)
    base.update(kw)
    return LCFinetuneConfig(**base)


@pytest.fixture(scope="module")
def preln_models(preln_hubert, tmp_path_factory):
    """``{family: path}``: 4-layer pre-LN models of the three families in their s3prl local formats."""
    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    from s3prl_redundancy.testing.models import build_checkpoint

    folder = tmp_path_factory.mktemp("preln_models")
    wav2vec2 = save_tiny_checkpoint("wav2vec2", folder / "wav2vec2.pt", layer_norm_first=True)
    # s3prl's WavLM initialises its layers BERT-style (std 0.02): at 32 dims they are near-identities (depth
    # losses ~1e-4, nothing to learn), so its linear weights are scaled to the other families' size (~0.1)
    wavlm = build_checkpoint("wavlm", layer_norm_first=True)
    scaled = ("proj.weight", "fc1.weight", "fc2.weight")  # q/k/v/out projections and the feed-forward layers
    wavlm["model"] = {k: v * 6 if k.startswith("encoder.layers.") and k.endswith(scaled) else v
                      for k, v in wavlm["model"].items()}
    torch.save(wavlm, folder / "wavlm.pt")
    return {"hubert": preln_hubert, "wav2vec2": wav2vec2, "wavlm": folder / "wavlm.pt"}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lc_finetuning_lowers_the_loss_at_every_depth(family, preln_models, corpus, tmp_path):
    import s3prl.hub

    from s3prl_redundancy.families import FAMILIES
    from s3prl_redundancy.layer_consistency.finetune import EXPORTS, features_at, lc_finetune

    manifest = lc_finetune(_cfg(preln_models[family], corpus, tmp_path / "ft", family, steps=30, save_every=30))
    before, after = (manifest["heldout_depth_losses"][k] for k in ("before", "after"))
    assert set(before) == set(after) == {1, 2, 3, 4}
    assert before[4] == pytest.approx(0.0, abs=1e-6)  # the full model is its own target before training
    for depth in (1, 2, 3):
        assert after[depth] < 0.8 * before[depth], (depth, before, after)
    assert after[4] < before[1]
    assert sorted({h["depth"] for h in manifest["history"]}) == [1, 2, 3, 4]
    export = tmp_path / "ft" / EXPORTS[family]
    assert manifest["checkpoint"] == f"lc_{family}.pt" and manifest["load_with"].startswith(f"-u lc_{family} -k ")
    fam = FAMILIES[family]
    ckpt, source = (torch.load(p, weights_only=True) for p in (export, preln_models[family]))
    assert ckpt[lc.META_KEY]["depth_range"] == [1, 4]
    assert set(ckpt) == set(source) | {lc.META_KEY} and ckpt[fam.config_key] == source[fam.config_key]
    assert {k: v.dtype for k, v in fam.weights(ckpt).items()} == {k: v.dtype for k, v in fam.weights(source).items()}
    assert not torch.equal(fam.weights(ckpt)["encoder.layers.0.fc1.weight"], fam.weights(source)["encoder.layers.0.fc1.weight"])
    wav = torch.randn(12000) * 0.1
    with torch.no_grad():
        full = getattr(s3prl.hub, fam.local_entry)(ckpt=str(export)).eval()([wav])["hidden_states"]  # s3prl's loader
        sli = getattr(s3prl.hub, f"lc_{family}")(ckpt=str(export), model_config={"depth": 2}).eval()([wav])["hidden_states"]
        trained = fam.trained_model(ckpt).eval()
        torch.testing.assert_close(sli[-1], features_at(trained, wav[None], 2), rtol=1e-4, atol=1e-5)
    assert len(full) == 5 and len(sli) == 3
    torch.testing.assert_close(sli[1], full[1])  # the first layer is the same in both
    assert (tmp_path / "ft" / "loss_curve.png").stat().st_size > 0


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lc_finetuning_sees_the_waveform_as_the_family_expert_does(family, corpus, tmp_path):
    """Where the family normalises waveforms, the student's features at depth k are what ``lc_<family>`` serves
    at depth k (s3prl's expert normalises), and the teacher's are the expert's last hidden state."""
    from s3prl_redundancy.families import FAMILIES
    from s3prl_redundancy.layer_consistency.finetune import LCFinetuner, features_at
    from s3prl_redundancy.testing.models import build_checkpoint
    from s3prl_redundancy.io import atomic_torch_save
    from s3prl_redundancy.upstreams.lc import hubconf

    fam = FAMILIES[family]
    ckpt = build_checkpoint(family, seed=11, layer_norm_first=True)
    ckpt["cfg" if family == "wavlm" else "task_cfg"]["normalize"] = True  # WavLM: in its model config
    assert fam.normalizes_waveform(ckpt)
    path = atomic_torch_save(ckpt, tmp_path / "m.pt")
    runner = LCFinetuner(_cfg(path, corpus, tmp_path / "ft", family))
    runner.prepare()
    wav = torch.randn(12000) * 0.3 + 0.2  # normalising changes it
    with torch.no_grad():
        for depth in (1, 4):
            served = getattr(hubconf, f"lc_{family}")(ckpt=str(path), model_config={"depth": depth}).eval()([wav])
            torch.testing.assert_close(features_at(runner.model, wav[None], depth), served["hidden_states"][-1])
        torch.testing.assert_close(features_at(runner.teacher, wav[None], None), served["hidden_states"][-1])


def test_lc_finetuning_resumes_to_the_identical_loss_curve(preln_hubert, corpus, tmp_path):
    from s3prl_redundancy.layer_consistency.finetune import EXPORTS, lc_finetune

    EXPORT = EXPORTS["hubert"]
    straight = lc_finetune(_cfg(preln_hubert, corpus, tmp_path / "a"))["history"]
    lc_finetune(_cfg(preln_hubert, corpus, tmp_path / "b", stop_after=5))  # "killed" after step 5 (state at 4, 5)
    resumed = lc_finetune(_cfg(preln_hubert, corpus, tmp_path / "b", resume=True))["history"]
    assert [h["loss"] for h in straight] == [h["loss"] for h in resumed]
    assert [h["depth"] for h in straight] == [h["depth"] for h in resumed]
    wa = torch.load(tmp_path / "a" / EXPORT, weights_only=True)["model_weight"]
    wb = torch.load(tmp_path / "b" / EXPORT, weights_only=True)["model_weight"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(UserInputError) as e:  # another configuration cannot resume this run
        lc_finetune(_cfg(preln_hubert, corpus, tmp_path / "b", resume=True, lr=1e-3))
    assert e.value.argument == "resume"


def test_lc_finetuning_refuses_bad_input_before_writing(preln_hubert, tiny_ckpts, corpus, tmp_path):
    from s3prl_redundancy.layer_consistency.finetune import lc_finetune

    out = tmp_path / "never"
    wav2vec2 = torch.load(tiny_ckpts["wav2vec2"], weights_only=True)
    variants = {}  # wav2vec 2.0 whose layers / front end are not the standard transformer ones
    for name, change in (("conformer", {"layer_type": "conformer"}), ("quantized", {"quantize_input": True})):
        variants[name] = tmp_path / f"{name}.pt"
        torch.save(dict(wav2vec2, model_cfg={**wav2vec2["model_cfg"], **change}), variants[name])
    for kw, arg in [(dict(upstream="wavlm_local", ckpt=str(tiny_ckpts["hubert"])), "ckpt"),
                    (dict(upstream="wav2vec2_local", ckpt=str(variants["conformer"])), "ckpt"),
                    (dict(upstream="wav2vec2_local", ckpt=str(variants["quantized"])), "ckpt"),
                    (dict(depth_range="0,3"), "depth_range"), (dict(steps=0), "steps"),
                    (dict(mse_weight=0.0, cosine_weight=0.0), "mse_weight"), (dict(upstream="nope"), "upstream")]:
        with pytest.raises(UserInputError) as e:
            lc_finetune(_cfg(preln_hubert, corpus, out, **kw))
        assert e.value.argument == arg, (kw, e.value)
        assert not out.exists()


# ------------------------------------------------------------------------------------------- masked prediction
@pytest.fixture(scope="module")
def tiny_style(tmp_path_factory, corpus):
    """A pretrain-tiny-style checkpoint (linear head over 8 clusters) and the MFCC k-means centres of ``corpus``."""
    from s3prl_redundancy.audio import AudioDataset
    from s3prl_redundancy.pretrain.model import hubert_local_checkpoint
    from s3prl_redundancy.pretrain.targets import build_targets

    folder = tmp_path_factory.mktemp("tiny_style")
    model, cfg = _small_model(seed=3)
    path = folder / "tiny.pt"
    torch.save(hubert_local_checkpoint(model, cfg, 8, half=False, extra={"steps": 0}), path)
    data = AudioDataset.from_data(str(corpus))
    wavs = [data[i][1].numpy() for i in range(len(data))]
    np.save(folder / "centres.npy", build_targets(wavs, n_clusters=8, seed=0)[1])
    return path, folder / "centres.npy"


def test_masked_prediction_term_is_the_heads_cross_entropy_on_masked_frames(tiny_style, corpus, tmp_path):
    """The first step's CE equals an independent computation: the batch, its span mask, the depth-k output
    of the masked input through the exit norm, the linear head, cross-entropy on the masked frames."""
    import torch.nn.functional as F

    from s3prl_redundancy.layer_consistency.finetune import LCFinetuner
    from s3prl_redundancy.pretrain.model import mask_indices
    from s3prl_redundancy.pretrain.targets import mfcc39, num_frames

    ckpt, centres = tiny_style
    runner = LCFinetuner(_cfg(ckpt, corpus, tmp_path / "ft", targets=str(centres), steps=2))
    runner.prepare()
    model = runner.model
    wav, labels = runner.batches.batch(0)
    c = np.load(centres)
    for row, (w, lab) in enumerate(zip(wav, labels)):  # a crop's labels are the nearest centres of its frames
        i = next(i for i, u in enumerate(runner.train_wavs) if len(u) >= len(w) and any(
            np.array_equal(u[o : o + len(w)], w) for o in range(0, len(u) - len(w) + 1, 320)))
        full = ((mfcc39(runner.train_wavs[i])[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        assert any(np.array_equal(full[f : f + len(lab)], lab) for f in range(len(full) - len(lab) + 1))
        assert len(lab) == num_frames(len(w))
    depth = lc.sample_depth(0, 0, runner.depth_range)
    with torch.no_grad():
        x = lc.transformer_input(model, torch.as_tensor(wav))[0]
        mask = torch.as_tensor(mask_indices(model, len(wav), x.shape[1], [0, 0, 1]))
        x = torch.where(mask[..., None], model.mask_emb, x)
        logits = model.final_proj(lc.encode_to_depth(model, x, depth))
        expected = F.cross_entropy(logits[mask], torch.as_tensor(labels)[mask])
    stats = runner.step(0)
    assert stats["depth"] == depth
    assert stats["ce_masked"] == pytest.approx(float(expected), rel=1e-5)
    assert stats["loss"] == pytest.approx(stats["ce_masked"] + stats["mse"] + stats["cos"], rel=1e-5)


def test_cosine_head_is_hubert_s_own_logits(preln_hubert):
    """For a HuBERT checkpoint (no pretrain-tiny key) the head is HuBERT's: s3prl's compute_nce over every
    label embedding, the positive first; its cross-entropy is ours."""
    import torch.nn.functional as F

    from s3prl_redundancy.families import FAMILIES
    from s3prl_redundancy.pretrain.model import COSINE_HEAD, head_kind, prediction_logits, target_classes

    ckpt = torch.load(preln_hubert, weights_only=True)
    assert head_kind(ckpt) == COSINE_HEAD and target_classes(ckpt) == 8
    model = FAMILIES["hubert"].trained_model(ckpt).eval()
    y, target = torch.randn(30, model.final_proj.in_features), torch.randint(0, 8, (30,))
    with torch.no_grad():
        embs = model.label_embs_concat
        nce = model.compute_nce(model.final_proj(y), embs[target], embs.unsqueeze(1).expand(-1, 30, -1))
        ours = prediction_logits(model, y, COSINE_HEAD)
    torch.testing.assert_close(F.cross_entropy(ours, target), F.cross_entropy(nce, torch.zeros(30, dtype=torch.long)))


def test_lc_finetuning_with_targets_resumes_exactly_and_learns_the_targets(tiny_style, corpus, tmp_path):
    from s3prl_redundancy.layer_consistency.finetune import lc_finetune

    ckpt, centres = tiny_style
    kw = dict(targets=str(centres), steps=20, save_every=5)
    straight = lc_finetune(_cfg(ckpt, corpus, tmp_path / "a", **kw))
    lc_finetune(_cfg(ckpt, corpus, tmp_path / "b", stop_after=7, **kw))
    resumed = lc_finetune(_cfg(ckpt, corpus, tmp_path / "b", resume=True, **kw))
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in resumed["history"]]
    evals = straight["heldout_depth_losses"]  # the random head learns the cluster labels at every depth
    before, after = evals["acc_masked_before"], evals["acc_masked_after"]
    assert set(before) == set(after) == {1, 2, 3, 4}
    assert all(after[k] > before[k] + 0.05 for k in before), (before, after)
    assert torch.load(tmp_path / "a" / "lc_hubert.pt", weights_only=True)[lc.META_KEY]["loss"]["mp_weight"] == 1.0


def test_targets_are_checked_before_writing(tiny_style, tiny_ckpts, corpus, tmp_path):
    from s3prl_redundancy.layer_consistency.finetune import lc_finetune

    ckpt, centres = tiny_style
    np.save(tmp_path / "k5.npy", np.zeros((5, 39), np.float32))
    np.save(tmp_path / "d13.npy", np.zeros((8, 13), np.float32))
    np.savez(tmp_path / "nocentres.npz", labels=np.zeros(3))
    out = tmp_path / "never"
    for targets, says in [("missing.npy", "no such file"), ("k5.npy", "5 centres"), ("d13.npy", "(K, 39)"),
                          ("nocentres.npz", "no `centres`")]:
        with pytest.raises(UserInputError, match=re.escape(says)) as e:
            lc_finetune(_cfg(ckpt, corpus, out, targets=str(tmp_path / targets)))
        assert e.value.argument == "targets" and not out.exists()
    with pytest.raises(UserInputError, match="prediction head") as e:
        lc_finetune(_cfg(tiny_ckpts["wav2vec2"], corpus, out, upstream="wav2vec2_local", targets=str(centres)))
    assert e.value.argument == "targets" and not out.exists()
    with pytest.raises(UserInputError) as e:
        lc_finetune(_cfg(ckpt, corpus, out, targets=str(centres), mp_weight=-1.0))
    assert e.value.argument == "mp_weight" and not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("masked_prediction", [False, True], ids=["distill", "distill+mp"])
def test_two_gloo_ranks_equal_one_process(masked_prediction, preln_hubert, tiny_style, corpus, tmp_path):
    """Each rank computes its rows of the global batch (and of its span mask): the loss curve of one process."""
    from s3prl_redundancy.layer_consistency.finetune import EXPORTS, HISTORY, lc_finetune
    from s3prl_redundancy.testing.processes import run_gloo_ranks

    EXPORT = EXPORTS["hubert"]
    model, kw = (tiny_style[0], dict(targets=str(tiny_style[1]))) if masked_prediction else (preln_hubert, {})
    single = lc_finetune(_cfg(model, corpus, tmp_path / "single", steps=6, **kw))["history"]
    run_gloo_ranks(lc_finetune, _cfg(model, corpus, tmp_path / "ddp", steps=6, **kw), tmp_path / "ddp", tmp_path / "store")
    ddp = json.loads((tmp_path / "ddp" / HISTORY).read_text())["history"]
    assert [h["depth"] for h in ddp] == [h["depth"] for h in single]
    for a, b in zip(single, ddp):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        if masked_prediction:
            assert b["ce_masked"] == pytest.approx(a["ce_masked"], rel=1e-5)
    wa = torch.load(tmp_path / "single" / EXPORT, weights_only=True)["model_weight"]
    wb = torch.load(tmp_path / "ddp" / EXPORT, weights_only=True)["model_weight"]
    # a key bias has an exactly zero gradient (softmax ignores it): Adam turns its rounding noise, which
    # depends on the order of the sums, into full-size steps of either sign; every other weight must agree
    for k in (k for k in wa if not k.endswith("k_proj.bias")):
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6, msg=k)


# ------------------------------------------------------------------------------------------- SLI upstream
def _load_s3prl_model(family, ckpt_path):
    """s3prl's own model of ``family`` from a local-format checkpoint, as s3prl's loaders build it."""
    if family == "wavlm":
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        ckpt = torch.load(ckpt_path, weights_only=True)
        model = WavLM(WavLMConfig(ckpt["cfg"]))
        model.load_state_dict(ckpt["model"])
        return model
    if family == "wav2vec2":
        from s3prl.upstream.wav2vec2.convert import load_converted_model
    else:
        from s3prl.upstream.hubert.convert import load_converted_model
    return load_converted_model(str(ckpt_path))[0]


def _independent_sli(ckpt_path, depth, wav, family="hubert"):
    """Hidden states of the first ``depth`` layers + exit norm, computed here on s3prl's model modules
    (WavLM's layers pass the relative position bias of layer 0 on)."""
    model = _load_s3prl_model(family, ckpt_path)
    model.eval()
    enc = model.encoder
    with torch.no_grad():
        x = model.layer_norm(model.feature_extractor(wav[None]).transpose(1, 2))
        x = model.post_extract_proj(x) if model.post_extract_proj is not None else x
        x = x + enc.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not enc.layer_norm_first:
            x = enc.layer_norm(x)
        states, h, pos_bias = [], x.transpose(0, 1), None
        for layer in list(enc.layers)[:depth]:
            states.append(h.transpose(0, 1))
            if family == "wavlm":
                h, _, pos_bias = layer(h, self_attn_padding_mask=None, need_weights=False, pos_bias=pos_bias)
            else:
                h, _ = layer(h, self_attn_padding_mask=None, need_weights=False)
        h = h.transpose(0, 1)
        states.append(enc.layer_norm(h) if enc.layer_norm_first else h)
    return states


@pytest.mark.parametrize("layer_norm_first", [True, False], ids=["preLN", "postLN"])
@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_sli_entry_equals_the_first_k_layers_and_the_exit_norm(family, depth, layer_norm_first, tmp_path):
    from s3prl_redundancy.testing.models import save_tiny_checkpoint
    from s3prl_redundancy.upstreams.lc import hubconf

    ckpt = save_tiny_checkpoint(family, tmp_path / "m.pt", seed=depth, layer_norm_first=layer_norm_first)
    config = tmp_path / "depth.yaml"
    config.write_text(f"depth: {depth}\n")
    upstream = getattr(hubconf, f"lc_{family}")(ckpt=str(ckpt), model_config=str(config)).eval()
    wav = torch.randn(12000) * 0.1
    with torch.no_grad():
        ours = upstream([wav])["hidden_states"]
    ref = _independent_sli(ckpt, depth, wav, family)
    assert len(ours) == depth + 1 == len(ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert upstream.depth == depth and len(upstream.model.encoder.layers) == depth


def test_sli_entry_serves_a_shared_layer_export_and_the_featurizer(tmp_path):
    from s3prl.upstream.interfaces import Featurizer

    from s3prl_redundancy.pretrain.model import hubert_local_checkpoint
    from s3prl_redundancy.testing.audio import random_wavs
    from s3prl_redundancy.upstreams.lc.hubconf import lc_hubert

    shared, cfg = _small_model(share=1, seed=6)
    path = tmp_path / "lc.pt"
    torch.save(hubert_local_checkpoint(shared, cfg, 8, half=False, layer_consistency={"share_layers": 1}), path)
    upstream = lc_hubert(ckpt=str(path), model_config={"depth": 3}).eval()
    wavs = random_wavs((16000, 8000))
    shared.eval()
    with torch.no_grad():
        hs = upstream(wavs)["hidden_states"]
        direct = lc.encode_to_depth(shared, lc.transformer_input(shared, wavs[0][None])[0], 3)
        feats = Featurizer(upstream, "hidden_states", upstream_device="cpu")(wavs, upstream(wavs))
    assert len(hs) == 4
    torch.testing.assert_close(hs[-1][:1, : direct.shape[1]], direct, rtol=1e-4, atol=1e-5)
    assert [f.shape[0] for f in feats] == [49, 25]
    assert upstream.layer_consistency["share_layers"] == 1
    full = lc_hubert(ckpt=str(path)).eval()  # no -g: every layer
    assert full.depth == 4


def test_sli_depth_is_checked(preln_hubert, tmp_path):
    from s3prl_redundancy.upstreams.lc.hubconf import lc_hubert

    for config, message in [({"depth": 5}, "between 1 and the 4 layers"), ({"depth": 0}, "positive"),
                            ({"keep_layers": [0]}, "no `depth` key"), (str(tmp_path / "none.yaml"), "does not exist")]:
        with pytest.raises(UserInputError, match=message):
            lc_hubert(ckpt=str(preln_hubert), model_config=config)
    with pytest.raises(UserInputError, match="needs -k"):
        lc_hubert()


@pytest.mark.parametrize("keep", [1, 3])
def test_prune_strategy_shallow_equals_the_sli_entry(keep, tmp_path):
    """``prune --strategy shallow --keep k`` on a layer-consistent checkpoint serves what ``lc_hubert`` with
    ``depth: k`` serves (shallow layer inference is a cut; what makes it work is the training)."""
    from s3prl_redundancy.checkpoints import checkpoint_buffer
    from s3prl_redundancy.compression.compress import compress
    from s3prl_redundancy.compression.strategies import Target, plan_layers
    from s3prl_redundancy.plugins import build_strategy
    from s3prl_redundancy.families import FAMILIES
    from s3prl_redundancy.pretrain.model import hubert_local_checkpoint
    from s3prl_redundancy.testing.audio import random_wavs
    from s3prl_redundancy.upstreams.lc.hubconf import lc_hubert

    shared, cfg = _small_model(share=1, seed=8)
    ckpt = hubert_local_checkpoint(shared, cfg, 8, half=False, layer_consistency={"share_layers": 1})
    path = tmp_path / "lc.pt"
    torch.save(ckpt, path)
    plan = plan_layers(build_strategy("shallow"), 4, Target("keep", keep))
    assert list(plan.keep) == list(range(keep))
    pruned = compress(ckpt, source=str(path), plan=plan).checkpoint
    expert = FAMILIES["hubert"].expert_class()(checkpoint_buffer(pruned)).eval()
    sli = lc_hubert(ckpt=str(path), model_config={"depth": keep}).eval()
    wavs = random_wavs((16000, 9000))
    with torch.no_grad():
        a, b = expert(wavs)["hidden_states"], sli(wavs)["hidden_states"]
    assert len(a) == len(b) == keep + 1
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_cli_lc_finetune_writes_every_output_and_names_flags(preln_hubert, corpus, tmp_path, capsys):
    from s3prl_redundancy.cli import discover_commands, main

    assert "lc-finetune" in discover_commands()
    out = tmp_path / "cli"
    args = ["lc-finetune", "--upstream", "hubert_local", "--ckpt", str(preln_hubert), "--data", str(corpus),
            "--out", str(out), "--steps", "3", "--batch-size", "2", "--crop-seconds", "0.5", "--no-progress"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "-u lc_hubert" in summary["checkpoint"] and set(summary["heldout_loss_after"]) == {"1", "2", "3", "4"}
    assert {p.name for p in out.iterdir()} >= {"lc_hubert.pt", "history.json", "manifest.json", "loss_curve.png",
                                                "train_state.pt"}
    assert main(args) != 0  # a finished run is not overwritten without --force / --resume
    assert main(args[:-1] + ["--depth-range", "2,9", "--force", "--no-progress"]) != 0
    assert "--depth-range" in capsys.readouterr().err


def test_shipped_lc_tiny_hubert_is_layer_consistent_and_serves_every_depth():
    from s3prl_redundancy.upstreams.lc.expert import DEFAULT_CKPT
    from s3prl_redundancy.upstreams.lc.hubconf import lc_tiny_hubert

    assert DEFAULT_CKPT.stat().st_size < 25 * 2**20
    ckpt = torch.load(DEFAULT_CKPT, weights_only=True)
    assert ckpt[lc.META_KEY]["share_layers"] == 1 and ckpt[lc.META_KEY]["depth_range"] == [1, 6]
    weights = ckpt["model_weight"]
    assert all(torch.equal(weights[f"encoder.layers.{i}.fc1.weight"], weights["encoder.layers.0.fc1.weight"])
               for i in range(6))
    assert torch.equal(ckpt[lc.COMPACT_KEY]["encoder.layers.blocks.0.fc1.weight"], weights["encoder.layers.0.fc1.weight"])
    wav = [torch.randn(16000) * 0.1]
    with torch.no_grad():
        for depth in (2, 6):
            up = lc_tiny_hubert(model_config={"depth": depth}).eval()
            hs = up(wav)["hidden_states"]
            assert len(hs) == depth + 1 and hs[-1].shape == (1, 49, 256)


@pytest.mark.parametrize("kind", ["sli", "backward", "forward"])
def test_the_measured_depth_k_models_run_k_layers(kind):
    """``measure``'s depth-k models of the shipped checkpoints serve k + 1 hidden states."""
    from s3prl_redundancy.layer_consistency.measure import _upstreams_at_depth

    ckpt = Path(lc.__file__).parents[2] / "upstreams" / ("lc/lc_tiny_hubert.pt" if kind == "sli" else "tiny/tiny_hubert.pt")
    with torch.no_grad():
        states = _upstreams_at_depth(kind, str(ckpt), 2).eval()([torch.randn(8000)])["hidden_states"]
    assert len(states) == 3


def test_prune_shallow_says_when_the_model_was_not_trained_for_it(tmp_path, capsys):
    """``prune --strategy shallow`` on a standard model notes that it is ``backward`` and points to
    ``lc-finetune``; on a layer-consistent model it says nothing."""
    from s3prl_redundancy import cli

    upstreams = Path(lc.__file__).parents[2] / "upstreams"
    for ckpt, noted in ((upstreams / "tiny" / "tiny_hubert.pt", True), (upstreams / "lc" / "lc_tiny_hubert.pt", False)):
        code = cli.main(["prune", "--upstream", "hubert_local", "--ckpt", str(ckpt), "--strategy", "shallow",
                         "--keep", "2", "--dry-run", "--no-latency", "--out", str(tmp_path / "never")])
        err = capsys.readouterr().err
        assert code == 0 and ("lc-finetune" in err) == noted, err
