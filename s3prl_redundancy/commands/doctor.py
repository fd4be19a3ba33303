"""``s3prl-redundancy doctor``: check the stack (versions, torchaudio, shims, start-up hook, espeak-ng, GPU) and print the fix for each problem.

Exit status: 0 when every essential check passes (torch, torchaudio and s3prl import; the start-up hook is
installed and enabled), 1 when one fails. Warnings (a version other than the tested one, espeak-ng missing)
print their fix but do not change the exit status. ``--json`` prints the same checks as one JSON object.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

# The versions this package is tested with (the Makefile's install, docs/install.md).
TESTED = {
    "torch": "2.13.0",
    "torchaudio": "2.11.0",
    "s3prl": "0.4.18",
    "transformers": "5.24.0",
    "huggingface_hub": "2.4.0",
}
REQUIRED = ("torch", "torchaudio", "s3prl", "huggingface_hub")  # transformers: only `export --to transformers`
PTH_NAME = "s3prl_redundancy_hub.pth"
STRIP_COMMAND = "s3prl-redundancy doctor --strip-torchaudio-cuda-libs"


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn" (fix printed, exit status unchanged) or "FAIL" (essential: exit status 1)
    detail: str
    fix: Optional[str] = None


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument(
        "--strip-torchaudio-cuda-libs",
        action="store_true",
        help="remove torchaudio's CUDA-linked native libraries (only on a CPU torch), then check",
    )


# ---------------------------------------------------------------- torchaudio's native libraries
def torchaudio_native_libs() -> List[Path]:
    """torchaudio's native libraries (``torchaudio/lib/*.so``), found without importing torchaudio."""
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "lib").glob("*.so"))


def strip_torchaudio_cuda_libs() -> List[Path]:
    """On a CPU torch, remove torchaudio's native libraries: they link ``libc10_cuda.so``, so ``import torchaudio``
    fails while they exist; without them torchaudio skips its extension and its pure-PyTorch parts (resample,
    kaldi fbank/mfcc, MelSpectrogram) work. Does nothing on a CUDA torch. Returns the files removed."""
    import torch

    if torch.version.cuda is not None:
        return []
    libs = torchaudio_native_libs()
    for lib in libs:
        lib.unlink()
    return libs


