"""Fresh Python processes for tests that must not share this process's state (s3prl's hub, torch threads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .. import downstream_recipes

# the example downstream recipes shipped with the package (``downstream_recipes/`` of a checkout)
RECIPES = Path(downstream_recipes.__file__).resolve().parent


def run_python(code_or_args, cwd, env=None, timeout=300):
    """Run a fresh Python process (no state from this one) and return the CompletedProcess."""
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def interrupt_at_step(monkeypatch, owner, method: str, step: int) -> None:
    """Make ``owner.method(self, step, ...)`` raise ``KeyboardInterrupt`` when called for ``step`` (0-based):
    a run killed mid-step, after its last checkpoint. ``monkeypatch.undo()`` (or the test's end) restores it."""
    original = getattr(owner, method)

    def interrupted(self, at, *args, **kwargs):
        if at == step:
            raise KeyboardInterrupt("simulated crash")
        return original(self, at, *args, **kwargs)

    monkeypatch.setattr(owner, method, interrupted)


def gloo_rank(rank: int, world: int, init_file: str, target, config, out: str) -> None:
    """One rank of a CPU (gloo) process group running ``target(config)``; a failure leaves its traceback in
    ``out/rank<r>.err`` (read by :func:`run_gloo_ranks`). ``target`` must be importable (spawn pickles it)."""
    import traceback

    import torch
    import torch.distributed as dist

    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        target(config)
        dist.destroy_process_group()
    except Exception:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def run_gloo_ranks(target, config, out, store, world: int = 2, timeout: float = 120.0) -> None:
    """``target(config)`` (e.g. ``distill(DistillConfig(...))``) in ``world`` spawned gloo ranks (rendezvous
    file ``store``, tracebacks in ``out``); raises ``AssertionError`` with every failed rank's traceback."""
    import torch.multiprocessing as mp

    ctx = mp.start_processes(gloo_rank, args=(world, str(store), target, config, str(out)), nprocs=world,
                             join=False, start_method="spawn")
    try:
        while not ctx.join(timeout=timeout):
            pass
    except Exception:
        errors = "\n".join(p.read_text() for p in Path(out).glob("rank*.err"))
        raise AssertionError(f"a rank failed:\n{errors}") from None


def capture_default_download(monkeypatch, family: str, local_ckpt) -> dict:
    """The URL s3prl's own default entry of ``family`` downloads (``asked["s3prl"]``, caught before any network
    access), and s3prl's downloader patched to record what our code asks for (``asked["ours"]``) and serve
    ``local_ckpt`` instead."""
    import importlib

    import pytest
    import s3prl.util.download as download

    from ..families import FAMILIES

    hubconf = importlib.import_module(f"s3prl.upstream.{family}.hubconf")
    asked = {}

    class Stop(Exception):
        pass

    def capture(url, refresh=False, **kw):
        asked["s3prl"] = url
        raise Stop

    monkeypatch.setattr(hubconf, "_urls_to_filepaths", capture)  # stays: nothing may reach s3prl's own path
    with pytest.raises(Stop):
        getattr(hubconf, FAMILIES[family].default_entry)()

    def fake_download(url, refresh=False, **kw):
        asked["ours"] = url
        return str(local_ckpt)

    monkeypatch.setattr(download, "_urls_to_filepaths", fake_download)
    return asked
