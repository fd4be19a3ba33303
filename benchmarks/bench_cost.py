"""Parameters and MACs of every variant, measured and counted by hand from the config.

Measured: parameters with :func:`s3prl_redundancy.compression.cost.parameter_counts` (``inference``: the
tensors on the forward path, no pre-training heads) of the checkpoint, or
:func:`~s3prl_redundancy.compression.cost.count_module_parameters` of the distilled student; MACs with
:func:`~s3prl_redundancy.compression.cost.macs` (``torch.utils.flop_counter``, FLOPs / 2, fused CPU attention
included) of one forward on ``BENCH_AUDIO_SECONDS`` of audio (one utterance).

Hand count (:func:`hand_count`) for the Base architecture, with ``d`` the model width, ``f`` the FFN width,
``H`` heads of ``d/H`` dims, ``C`` CNN channels, ``K``/``g`` the positional convolution's kernel and groups:

* parameters: CNN ``sum c_out c_in k`` (no conv bias) + first layer's GroupNorm ``2C`` + feature layer norm
  ``2C`` + projection ``C d + d`` + positional conv ``d (d/g) K`` (weight_v) + ``K`` (weight_g) + ``d`` (bias) +
  encoder layer norm ``2d``; per layer ``4 (d^2 + d)`` attention + ``2 (d f) + f + d`` FFN + ``4d`` (two layer
  norms); a removed head takes ``4 (d/H) d + 3 (d/H)`` (q/k/v rows and biases, out_proj columns); a rank-r
  ``in x out`` matrix has ``r (in + out) + out``; the MLP mimicker has per target ``2 d h + h + d + 2h``.
* MACs of ``N`` samples: CNN ``sum c_out c_in k T_i`` with ``T_i = floor((T_{i-1} - k_i) / s_i) + 1``, projection
  ``T C d``, positional conv ``d (d/g) K (T + 1)`` (even kernel, padding K/2: T + 1 outputs, the last dropped);
  the layers run on ``T' = T`` rounded up to even (fairseq's ``required_seq_len_multiple = 2``): per layer
  ``T' (4 d^2 + 2 d f)`` projections and FFN plus ``2 T'^2 d`` attention scores (``QK^T`` and ``AV``); a
  head-pruned layer with ``h`` heads ``T' 4 h (d/H) d + 2 T'^2 h (d/H)``; rank-r matrices ``T' r (in + out)``;
  the mimicker ``T 2 d h`` per target (on the unpadded frames). Norms, activations, bias additions and
  softmax are not multiply-accumulates and are counted by neither side.

Parameters must agree exactly; MACs within ``MAC_TOLERANCE`` (the two agree exactly today: attention
scores are counted on both sides; the tolerance is there for a torch whose flop counter adds e.g. the
softmax scaling).
"""

from __future__ import annotations

import pytest

from s3prl_redundancy.testing.benchmarks import (DISTILL_HIDDEN, KEEP, LAYERS, LOW_RANK, SAMPLE_RATE, SECONDS, VARIANTS, record_context,
                      record_ratios)

MAC_TOLERANCE = 0.005


def _conv_layers(spec: str):
    return eval(spec, {"__builtins__": {}})  # fairseq's own format: "[(512, 10, 5)] + [(512, 3, 2)] * 4 + ..."


def frames(samples: int, conv) -> list:
    out, t = [], samples
    for _, k, s in conv:
        t = (t - k) // s + 1
        out.append(t)
    return out


