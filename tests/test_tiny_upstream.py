"""The shipped ``tiny_hubert`` hub entry: loads with no -k in a fresh process, safe and small checkpoint."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from s3prl_redundancy.errors import UserInputError

from s3prl_redundancy.testing.processes import run_python

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "upstreams" / "tiny" / "tiny_hubert.pt"


def test_shipped_checkpoint_is_small_safe_and_hubert_local():
    assert SHIPPED.is_file(), f"{SHIPPED} is missing"
    assert SHIPPED.stat().st_size < 25 * 2**20
    ckpt = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"}
    assert all(isinstance(ckpt[k], dict) for k in ("task_cfg", "model_cfg", "model_weight"))
    cfg = ckpt["model_cfg"]
    assert (cfg["encoder_layers"], cfg["encoder_embed_dim"], cfg["encoder_attention_heads"]) == (6, 256, 4)
    assert len(ckpt["dictionaries_symbols"][0]) == cfg["final_dim"] == 100
    weights = ckpt["model_weight"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
    meta = ckpt["tiny_hubert"]
    assert meta["steps"] == meta["total_steps"] > 0  # a finished run
    assert meta["eval_step"] == meta["steps"] and meta["val_acc_masked"] > 0.05  # held-out masked accuracy; chance 0.01


def test_tiny_hubert_loads_without_k_in_a_fresh_process(tmp_path):
    code = textwrap.dedent(
        """
        import json, torch
        import s3prl.hub as hub
        up = hub.tiny_hubert().eval()
        torch.manual_seed(0)
        wavs = [torch.randn(16000) * 0.1, torch.randn(12345) * 0.1]
        with torch.no_grad():
            hs = up(wavs)["hidden_states"]
        print(json.dumps({"module": type(up).__mro__[1].__module__, "n": len(hs), "shapes": [list(h.shape) for h in hs],
                          "finite": all(bool(torch.isfinite(h).all()) for h in hs),
                          "dtype": str(next(up.parameters()).dtype), "rate": up.get_downsample_rates("hidden_states")}))
        """
    )
    out = run_python(code, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["module"] == "s3prl.upstream.hubert.expert"  # s3prl's own HuBERT expert code path
    assert res["n"] == 7 and all(s[0] == 2 and s[2] == 256 for s in res["shapes"])
    assert res["shapes"][0][1] == 49  # 1 s at 50 Hz
    assert res["finite"] and res["dtype"] == "torch.float32" and res["rate"] == 320


def test_k_overrides_the_shipped_checkpoint(tmp_path):
    import s3prl.hub as hub

    from s3prl_redundancy.testing.models import save_tiny_checkpoint

    path = save_tiny_checkpoint("hubert", tmp_path / "other.pt", num_layers=2)
    up = hub.tiny_hubert(ckpt=str(path)).eval()
    with torch.no_grad():
        hs = up([torch.zeros(8000)])["hidden_states"]
    assert len(hs) == 3 and hs[0].shape[-1] == 32
    with pytest.raises(UserInputError, match="no such file"):
        hub.tiny_hubert(ckpt=str(tmp_path / "missing.pt"))


def test_shipped_weights_differ_from_random_init():
    from s3prl_redundancy.pretrain.model import build_model

    ckpt = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    model, _ = build_model(ckpt["tiny_hubert"]["seed"])
    init = model.state_dict()
    key = "encoder.layers.0.fc1.weight"
    assert not torch.allclose(init[key], ckpt["model_weight"][key].float(), atol=1e-2)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is needed to synthesise speech")
def test_trained_model_layer_similarity_is_not_uniform():
    """Issue 7's check on the shipped model: its CKA heatmap over speech has structure (not one flat block).

    "Not uniform" is read as: the off-diagonal CKA values spread over more than 0.05, and the exact block
    segmentation (threshold = mean off-diagonal similarity) finds more than one block."""
    import numpy as np
    import s3prl.hub as hub

    from s3prl_redundancy.similarity.analysis import analyze
    from s3prl_redundancy.similarity.blocks import find_blocks
    from s3prl_redundancy.superb.tts import Voice, synthesize

    sentences = ["the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore",
                 "a large number of people came home early", "please give me the small red book again"]
    voices = [Voice("en-us", "m3", pitch=40), Voice("en-gb", "f2", pitch=70), Voice("en-us", "m6", pitch=55),
              Voice("en-gb-scotland", "f4", pitch=60)]
    data = [(f"u{i}", torch.from_numpy(synthesize(s, v))) for i, (s, v) in enumerate(zip(sentences, voices))]
    report = analyze(hub.tiny_hubert().eval(), data, metrics=("cka",), batch_size=4, progress=False, plugin_manager=False)
    cka = np.asarray(report.metrics["cka"])
    off = cka[~np.eye(len(cka), dtype=bool)]
    assert off.max() - off.min() > 0.05, cka
    assert len(find_blocks(cka).blocks) > 1, cka
