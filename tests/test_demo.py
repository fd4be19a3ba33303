"""`s3prl-redundancy demo --quick` end to end: every report section has real content, the headline table is a
measurement with paired intervals of at most +-5 points; a rerun reuses stages."""

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


QUICK = False
"""The quick demo shrinks the pipeline-check stages; the measured probe keeps the full demo's size (PROBE), so the
width goal of the headline table is checked as `make demo` meets it."""
PROBE = ["--probe-voices", "120"]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = run_python(["-m", "s3prl_redundancy.cli", "demo", "--quick", *PROBE, "--out", str(out)], cwd=out.parent,
                      timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_every_report_section_has_content(demo_out):
    out, _ = demo_out
    md = (out / "report.md").read_text()
    sections = re.split(r"^## ", md, flags=re.M)[1:]
    titles = [s.splitlines()[0] for s in sections]
    assert titles[:5] == ["1. Layer similarity", "2. Layer pruning (no post-training)",
                          "3. Distillation into mimicking layers",
                          "4. Measured: capacity kept on keyword spotting, unseen voices",
                          "5. Pipeline check: SUPERB tasks through s3prl's run_downstream"]
    similarity = json.loads((out / "similarity" / "similarity.json").read_text())
    assert len(similarity["layers"]) == 7 and set(similarity["metrics"]) >= {"cosine", "cka", "debiased_cka", "mknn"}
    assert re.search(r"\| cka \| 0\.\d{3} \|", sections[0])  # the CKA summary row carries numbers
    for strategy in ("backward", "block-influence"):
        manifest = json.loads((out / f"pruned_{strategy.replace('-', '_')}" / "manifest.json").read_text())
        assert len(manifest["removed_layers"]) == 2 and len(manifest["keep_layers"]) == 4  # 40% of 6 layers
        assert f"| {strategy} | {manifest['keep_layers']} |" in sections[1]
    assert re.search(r"\| parameters \| [\d,]+ \| [\d,]+ \| 0\.0\d+ \|", sections[2])  # replaced stack, a few percent
    # the whole upstream: the light front end's student beside the teacher-front-end one
    assert re.search(r"\| distilled \| teacher's \(frozen\) \| 0\.\d{3} \|", sections[2])
    assert re.search(r"\| distilled_light \| light \(\d+ channels\) \| 0\.\d{3} \|", sections[2])
    board = json.loads((out / "superb" / "leaderboard.json").read_text())
    rows = board["rows"] if isinstance(board, dict) and "rows" in board else board
    assert len(rows) == 5
    assert sections[4].count("\n| ") >= 6  # header + 5 upstreams
    for name in ("original", "pruned_block_influence", "pruned_backward", "distilled", "distilled_light"):
        # a KS accuracy with its 95 % interval for every upstream
        assert re.search(rf"\| {name} \| \d+\.\d \[\d+\.\d, \d+\.\d\] \|", sections[4]), name
    assert "SUPERB score over KS, SID" in sections[4] and "not a measurement" in sections[4]
    # no capacity above 1 without its interval, and parameters with thousands separators
    capacity = sections[4].split("Capacity kept relative to")[1].split("Cost")[0]
    for value in re.findall(r"\| (\d+\.\d\d)( \[[^\]]+\])? \|", capacity):
        assert float(value[0]) <= 1.0 or value[1], value
    assert re.search(r"\| original \| \d{1,3}(,\d{3})+ \|", sections[4])


def test_headline_table_is_a_measurement_with_paired_intervals(demo_out):
    """The table that states how much capacity compression keeps: paired 95 % intervals on every compressed
    model; in the full demo (not --quick) none reaches more than 5 points from its estimate."""
    out, _ = demo_out
    md = (out / "report.md").read_text()
    section = re.split(r"^## ", md, flags=re.M)[4]
    probe = json.loads((out / "probe" / "probe.json").read_text())
    assert probe["test_clips"] == 10 * probe["test_voices"]
    for name in ("pruned_block_influence", "pruned_backward", "distilled", "distilled_light"):
        cap = probe["rows"][name]["capacity"]
        assert cap["low"] <= cap["point"] <= cap["high"] and cap["verdict"] in ("indistinguishable", "distinguishable")
        interval = r"\d+\.\d \[\d+\.\d, \d+\.\d\] \| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \| (in)?distinguishable"
        assert re.search(rf"\| {name} \| {interval} \| {interval} \|", section), name  # both views
        for view in (cap, probe["rows"][name]["last_layer"]["capacity"]):
            if not QUICK:
                assert max(view["point"] - view["low"], view["high"] - view["point"]) <= 0.05, (name, view)
    assert probe["meets_width_goal"] or QUICK


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
    proc = run_python(["-m", "s3prl_redundancy.cli", "demo", "--quick", *PROBE, "--out", str(out)], cwd=out.parent,
                      timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("reused") == 8  # corpus, similarity, 2 x prune, 2 x distill, probe, superb
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
