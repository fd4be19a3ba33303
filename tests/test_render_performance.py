"""benchmarks/render_performance.py: a small fake pytest-benchmark JSON -> docs/performance.md content."""

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "render_performance.py"


@pytest.fixture(scope="module")
def rp():
    spec = importlib.util.spec_from_file_location("render_performance", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(group, name, ratios, context=None, device=None, **extra):
    info = {"ratios": ratios, "context": context or {}}
    if device:
        info["device"] = device
    info.update(extra)
    return {"group": group, "name": name, "fullname": f"benchmarks/bench_x.py::{name}", "extra_info": info,
            "stats": {"total": 1.5}}


def fake_run(cuda=False):
    benches = [
        _bench("latency, batch 1, cpu", "test_latency[cpu-1]", {
            "pruned 6/12": {"values": [0.70, 0.72, 0.71], "reference": "full model", "target": "<= 0.75", "floor": 0.68},
            "distilled": {"values": [0.30, 0.45, 0.40], "reference": "full model", "target": None, "floor": 0.35},
        }, context={"full_s_per_audio_s": 0.25, "batch": 1}),
        _bench("distillation", "test_stack", {
            "mlp: latency / teacher stack": {"values": [0.07, 0.071], "reference": "teacher stack", "target": "<= 0.06",
                                             "floor": None},
            "mlp: parameters / teacher stack": {"values": [0.018], "reference": "teacher stack", "target": "<= 0.05",
                                                "floor": None},
        }),
        {"group": "similarity", "name": "test_old_style", "fullname": "benchmarks/bench_similarity.py::test_old_style",
         "extra_info": {"overhead": 1.7}, "stats": {"total": 3.0}},
    ]
    if cuda:
        benches.append(_bench("latency, batch 1, cuda", "test_latency[cuda-1]", {
            "pruned 6/12": {"values": [0.6, 0.61], "reference": "full model", "target": None, "floor": 0.55}},
            device="cuda"))
    bench_info = {"torch": "2.13.0+cpu", "threads": 1, "interop_threads": 2, "cpu_model": "AMD EPYC", "logical_cpus": 2,
                  "load_average_start": [5.1, 4.0, 3.2], "load_average_end": [6.0, 4.5, 3.3], "cuda": None,
                  "audio_seconds": 2.0, "rounds": 3}
    return {"machine_info": {"system": "Linux", "release": "6.1", "python_version": "3.11.2", "bench": bench_info},
            "commit_info": {"id": "abc123"}, "datetime": "2030-01-02T03:04:05+00:00", "version": "5.3.1",
            "benchmarks": benches}


def test_summary_and_targets(rp):
    s = rp.summarise([0.30, 0.45, 0.40])
    assert s["median"] == 0.40 and s["min"] == 0.30 and s["max"] == 0.45
    assert s["spread"] == pytest.approx(0.375)
    assert rp.summarise([2.0])["spread"] == 0.0
    assert rp.check_target("<= 0.06", 0.06) is True and rp.check_target("< 0.06", 0.06) is False
    assert rp.check_target(">= 0.8", 0.9) is True and rp.check_target("== 1", 1.0) is True
    assert rp.check_target(None, 5.0) is None
    with pytest.raises(ValueError):
        rp.check_target("about 1", 1.0)


def test_page_flags_unstable_and_missed_cases(rp):
    page = rp.render(fake_run())
    assert page.startswith("# Performance\n")
    for header in ("2030-01-02T03:04:05+00:00", "AMD EPYC", "Threads: 1 intra-op", "torch 2.13.0+cpu", "abc123",
                   "load average (1, 5, 15 min) [5.1, 4, 3.2] when the run began, [6, 4.5, 3.3] at its end"):
        assert header in page, header
    flagged = page.split("## Flagged")[1].split("## CPU")[0]
    # spread (0.45 - 0.30) / 0.40 = 38% > 20%: flagged; the 0.70-0.72 case (3%) is not
    assert "latency, batch 1, cpu / distilled: unstable: spread 38%" in flagged
    assert "pruned 6/12" not in flagged
    assert "mlp: latency / teacher stack: misses target <= 0.06" in flagged
    assert "parameters / teacher stack" not in flagged
    assert "similarity / test_old_style: no ratios recorded" in flagged
    # the table rows: median, spread, target and verdict
    row = next(line for line in page.splitlines() if line.startswith("| pruned 6/12 |"))
    assert "| 0.710 |" in row and "| 3% |" in row and "meets target" in row and "1.04 x floor" in row
    row = next(line for line in page.splitlines() if line.startswith("| distilled |"))
    assert "**unstable: spread 38%**" in row
    assert "| mlp: parameters / teacher stack | 0.018 |" in page
    assert "full_s_per_audio_s = 0.25" in page and "overhead = 1.7" in page
    assert "No GPU was available in this run" in page


def test_cuda_cases_get_their_own_section(rp):
    page = rp.render(fake_run(cuda=True))
    cuda = page.split("## CUDA")[1]
    assert "### latency, batch 1, cuda" in cuda and "No GPU was available" not in page
    assert "### latency, batch 1, cuda" not in page.split("## CUDA")[0]


def test_cli_writes_deterministically(rp, tmp_path):
    src = tmp_path / "b.json"
    src.write_text(json.dumps(fake_run()))
    out = tmp_path / "docs" / "performance.md"
    assert rp.main([str(src), str(out)]) == 0
    first = out.read_text()
    assert rp.main([str(src), str(out)]) == 0
    assert out.read_text() == first == rp.render(fake_run())
    assert [p.name for p in out.parent.iterdir()] == ["performance.md"]  # no temporary file left
    assert rp.main([str(src)]) == 2


def test_everything_stable_says_so(rp):
    data = fake_run()
    data["benchmarks"] = [data["benchmarks"][0]]
    data["benchmarks"][0]["extra_info"]["ratios"].pop("distilled")
    page = rp.render(data)
    assert "None: every ratio met its target" in page.split("## CPU")[0]
