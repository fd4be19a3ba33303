"""Cost of any s3prl upstream for the leaderboard: parameters, MACs and latency per second of audio.

Nothing is counted twice in this project: this module only combines what exists.

* MACs: :func:`s3prl_redundancy.compression.cost.count_macs` (``FlopCounterMode`` over one forward, FLOPs / 2,
  with the CPU fused-attention formula added), on the CPU copy of the upstream. MACs do not depend on the
  device, so they are always counted on CPU.
* Latency: :func:`s3prl_redundancy.compression.cost.time_side_by_side`: the upstreams take turns within every
  repeat (alternating order) and the median is kept, so machine load affects them alike; on CUDA it
  synchronises around every call. Measured on ``device``.
* Parameters: ``total`` is every parameter of the upstream module as s3prl's hub entry builds it (for
  HuBERT / wav2vec 2.0 this includes the small pre-training heads s3prl keeps); ``stack`` is the transformer
  stack as :func:`s3prl_redundancy.distill.teacher.stack_parameters` defines it (``encoder.layers`` plus the
  final layer norm of pre-LN models), or the mimicker of a distilled upstream (what replaced the stack).

All figures are per second of audio: MACs and latency of one forward on ``seconds`` of audio, divided by
``seconds``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

SAMPLE_RATE = 16000


def _inner_model(upstream: nn.Module) -> Optional[nn.Module]:
    model = getattr(upstream, "model", None)
    if isinstance(model, nn.Module) and isinstance(getattr(getattr(model, "encoder", None), "layers", None), nn.ModuleList):
        return model
    return None


def stack_parameters(upstream: nn.Module) -> Optional[int]:
    """Parameters of the transformer stack (see the module docstring); None when the upstream has neither a
    fairseq-style ``model.encoder.layers`` nor a distilled ``student.mimicker``."""
    from ..compression.cost import count_module_parameters
    from ..distill.teacher import stack_parameters as teacher_stack_parameters

    model = _inner_model(upstream)
    if model is not None:
        return int(teacher_stack_parameters(model))
    mimicker = getattr(getattr(upstream, "student", None), "mimicker", None)
    if isinstance(mimicker, nn.Module):
        return count_module_parameters(mimicker)
    return None


def parameter_summary(upstream: nn.Module) -> Dict[str, Optional[int]]:
    """``{"total": ..., "stack": ...}`` (see the module docstring)."""
    from ..compression.cost import count_module_parameters

    return {"total": count_module_parameters(upstream), "stack": stack_parameters(upstream)}


def measure_upstream_costs(
    upstreams: Mapping[str, nn.Module],
    seconds: float = 1.0,
    repeats: int = 5,
    device: Any = "cpu",
    warmup: int = 1,
) -> Dict[str, Dict[str, Any]]:
    """Cost of several upstreams measured side by side (comparable latencies).

    upstreams: ``{label: upstream}`` (s3prl upstream modules, e.g. from
    :func:`s3prl_redundancy.upstream_loading.load_upstream`); they are moved to CPU to count MACs and then to
    ``device`` for timing. Returns per label ``{"params_total", "params_stack", "macs_per_second",
    "latency_seconds_per_second", "latency_seconds", "audio_seconds", "repeats", "device", "threads"}``.
    """
    from ..compression.cost import count_macs, reference_waveform, time_side_by_side
    from ..upstream_loading import resolve_device

    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = resolve_device(device)
    out: Dict[str, Dict[str, Any]] = {}
    for label, upstream in upstreams.items():
        upstream.eval()
        upstream.to("cpu")
        params = parameter_summary(upstream)
        macs = count_macs(upstream, seconds)
        out[label] = {"params_total": params["total"], "params_stack": params["stack"],
                      "macs_per_second": macs / seconds}
    wav = reference_waveform(seconds).to(dev)
    fns = {}
    for label, upstream in upstreams.items():
        upstream.to(dev)
        fns[label] = (lambda up: (lambda: up([wav])))(upstream)
    latency = time_side_by_side(fns, repeats=repeats, warmup=warmup, device=dev)
    for label in upstreams:
        out[label].update(
            latency_seconds=latency[label],
            latency_seconds_per_second=latency[label] / seconds,
            audio_seconds=float(seconds),
            repeats=int(repeats),
            device=str(dev),
            device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            threads=torch.get_num_threads(),
        )
    return out


def measure_upstream_cost(upstream: nn.Module, seconds: float = 1.0, repeats: int = 5, device: Any = "cpu") -> Dict[str, Any]:
    """:func:`measure_upstream_costs` for one upstream."""
    return measure_upstream_costs({"upstream": upstream}, seconds=seconds, repeats=repeats, device=device)["upstream"]


__all__ = ["stack_parameters", "parameter_summary", "measure_upstream_costs", "measure_upstream_cost"]
