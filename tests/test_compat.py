import argparse
import io
import math
import types

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from s3prl_redundancy.testing.processes import run_python
from s3prl_redundancy import compat


def test_apply_is_idempotent_and_makes_s3prl_importable():
    first = compat.apply()
    assert compat.apply() == first
    import s3prl.hub  # noqa: F401  (fails without the shims on this stack)

    assert callable(torchaudio.set_audio_backend)
    torchaudio.set_audio_backend("sox_io")  # s3prl calls it; a no-op


def _write(path, data, sr):
    soundfile.write(path, data, sr, subtype="FLOAT")


def test_load_save_info_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, size=(8000, 2)).astype(np.float32)
    path = tmp_path / "a.wav"
    _write(path, stereo, 8000)
    wav, sr = torchaudio.load(str(path))
    assert sr == 8000 and wav.shape == (2, 8000) and wav.dtype == torch.float32
    np.testing.assert_allclose(wav.numpy(), stereo.T, atol=0)
    part, _ = torchaudio.load(str(path), frame_offset=100, num_frames=50)
    np.testing.assert_allclose(part.numpy(), stereo[100:150].T, atol=0)
    meta = torchaudio.info(str(path))
    assert (meta.sample_rate, meta.num_frames, meta.num_channels) == (8000, 8000, 2)
    out = tmp_path / "b.wav"
    torchaudio.save(str(out), wav, 8000)  # 16-bit PCM like torchaudio's default
    again, _ = torchaudio.load(str(out))
    assert torchaudio.info(str(out)).bits_per_sample == 16
    np.testing.assert_allclose(again.numpy(), stereo.T, atol=1 / 2**15)


def test_sox_effects_match_independent_computation(tmp_path):
    from torchaudio.functional import resample
    from torchaudio.sox_effects import apply_effects_file, apply_effects_tensor

    rng = np.random.default_rng(1)
    stereo = rng.uniform(-0.5, 0.5, size=(22050, 2)).astype(np.float32)
    path = tmp_path / "s.wav"
    _write(path, stereo, 22050)
    # exactly what s3prl's speech_commands dataset applies
    wav, sr = apply_effects_file(str(path), [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]])
    expected = resample(torch.from_numpy(stereo.T).mean(0, keepdim=True), 22050, 16000) * 10 ** (-3 / 20)
    assert sr == 16000 and wav.shape == expected.shape
    torch.testing.assert_close(wav, expected)
    t, sr2 = apply_effects_tensor(torch.ones(1, 10) * 0.25, 16000, [["norm"]])
    assert sr2 == 16000 and math.isclose(float(t.max()), 1.0, rel_tol=1e-6)
    with pytest.raises(NotImplementedError, match="reverb"):
        apply_effects_tensor(torch.ones(1, 10), 16000, [["reverb", "50"]])


def test_old_torchaudio_is_left_untouched():
    """A torchaudio <= 2.8 has every function; nothing may be replaced."""
    fake = types.ModuleType("fake_torchaudio_28")
    fake.__version__ = "2.8.0"
    fake.set_audio_backend = backend = object()
    fake.load, fake.save, fake.info = load, save, info = object(), object(), object()
    fake.sox_effects = sox = types.ModuleType("fake_torchaudio_28.sox_effects")
    assert compat.patch_torchaudio(fake) == []
    assert (fake.set_audio_backend, fake.load, fake.save, fake.info, fake.sox_effects) == (backend, load, save, info, sox)


def test_new_torchaudio_gets_all_shims():
    fake = types.ModuleType("fake_torchaudio_211")
    fake.__version__ = "2.11.0+cpu"
    fake.load = fake.save = object()
    done = compat.patch_torchaudio(fake)
    assert "torchaudio.set_audio_backend" in done and "torchaudio.sox_effects" in done
    assert fake.load is compat.load and fake.info is compat.info
    assert callable(fake.sox_effects.apply_effects_file)


def test_huggingface_placeholders_fail_clearly():
    fake = types.ModuleType("fake_hub")
    fake.HfFolder = keep = object()
    assert compat.patch_huggingface_hub(fake) == ["huggingface_hub.Repository"]
    assert fake.HfFolder is keep
    with pytest.raises(RuntimeError, match="removed in huggingface_hub 1.0"):
        fake.Repository("dir")


