"""`s3prl-redundancy demo --quick` end to end: every report section has real content; a rerun reuses stages."""

import base64
import json
import re
import shutil

import pytest

from s3prl_redundancy.testing.processes import run_python

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is needed for the corpus (apt-get install espeak-ng)"),
]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = run_python(["-m", "s3prl_redundancy.cli", "demo", "--quick", "--out", str(out)], cwd=out.parent, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_every_report_section_has_content(demo_out):
    out, _ = demo_out
    md = (out / "report.md").read_text()
    sections = re.split(r"^## ", md, flags=re.M)[1:]
    titles = [s.splitlines()[0] for s in sections]
    assert titles[:4] == ["1. Layer similarity", "2. Layer pruning (no post-training)",
                          "3. Distillation into mimicking layers", "4. SUPERB-style evaluation and leaderboard"]
    similarity = json.loads((out / "similarity" / "similarity.json").read_text())
    assert len(similarity["layers"]) == 7 and set(similarity["metrics"]) >= {"cosine", "cka", "debiased_cka", "mknn"}
    assert re.search(r"\| cka \| 0\.\d{3} \|", sections[0])  # the CKA summary row carries numbers
    for strategy in ("backward", "block-influence"):
        manifest = json.loads((out / f"pruned_{strategy.replace('-', '_')}" / "manifest.json").read_text())
        assert len(manifest["removed_layers"]) == 2 and len(manifest["keep_layers"]) == 4  # 40% of 6 layers
        assert f"| {strategy} | {manifest['keep_layers']} |" in sections[1]
    assert re.search(r"\| parameters \| [\d,]+ \| [\d,]+ \| 0\.0\d+ \|", sections[2])  # replaced stack, a few percent
    board = json.loads((out / "superb" / "leaderboard.json").read_text())
    rows = board["rows"] if isinstance(board, dict) and "rows" in board else board
    assert len(rows) == 4
    assert sections[3].count("\n| ") >= 5  # header + 4 upstreams
    for name in ("original", "pruned_block_influence", "pruned_backward", "distilled"):
        assert re.search(rf"\| {name} \| \d+(\.\d+)? \|", sections[3]), name  # a KS accuracy for every upstream


def test_html_is_self_contained_with_real_plots(demo_out):
    out, _ = demo_out
    page = (out / "report.html").read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) >= 5 and "src='similarity" not in page
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000  # a real plot, not an empty canvas


def test_second_run_reuses_every_stage(demo_out):
    out, _ = demo_out
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    proc = run_python(["-m", "s3prl_redundancy.cli", "demo", "--quick", "--out", str(out)], cwd=out.parent, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("reused") == 6  # corpus, similarity, 2 x prune, distill, superb
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
