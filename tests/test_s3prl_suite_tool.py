"""tools/s3prl_test_suite.py: only the sdist's tests are extracted, and the outcome is read from pytest's report."""

import importlib.util
import io
import tarfile
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "s3prl_test_suite.py"
spec = importlib.util.spec_from_file_location("s3prl_test_suite", TOOL)
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)


def test_only_the_test_folder_is_extracted(tmp_path):
    sdist = tmp_path / "s3prl-0.4.18.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name in ("s3prl-0.4.18/test/test_a.py", "s3prl-0.4.18/s3prl/__init__.py", "s3prl-0.4.18/testing.py"):
            data = b"x = 1\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    work = tmp_path / "work"
    assert suite.extract_tests(sdist, work) == work / "test"
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) == ["test/test_a.py"]


def test_outcome_counts_passed_tests(tmp_path):
    report = tmp_path / "report.xml"
    report.write_text('<testsuites><testsuite tests="33" failures="2" errors="1" skipped="0"/></testsuites>')
    assert suite.outcome(report) == {"tests": 33, "failures": 2, "errors": 1, "skipped": 0, "passed": 30}


def test_every_left_out_test_has_a_reason():
    for test, reason in {**suite.NETWORK, **suite.NO_FIXTURE}.items():
        assert test.startswith("test/test_") and "::" in test and reason
