"""``s3prl-redundancy run-downstream ARGS``: s3prl's run_downstream with our hub entries (same arguments).

Exactly ``python -m s3prl.run_downstream ARGS``, with the compatibility layer applied and our hub entries
registered explicitly, for environments where the ``.pth`` start-up hook is disabled.

One difference, for CPU machines: s3prl's ``--device`` defaults to ``cuda`` and ``-m evaluate -e CKPT`` does not
take the device from the checkpoint (``device`` is among the arguments a resumed run keeps from the command
line), so on a machine without CUDA an evaluation without ``--device`` fails with "Torch not compiled with CUDA
enabled". When ``--device`` is not given and CUDA is not available, this command passes ``--device cpu`` and
says so."""

from __future__ import annotations

import runpy
import sys
from typing import List

PASS_THROUGH = True


def with_device(argv: List[str], cuda_available: bool) -> List[str]:
    """``argv`` with ``--device cpu`` added when no device is given and CUDA is not available."""
    given = any(a == "--device" or a.startswith("--device=") for a in argv)
    if given or cuda_available or any(a in ("-h", "--help") for a in argv):
        return list(argv)
    print("[s3prl-redundancy] no CUDA on this machine and no --device given: passing --device cpu "
          "(s3prl's default is cuda, also for -m evaluate -e CKPT)", file=sys.stderr, flush=True)
    return [*argv, "--device", "cpu"]


def run(argv: List[str]) -> int:
    import torch

    from .. import compat

    compat.apply()
    import s3prl.hub

    from ..hub_registration import register

    register(s3prl.hub)
    sys.argv = ["run_downstream.py", *with_device(argv, torch.cuda.is_available())]
    try:
        runpy.run_module("s3prl.run_downstream", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0
