"""What a model costs: parameters, multiply-accumulates and measured latency -- the one place that counts.

Every other module (``distill.report``, ``superb.cost``, ``compress``, the benchmarks) uses these helpers:

* **Parameters**: :func:`parameter_counts` of a state dict: ``total`` counts every tensor (as
  ``layers.count_parameters``); ``inference`` only those on the path of s3prl's forward
  (``feature_extractor``, ``layer_norm``, ``post_extract_proj``, ``encoder``), leaving out pre-training heads
  (quantiser, ``final_proj``, label embeddings, ``mask_emb``); ``nonzero`` counts the inference parameters
  that are not exactly 0. :func:`count_module_parameters` counts the parameters of a live module.
* **MACs**: :func:`macs` of any callable, :func:`count_macs` of one upstream forward on ``seconds`` of audio:
  ``torch.utils.flop_counter.FlopCounterMode``, divided by 2 (matrix products, convolutions and attention;
  not norms, activations or bias additions). On CPU, PyTorch's flop counter has no formula for the fused
  attention kernel (``_scaled_dot_product_flash_attention_for_cpu``), so it is added here with PyTorch's own
  SDPA formula; without it the ``QK^T`` and ``AV`` products would be missing.
* **Latency**: :func:`time_rounds` / :func:`time_side_by_side`: the functions to compare take turns within
  every round (the order alternates from round to round), so drift in the machine's load hits them alike;
  warm-up first, ``torch.inference_mode`` unless ``grad``, CUDA synchronised around every call. Latency
  depends on the machine: compare only numbers measured in one run, as ratios.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from ..families import FAMILIES, detect_family

INFERENCE_PREFIXES = ("feature_extractor.", "layer_norm.", "post_extract_proj.", "encoder.")
SAMPLE_RATE = 16000


def parameter_counts(state_dict: Mapping[str, Any]) -> Dict[str, int]:
    """``total``, ``inference``, ``transformer_layers`` and ``nonzero`` (inference) parameter counts."""
    total = inference = layers = nonzero = 0
    for key, value in state_dict.items():
        if not hasattr(value, "numel"):
            continue
        n = int(value.numel())
        total += n
        if key.startswith(INFERENCE_PREFIXES):
            inference += n
            nonzero += int(torch.count_nonzero(value)) if value.is_floating_point() else n
            if key.startswith("encoder.layers."):
                layers += n
    return {"total": total, "inference": inference, "transformer_layers": layers, "nonzero": nonzero}


def count_module_parameters(module: torch.nn.Module) -> int:
    """Parameters of a live module (shared tensors once, as ``module.parameters()`` yields them)."""
    return int(sum(p.numel() for p in module.parameters()))


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_flop_mapping() -> Dict[Any, Callable]:
    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    return mapping


def reference_waveform(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(int(round(seconds * SAMPLE_RATE)), generator=g) * 0.1


def macs(fn: Callable[[], Any]) -> int:
    """Multiply-accumulates of one call of ``fn`` (FLOPs / 2, fused CPU attention included), in inference mode."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=_custom_flop_mapping()) as counter:
        fn()
    return int(counter.get_total_flops() // 2)


def count_macs(upstream, seconds: float = 1.0) -> int:
    """Multiply-accumulates of one forward of ``upstream`` on ``seconds`` of audio (one utterance)."""
    wav = reference_waveform(seconds)
    return macs(lambda: upstream([wav]))


def _synchronizer(device: Any) -> Callable[[], None]:
    if device is None:
        return lambda: None
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_rounds(fns: Mapping[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1, device: Any = None,
                grad: bool = False) -> Dict[str, List[float]]:
    """Seconds of every call of each function, one list per function, one entry per round.

    In every round each function runs once; the order alternates from round to round (forward, then
    backward), so machine load and cache effects hit all of them alike and ``times[a][r] / times[b][r]`` is a
    ratio measured side by side. ``warmup`` whole rounds run first and are not kept. Calls run under
    ``torch.inference_mode`` unless ``grad`` (training steps); on a CUDA ``device`` the device is
    synchronised before and after every call."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = _synchronizer(device)
    names = list(fns)
    times: Dict[str, List[float]] = {n: [] for n in names}
    context = torch.enable_grad if grad else torch.inference_mode
    with context():
        for _ in range(max(0, warmup)):
            for n in names:
                fns[n]()
        sync()
        for r in range(repeats):
            for n in (names if r % 2 == 0 else names[::-1]):
                sync()
                t0 = time.perf_counter()
                fns[n]()
                sync()
                times[n].append(time.perf_counter() - t0)
    return times


def time_side_by_side(fns: Mapping[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1,
                      device: Any = None, grad: bool = False) -> Dict[str, float]:
    """Median seconds per call of each function, timed side by side (see :func:`time_rounds`)."""
    return {n: statistics.median(v) for n, v in time_rounds(fns, repeats, warmup, device, grad).items()}


def model_cost(ckpt: Mapping[str, Any], seconds: float = 1.0, latency: bool = True, latency_seconds: float = 10.0,
               repeats: int = 3, upstream=None) -> Dict[str, Any]:
    """Parameters, MACs (on ``seconds`` of audio) and, if ``latency``, measured latency of a checkpoint."""
    from .structure import make_upstream

    fam = FAMILIES[detect_family(ckpt)]
    upstream = upstream if upstream is not None else make_upstream(ckpt)
    out: Dict[str, Any] = {"parameters": parameter_counts(fam.weights(ckpt)),
                           "macs": {"value": count_macs(upstream, seconds), "audio_seconds": seconds}}
    if latency:
        wav = reference_waveform(latency_seconds)
        times = time_rounds({"upstream": lambda: upstream([wav])}, repeats=max(1, repeats))["upstream"]
        out["latency"] = latency_summary(times, latency_seconds)
    return out


def latency_summary(times: Sequence[float], audio_seconds: float) -> Dict[str, Any]:
    """The ``latency`` record of a cost report from the per-round times of one model."""
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times),
            "audio_seconds": audio_seconds, "threads": torch.get_num_threads()}


class LayerCostModel:
    """Cost of a layer selection of one (plain) checkpoint, for ``--param-budget`` / ``--latency-budget``.

    * ``parameters(keep)``: exact inference parameters of the checkpoint pruned to ``keep`` (non-layer
      parameters + those of the kept layers; WavLM's position-bias table stays when layer 0 goes);
    * ``latency(keep)``: ``front + len(keep) * per_layer`` seconds, both measured on this machine from the
      full model and the model pruned to one layer (all layers of a model have the same shape, so the
      stack's time is linear in the layer count; ``benchmarks/bench_latency.py`` checks it); the two are
      timed side by side.
    """

    def __init__(self, ckpt: Mapping[str, Any], latency_seconds: float = 10.0, repeats: int = 3) -> None:
        fam = FAMILIES[detect_family(ckpt)]
        self.ckpt, self.family = ckpt, fam.name
        self.num_layers = fam.num_layers(ckpt)
        self.latency_seconds, self.repeats = latency_seconds, repeats
        weights = fam.weights(ckpt)
        self.front = 0
        self.layer = [0] * self.num_layers
        self.bias_table = 0
        for key, value in weights.items():
            if not key.startswith(INFERENCE_PREFIXES) or not hasattr(value, "numel"):
                continue
            if key.startswith("encoder.layers."):
                index = int(key.split(".")[2])
                self.layer[index] += int(value.numel())
                if index == 0 and key.endswith("relative_attention_bias.weight"):
                    self.bias_table = int(value.numel())
            else:
                self.front += int(value.numel())
        self._latency: Optional[Dict[str, float]] = None

    def parameters(self, keep: Sequence[int]) -> float:
        keep = list(keep)
        total = self.front + sum(self.layer[i] for i in keep)
        if keep and 0 not in keep:
            total += self.bias_table
        return float(total)

    def latency_model(self) -> Dict[str, float]:
        if self._latency is None:
            from .layers import prune_checkpoint
            from .structure import make_upstream

            wav = reference_waveform(self.latency_seconds)
            full_up, one_up = make_upstream(self.ckpt), make_upstream(prune_checkpoint(self.ckpt, [0]))
            median = time_side_by_side({"full": lambda: full_up([wav]), "one": lambda: one_up([wav])},
                                       repeats=max(1, self.repeats))
            full, one = median["full"], median["one"]
            per_layer = max(0.0, (full - one) / max(1, self.num_layers - 1))
            self._latency = {"front_s": max(0.0, one - per_layer), "per_layer_s": per_layer, "full_s": full,
                             "audio_seconds": self.latency_seconds}
        return self._latency

    def latency(self, keep: Sequence[int]) -> float:
        m = self.latency_model()
        return m["front_s"] + len(list(keep)) * m["per_layer_s"]

    def functions(self, kinds: Sequence[str] = ("parameters",)) -> Dict[str, Callable[[Sequence[int]], float]]:
        return {k: getattr(self, k) for k in kinds}
