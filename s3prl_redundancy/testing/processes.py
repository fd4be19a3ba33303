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