# ---------------------------------------------------------------- the checks
def _version(package: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def check_versions() -> List[Check]:
    checks = []
    for package, tested in TESTED.items():
        found = _version(package)
        pin = f"pip install {package}=={tested}"
        if found is None:
            status = "FAIL" if package in REQUIRED else "warn"
            checks.append(Check(package, status, f"not installed (tested: {tested})", pin))
        elif found.split("+")[0] != tested:
            checks.append(Check(package, "warn", f"{found} (tested: {tested}); may work", f"to match the tests: {pin}"))
        else:
            checks.append(Check(package, "ok", f"{found} (tested)"))
    return checks


def check_torchaudio() -> Check:
    name = "torchaudio native"
    try:
        import torch
    except Exception as e:
        return Check(name, "FAIL", f"torch does not import: {type(e).__name__}: {e}", f"pip install torch=={TESTED['torch']}")
    libs = torchaudio_native_libs()
    if torch.version.cuda is None and libs:
        return Check(name, "FAIL", f"{len(libs)} CUDA-linked libraries on a CPU torch: `import torchaudio` fails", STRIP_COMMAND)
    try:
        import torchaudio
    except Exception as e:
        fix = f"install the torchaudio that matches torch {torch.__version__}: pip install torchaudio=={TESTED['torchaudio']}"
        return Check(name, "FAIL", f"torchaudio does not import: {type(e).__name__}: {e}", fix)
    extension = sys.modules.get("torchaudio._extension")
    if getattr(extension, "_IS_TORCHAUDIO_EXT_AVAILABLE", False):
        return Check(name, "ok", f"native library loaded (torchaudio {torchaudio.__version__})")
    return Check(name, "ok", "no native library: pure-PyTorch parts only (all that s3prl needs with the shims)")


def _pth_files() -> List[Path]:
    folders = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
    found = {(Path(folder) / PTH_NAME).resolve() for folder in folders if folder and (Path(folder) / PTH_NAME).is_file()}
    return sorted(found)


def check_startup_hook() -> Check:
    from .. import _autoload

    name = "start-up hook"
    variable = f"{_autoload.DISABLE_VARIABLE}={os.environ.get(_autoload.DISABLE_VARIABLE, '')}"
    if not _pth_files():
        return Check(name, "FAIL", f"{PTH_NAME} is not installed", "pip install --force-reinstall --no-deps s3prl-redundancy")
    if _autoload.disabled():
        return Check(name, "FAIL", f"installed, disabled by {variable}", f"unset {_autoload.DISABLE_VARIABLE}")
    if not _autoload.installed():
        return Check(name, "FAIL", f"{PTH_NAME} installed but not active (python -S / -I?)", "run python without -S / -I")
    return Check(name, "ok", f"{PTH_NAME} installed and active")


def check_s3prl() -> List[Check]:
    """Import ``s3prl.hub`` (which applies the shims through the hook, or here when the hook is off)."""
    from .. import _autoload, compat

    if not _autoload.installed():
        compat.apply()  # so the checks below still tell whether s3prl works with the shims
    try:
        import s3prl.hub as hub
    except Exception as e:
        fix = f"pip install s3prl=={TESTED['s3prl']} (tested), then run `s3prl-redundancy doctor` again"
        return [Check("s3prl import", "FAIL", f"import s3prl.hub fails: {type(e).__name__}: {e}", fix)]
    from ..plugins import upstream_entries

    entries = upstream_entries()
    on_hub = sum(getattr(hub, name, None) is entry for name, entry in entries.items())
    added = compat.applied()
    return [
        Check("s3prl import", "ok", f"s3prl.hub imports; {on_hub}/{len(entries)} plugin entries on it"),
        Check("compat shims", "ok", ", ".join(added) if added else "none needed on this stack"),
    ]


def check_espeak() -> Check:
    if shutil.which("espeak-ng"):
        return Check("espeak-ng", "ok", "found (the mini-SUPERB corpus can be synthesised)")
    return Check("espeak-ng", "warn", "not found: `corpus` cannot synthesise the mini-SUPERB corpus", "apt-get install espeak-ng")


def check_gpu() -> Check:
    try:
        import torch

        if torch.cuda.is_available():
            names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
            return Check("GPU", "ok", f"{torch.cuda.device_count()} visible ({', '.join(names)})")
        build = "CPU build of torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return Check("GPU", "ok", f"none visible ({build}); everything runs on CPU")
    except Exception as e:
        return Check("GPU", "ok", f"unknown ({type(e).__name__})")


def run_checks() -> List[Check]:
    checks = check_versions() + [check_startup_hook(), check_torchaudio()]
    if checks[-1].status == "ok":
        checks += check_s3prl()
    return checks + [check_espeak(), check_gpu()]


# ---------------------------------------------------------------- output
def render_table(checks: List[Check]) -> str:
    width = max([len("check")] + [len(c.name) for c in checks])
    lines = [f"{'check':<{width}}  status  detail"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.status:<6}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<{width}}  {'':<6}  fix: {c.fix}")
    return "\n".join(lines)


def run(args) -> int:
    if args.strip_torchaudio_cuda_libs:
        removed = strip_torchaudio_cuda_libs()
        print(f"removed {len(removed)} CUDA-linked torchaudio libraries" if removed else "nothing to remove")
    checks = run_checks()
    ok = all(c.status != "FAIL" for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(render_table(checks))
        print("all essential checks pass" if ok else "problems found: apply the fix lines above")
    return 0 if ok else 1