def test_namespace_checkpoints_load_with_weights_only():
    buffer = io.BytesIO()
    torch.save({"Args": argparse.Namespace(a=1), "w": torch.ones(2)}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # as s3prl's runner does on resume / evaluate
    assert loaded["Args"].a == 1


def test_arbitrary_pickles_are_still_refused():
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    buffer = io.BytesIO()
    torch.save({"x": Evil()}, buffer)
    buffer.seek(0)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        torch.load(buffer, weights_only=True)


def test_catalyst_stand_in_splits_a_sampler_across_replicas():
    """The one catalyst class s3prl's KS expert imports: ranks together cover the wrapped sampler's output."""
    from catalyst.data.sampler import DistributedSamplerWrapper

    base = [7, 3, 3, 9, 1, 4, 4, 0, 2]  # any sampler: an iterable of dataset indices with a length
    parts = [list(DistributedSamplerWrapper(base, num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert parts == [[7, 3, 1, 4, 2], [3, 9, 4, 0, 7]]  # interleaved; the last rank padded from the start
    shuffled = [list(DistributedSamplerWrapper(base, num_replicas=2, rank=r, shuffle=True)) for r in range(2)]
    from collections import Counter

    extra = Counter(shuffled[0] + shuffled[1]) - Counter(base)  # every element once, plus one padded repeat
    assert sum(extra.values()) == 1 and set(extra) <= set(base) and not Counter(base) - Counter(shuffled[0] + shuffled[1])


def test_s3prl_keyword_spotting_expert_imports():
    import importlib

    module = importlib.import_module("s3prl.downstream.speech_commands.expert")
    assert module.DistributedSamplerWrapper.__name__ == "DistributedSamplerWrapper"


# ---------------------------------------------------------------- the start-up hook (fresh processes)
_FAKE_TORCHAUDIO_28 = '''
__version__ = "2.8.0"
def set_audio_backend(backend=None): return "real"
def load(*a, **k): return "real"
def save(*a, **k): return "real"
def info(*a, **k): return "real"
from . import sox_effects
'''
_FAKE_TORCHAUDIO_211 = '__version__ = "2.11.0"\ndef load(*a, **k): return "real"\n'
_PROBE = (
    "import sys, torchaudio; from s3prl_redundancy import compat; "
    "print(compat.applied()); print(torchaudio.set_audio_backend.__module__, torchaudio.load.__module__); "
    "print(sorted(m for m in ('torch', 's3prl') if m in sys.modules))"
)


def _fake_torchaudio(root, init_text, with_sox=False):
    package = root / "torchaudio"
    package.mkdir()
    (package / "__init__.py").write_text(init_text)
    if with_sox:
        (package / "sox_effects.py").write_text("def apply_effects_file(*a, **k): return 'real'\n")
    return {"PYTHONPATH": str(root)}


def test_importing_torchaudio_alone_adds_its_shims_without_torch_or_s3prl(tmp_path):
    """Worker processes (joblib) use torchaudio without importing s3prl: the hook acts on `import torchaudio`,
    and cheaply (the fake torchaudio imports nothing, and neither may the hook)."""
    env = _fake_torchaudio(tmp_path, _FAKE_TORCHAUDIO_211)
    out = run_python(_PROBE, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    added, modules, heavy = out.stdout.splitlines()
    assert added == "['torchaudio.set_audio_backend', 'torchaudio.sox_effects', 'torchaudio.load/save/info']"
    assert modules == "s3prl_redundancy.compat s3prl_redundancy.compat" and heavy == "[]"


def test_hook_leaves_a_torchaudio_with_the_real_functions_untouched(tmp_path):
    env = _fake_torchaudio(tmp_path, _FAKE_TORCHAUDIO_28, with_sox=True)
    out = run_python(_PROBE + "; print(torchaudio.sox_effects.apply_effects_file())", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "torchaudio torchaudio", "[]", "real"]


def test_real_torchaudio_in_a_fresh_process_has_the_shims(tmp_path):
    out = run_python("import torchaudio; torchaudio.set_audio_backend('sox_io'); print(torchaudio.sox_effects.__doc__)", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "s3prl_redundancy.compat" in out.stdout


@pytest.mark.slow
def test_s3prl_audio_info_in_joblib_workers(tmp_path):
    """s3prl's own `test_audio_info`: its joblib workers call torchaudio without importing s3prl."""
    code = (
        "from pathlib import Path; from s3prl.util.audio_info import get_audio_info; "
        "from s3prl.util.pseudo_data import pseudo_audio\n"
        "with pseudo_audio([3.0, 4.1]) as (paths, _):\n"
        f"    infos = get_audio_info(paths, [Path(p).stem for p in paths], cache_dir={str(tmp_path)!r}, num_workers=2)\n"
        "print([i['num_frames'] for i in infos])"
    )
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[48000, 65600]"


@pytest.mark.parametrize("value, active", [("", True), ("0", True), ("false", True), ("No", True),
                                           ("1", False), ("TRUE", False), ("yes", False)])
def test_disable_switch(tmp_path, value, active):
    out = run_python("from s3prl_redundancy import _autoload; print(_autoload.installed())", cwd=tmp_path,
                     env={"S3PRL_REDUNDANCY_DISABLE": value})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(active)


def test_disabled_reads_the_variable_case_insensitively():
    from s3prl_redundancy._autoload import disabled

    assert not disabled({}) and not disabled({"S3PRL_REDUNDANCY_DISABLE": " False "})
    assert disabled({"S3PRL_REDUNDANCY_DISABLE": "Yes"}) and disabled({"S3PRL_REDUNDANCY_DISABLE": "1"})
