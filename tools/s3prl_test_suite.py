"""Run s3prl's own offline test suite against the installed s3prl (with this plugin installed) as a regression check.

s3prl's test files ship in its sdist (Apache-2.0), not in the installed package: the sdist of the installed
version is downloaded with pip (or taken from ``--sdist``), only its ``test/`` folder is extracted into
``--work`` (so the *installed* s3prl is what is tested, not the sdist's copy), and pytest runs it as shipped.

Left out, each for a stated reason (s3prl's own gates, plus the tests that need a network):

- markers ``corpus`` (a dataset on disk), ``upstream`` (downloads pretrained checkpoints), ``slow``,
  ``extra_dependency`` (flashlight / kenlm decoders);
- modules whose every test is ``corpus``-marked: they import s3prl's dev-only dependencies (python-dotenv,
  tensorboard) at the top, so they are not even collected;
- ``NETWORK`` below: tests that download at run time;
- ``NO_FIXTURE`` below: two offline tests whose fixture is not in the sdist.

Everything else must pass: the script exits 1 unless pytest passes with exactly ``EXPECTED_PASSED`` tests.
Usage: ``python tools/s3prl_test_suite.py [--work build/s3prl-tests] [--sdist s3prl-X.tar.gz]``.
"""

import argparse
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

MARKERS = "not corpus and not upstream and not slow and not extra_dependency"
CORPUS_ONLY = ("er", "fluent_commands", "librispeech", "quesst14", "snips", "speech_commands", "vocabulary", "voxceleb1sid")
NETWORK = {
    "test/test_download.py::test_download": "downloads a checkpoint from dl.fbaipublicfiles.com",
    "test/test_g2p.py::test_g2p": "G2P downloads its lexicon on first use",
}
NO_FIXTURE = {  # offline, but their `helpers` fixture lives in s3prl's repository conftest.py, not in the sdist
    "test/test_linear.py::test_FrameLevel": "needs the `helpers` fixture, not shipped in the sdist",
    "test/test_rnn.py::test_rnn": "needs the `helpers` fixture, not shipped in the sdist",
}
EXPECTED_PASSED = 29


def fetch_sdist(s3prl_version: str, folder: Path) -> Path:
    sdist = folder / f"s3prl-{s3prl_version}.tar.gz"
    if not sdist.is_file():
        pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps"]
        subprocess.run(pip + ["--no-binary", ":all:", f"s3prl=={s3prl_version}", "-d", str(folder)], check=True)
    return sdist


def extract_tests(sdist: Path, work: Path) -> Path:
    """Only ``test/`` goes to ``work``, never the sdist's ``s3prl/`` (which would shadow the installed one)."""
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            relative = m.name.split("/", 1)[-1]  # drop the sdist's top folder, s3prl-X/
            if m.isfile() and relative.startswith("test/"):
                m.name = relative
                members.append(m)
        tar.extractall(work, members=members, filter="data")
    return work / "test"


def run_pytest(work: Path) -> Path:
    # our own pytest.ini in `work`: it makes `work` the rootdir (so this checkout's setup.cfg is not used) and
    # registers s3prl's markers
    markers = "".join(f"\n    {m}: s3prl marker" for m in ("corpus", "upstream", "slow", "extra_dependency"))
    (work / "pytest.ini").write_text(f"[pytest]\nmarkers ={markers}\n")
    report = work / "report.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "-m", MARKERS,
               f"--junitxml={report}", "test"]
    command += [f"--ignore=test/test_{name}.py" for name in CORPUS_ONLY]
    command += [f"--deselect={test}" for test in {**NETWORK, **NO_FIXTURE}]
    subprocess.run(command, cwd=work)
    return report


def outcome(report: Path) -> dict:
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/s3prl-tests"))
    parser.add_argument("--sdist", type=Path, help="an s3prl sdist to take the tests from (default: pip download)")
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    s3prl_version = version("s3prl")
    sdist = args.sdist or fetch_sdist(s3prl_version, args.work)
    extract_tests(sdist, args.work)
    print(f"== s3prl {s3prl_version}'s offline tests; not run: "
          + "; ".join(f"{t} ({why})" for t, why in {**NETWORK, **NO_FIXTURE}.items()), flush=True)
    start = time.perf_counter()
    counts = outcome(run_pytest(args.work))
    print(f"== s3prl suite: {counts['passed']} passed, {counts['failures']} failed, {counts['errors']} errors, "
          f"{counts['skipped']} skipped in {time.perf_counter() - start:.0f} s (expected {EXPECTED_PASSED} passed)")
    ok = counts["passed"] == EXPECTED_PASSED and counts["failures"] == counts["errors"] == counts["skipped"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