def hand_count(cfg, samples: int, layers: int = LAYERS, heads_kept=None, rank=None, mimicker_hidden=None):
    """``(inference parameters, MACs)`` of HuBERT Base (post-LN, default CNN) on one utterance of ``samples``.

    ``heads_kept``: heads per layer (list); ``rank``: every layer matrix at this rank; ``mimicker_hidden``: the
    stack replaced by the MLP mimicker (one stage per layer)."""
    conv = _conv_layers(cfg["conv_feature_layers"])
    d, f, H = cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"], cfg["encoder_attention_heads"]
    K, g = cfg["conv_pos"], cfg["conv_pos_groups"]
    hd = d // H
    C = conv[-1][0]
    # --- front end
    params, c_in = 0, 1
    t_cnn = frames(samples, conv)
    macs = 0
    for (c_out, k, _), t in zip(conv, t_cnn):
        params += c_out * c_in * k
        macs += c_out * c_in * k * t
        c_in = c_out
    params += 2 * conv[0][0]  # GroupNorm of the first conv layer (extractor_mode "default")
    params += 2 * C  # layer_norm over the CNN channels
    T = t_cnn[-1]
    params += C * d + d  # post_extract_proj
    macs += T * C * d
    params += d * (d // g) * K + K + d  # pos_conv: weight_v, weight_g (weight norm over dim 2), bias
    macs += d * (d // g) * K * (T + 1)
    params += 2 * d  # encoder.layer_norm (post-LN: before the layers)
    if mimicker_hidden is not None:
        h = mimicker_hidden
        params += layers * (2 * d * h + h + d + 2 * h)
        macs += layers * T * 2 * d * h
        return params, macs
    # --- transformer layers
    Tp = -(-T // 2) * 2
    heads = list(heads_kept) if heads_kept is not None else [H] * layers
    for h in heads:
        w = h * hd  # width of the kept heads
        if rank is None:
            params += 3 * (w * d + w) + (d * w + d)
            macs += Tp * 4 * w * d
            params += d * f + f + f * d + d
            macs += Tp * 2 * d * f
        else:
            r = rank
            params += 4 * (r * (d + d) + d)
            macs += Tp * 4 * r * (d + d)
            params += (r * (d + f) + f) + (r * (f + d) + d)
            macs += Tp * 2 * r * (d + f)
        params += 4 * d  # self_attn_layer_norm, final_layer_norm
        macs += 2 * Tp * Tp * w  # QK^T and AV of the kept heads
    return params, macs


def _heads_per_layer(ckpt):
    weights = ckpt["model_weight"]
    cfg = ckpt["model_cfg"]
    hd = cfg["encoder_embed_dim"] // cfg["encoder_attention_heads"]
    return [weights[f"encoder.layers.{i}.self_attn.q_proj.weight"].shape[0] // hd for i in range(LAYERS)]


def test_parameters_and_macs_against_hand_count(benchmark, base_ckpt, variants, variant_macs):
    benchmark.group = "parameters and MACs (exact counts)"
    from s3prl_redundancy.compression.cost import count_module_parameters, parameter_counts

    cfg = base_ckpt["model_cfg"]
    samples = int(round(SECONDS * SAMPLE_RATE))

    def measure():
        out = {}
        for name in VARIANTS:
            ckpt, module = variants[name]
            params = parameter_counts(ckpt["model_weight"])["inference"] if ckpt is not None else \
                count_module_parameters(module)
            out[name] = (params, variant_macs[name])
        return out

    measured = benchmark.pedantic(measure, rounds=1, iterations=1)
    heads = _heads_per_layer(variants["head_pruned"][0])
    hand = {"full": hand_count(cfg, samples),
            **{f"pruned_{k}": hand_count(cfg, samples, layers=k) for k in KEEP},
            "distilled": hand_count(cfg, samples, mimicker_hidden=DISTILL_HIDDEN),
            "head_pruned": hand_count(cfg, samples, heads_kept=heads),
            "low_rank": hand_count(cfg, samples, rank=LOW_RANK)}
    assert sum(heads) == 72

    context = {"audio_seconds": SECONDS, "mac_tolerance": MAC_TOLERANCE}
    full_p, full_m = measured["full"]
    for name in VARIANTS:
        (p, m), (hp, hm) = measured[name], hand[name]
        record_ratios(benchmark, f"{name}: parameters / hand count", [p / hp], "hand count from the config",
                      target="== 1")
        record_ratios(benchmark, f"{name}: MACs / hand count", [m / hm], "hand count from the config",
                      target=f"<= {1 + MAC_TOLERANCE}")
        if name != "full":
            record_ratios(benchmark, f"{name}: parameters / full", [p / full_p], "full model's parameters")
            record_ratios(benchmark, f"{name}: MACs / full", [m / full_m], "full model's MACs")
        context[f"{name}_parameters"] = p
        context[f"{name}_macs_per_audio_s"] = m / SECONDS
    record_context(benchmark, **context)
    for name in VARIANTS:
        (p, m), (hp, hm) = measured[name], hand[name]
        assert p == hp, (name, p, hp)
        assert m == pytest.approx(hm, rel=MAC_TOLERANCE), (name, m, hm)
