"""`s3prl-redundancy doctor`: the checks, their fix lines and the exit status."""

import json
import re

import pytest

from s3prl_redundancy.testing.processes import run_python
from s3prl_redundancy.commands import doctor


def _doctor(tmp_path, *args, env=None):
    return run_python(["-m", "s3prl_redundancy.cli", "doctor", *args], cwd=tmp_path, env=env)


@pytest.mark.slow
def test_doctor_on_this_stack_passes(tmp_path):
    out = _doctor(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    cells = [re.split(r"\s{2,}", line.strip()) for line in out.stdout.splitlines()]
    rows = {c[0]: c[1:] for c in cells if len(c) == 3}  # check: [status, detail]
    assert rows["check"] == ["status", "detail"]
    for package in doctor.TESTED:
        assert rows[package][0] in ("ok", "warn")
    assert rows["start-up hook"] == ["ok", "s3prl_redundancy_hub.pth installed and active"]
    assert rows["torchaudio native"][0] == rows["s3prl import"][0] == "ok"
    assert "torchaudio.set_audio_backend" in rows["compat shims"][1] and "huggingface_hub.HfFolder" in rows["compat shims"][1]
    assert out.stdout.strip().endswith("all essential checks pass")


@pytest.mark.slow
def test_doctor_reports_a_disabled_hook_and_missing_espeak_with_their_fixes(tmp_path):
    """S3PRL_REDUNDANCY_DISABLE=1 fails an essential check (exit 1); no espeak-ng on PATH is a warning with its fix."""
    bin_dir = tmp_path / "bin"  # a PATH with python but without espeak-ng
    bin_dir.mkdir()
    env = {"S3PRL_REDUNDANCY_DISABLE": "1", "PATH": str(bin_dir)}
    out = _doctor(tmp_path, "--json", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads(out.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert checks["start-up hook"]["status"] == "FAIL"
    assert checks["start-up hook"]["fix"] == "unset S3PRL_REDUNDANCY_DISABLE"
    assert checks["espeak-ng"] == {
        "name": "espeak-ng",
        "status": "warn",
        "detail": "not found: `corpus` cannot synthesise the mini-SUPERB corpus",
        "fix": "apt-get install espeak-ng",
    }
    assert checks["s3prl import"]["status"] == "ok"  # the doctor applied the shims itself to check the rest


def test_cpu_torch_with_cuda_linked_torchaudio_gets_the_strip_command(monkeypatch, tmp_path):
    import torch

    if torch.version.cuda is not None:
        pytest.skip("needs a CPU torch")
    fake_lib = tmp_path / "libtorchaudio.so"
    fake_lib.write_bytes(b"")
    monkeypatch.setattr(doctor, "torchaudio_native_libs", lambda: [fake_lib])
    check = doctor.check_torchaudio()
    assert (check.status, check.fix) == ("FAIL", "s3prl-redundancy doctor --strip-torchaudio-cuda-libs")
    assert doctor.strip_torchaudio_cuda_libs() == [fake_lib] and not fake_lib.exists()


def test_this_torchaudio_imports():
    assert doctor.check_torchaudio().status == "ok"


def test_untested_and_missing_versions(monkeypatch):
    found = {"torch": "2.13.0+cpu", "torchaudio": "2.10.0", "s3prl": None, "transformers": None, "huggingface_hub": "2.4.0"}
    monkeypatch.setattr(doctor, "_version", found.get)
    checks = {c.name: c for c in doctor.check_versions()}
    assert checks["torch"].status == "ok"
    assert (checks["torchaudio"].status, checks["torchaudio"].fix) == ("warn", "to match the tests: pip install torchaudio==2.11.0")
    assert (checks["s3prl"].status, checks["s3prl"].fix) == ("FAIL", "pip install s3prl==0.4.18")
    assert checks["transformers"].status == "warn"  # only the transformers export needs it


def test_startup_hook_checks(monkeypatch):
    monkeypatch.delenv("S3PRL_REDUNDANCY_DISABLE", raising=False)
    assert doctor.check_startup_hook().status == "ok"  # this test process started with the hook
    monkeypatch.setenv("S3PRL_REDUNDANCY_DISABLE", "yes")
    check = doctor.check_startup_hook()
    assert check.status == "FAIL" and "S3PRL_REDUNDANCY_DISABLE=yes" in check.detail
    monkeypatch.setattr(doctor, "_pth_files", lambda: [])
    assert doctor.check_startup_hook().fix == "pip install --force-reinstall --no-deps s3prl-redundancy"


def test_table_prints_a_fix_line_under_each_problem():
    table = doctor.render_table([doctor.Check("a", "ok", "fine"), doctor.Check("bb", "warn", "missing", "do this")])
    assert table.splitlines() == [
        "check  status  detail",
        "a      ok      fine",
        "bb     warn    missing",
        "               fix: do this",
    ]


def test_compat_records_what_it_added():
    """`applied()` is what apply() added to the real modules, each once (the doctor's "compat shims" row)."""
    from s3prl_redundancy import compat

    added = compat.apply()
    assert "torchaudio.set_audio_backend" in added  # this stack's torchaudio (2.11) lacks it
    assert set(added) <= set(compat.applied()) and len(set(compat.applied())) == len(compat.applied())
