"""Imported at interpreter start-up by ``s3prl_redundancy_hub.pth``; must stay cheap (no torch, no s3prl).

Installs an import watcher on ``sys.meta_path`` that acts only when one of three modules is imported:

- after ``torchaudio`` has run: add the torchaudio shims (:func:`s3prl_redundancy.compat.apply_torchaudio`,
  cheap), so a worker process that uses torchaudio without importing s3prl (s3prl's joblib helpers) has them;
- before ``s3prl`` runs: apply all of :mod:`s3prl_redundancy.compat` (so s3prl 0.4.18 imports on this stack);
- after ``s3prl.hub`` has run: add the plugin hub entries (``pruned_hubert``, ...) to it.

So ``python -m s3prl.run_downstream -u pruned_hubert`` and ``import s3prl.hub`` work in any process
without importing this package first. ``S3PRL_REDUNDANCY_DISABLE=1`` (or ``true`` / ``yes``) turns it off;
``0``, ``false``, ``no`` or empty leave it on.
"""

import os
import sys

_WATCHED = ("torchaudio", "s3prl", "s3prl.hub")
DISABLE_VARIABLE = "S3PRL_REDUNDANCY_DISABLE"
_TRUE = ("1", "true", "yes", "on")


def disabled(environ=os.environ) -> bool:
    """Whether ``S3PRL_REDUNDANCY_DISABLE`` asks to turn the hook off (``1``/``true``/``yes``/``on``, any case)."""
    return environ.get(DISABLE_VARIABLE, "").strip().lower() in _TRUE


def _before(name):
    if name == "s3prl":
        from s3prl_redundancy import compat

        compat.apply()


def _after(name):
    if name == "torchaudio":
        from s3prl_redundancy import compat

        compat.apply_torchaudio()
    elif name == "s3prl.hub":
        try:
            from s3prl_redundancy.hub_registration import register

            register(sys.modules["s3prl.hub"])
        except Exception as e:  # never break `import s3prl.hub` for the user
            import warnings

            warnings.warn(f"s3prl_redundancy could not register its hub entries: {type(e).__name__}: {e}")


class S3prlImportWatcher:
    """A meta-path finder that finds nothing itself: it wraps the real loader of the watched modules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module, _original=original, _name=fullname):
            _before(_name)
            _original(module)
            _after(_name)

        loader.exec_module = exec_module  # instance attribute: the loader keeps its type and other methods
        return spec


def installed() -> bool:
    """Whether the watcher is active in this process."""
    return any(isinstance(f, S3prlImportWatcher) for f in sys.meta_path)


def install():
    if disabled() or installed():
        return
    if "torchaudio" in sys.modules:  # imported before us (not via the .pth): apply directly
        _after("torchaudio")
    if "s3prl" in sys.modules:
        _before("s3prl")
        if "s3prl.hub" in sys.modules:
            _after("s3prl.hub")
    sys.meta_path.insert(0, S3prlImportWatcher())


install()
