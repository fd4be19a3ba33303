"""The demo's measured probe stage and its report, without espeak-ng or models: the probe set and the features
are replaced by synthetic ones, so the pairing, the files, the intervals and the report's formats are checked
in a second."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from s3prl_redundancy.demo import probe
from s3prl_redundancy.demo import report
from s3prl_redundancy.superb import display
from s3prl_redundancy.superb import intervals as iv
from s3prl_redundancy.superb import leaderboard as lb

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


@pytest.fixture
def synthetic_probe(monkeypatch):
    """60 voices x 10 words; 'original' and 'copy' see the same features (identical predictions), 'noisy' sees
    them with noise that costs some accuracy."""
    rng = np.random.default_rng(0)
    items = [(np.zeros(10, np.float32), w, v) for v in range(60) for w in WORDS]
    centres = {w: rng.normal(size=8) * 3 for w in WORDS}
    clean = np.stack([centres[w] + rng.normal(size=8) for _, w, _ in items])
    noisy = clean + rng.normal(size=clean.shape) * 2.5
    import s3prl_redundancy.pretrain.data as data

    monkeypatch.setattr(data, "ks_probe_set", lambda n_voices, seed, workers: items)
    def features(entry, ckpt, wavs, device="cpu"):
        x = noisy if entry == "noisy" else clean
        return {"all": x, "last": x[:, :4]}  # the last hidden state alone: half the information

    monkeypatch.setattr(probe, "probe_features", features)
    return {"original": ("clean", None), "copy": ("clean", None), "noisy": ("noisy", None)}


def test_probe_pairs_the_same_test_clips_and_writes_s3prl_files(synthetic_probe, tmp_path):
    record = probe.measure(synthetic_probe, "original", tmp_path, voices=60)
    assert record["test_clips"] == 300 and record["test_voices"] == 30 and record["train_clips"] == 300
    rows = record["rows"]
    assert "capacity" not in rows["original"]
    same = rows["copy"]["capacity"]
    assert same["point"] == same["low"] == same["high"] == 1.0 and same["verdict"] == "indistinguishable"
    # the files are s3prl's KS format and give the recorded accuracy and capacity again
    ref = iv.accuracy_items(tmp_path / "original" / "test_predict.txt", tmp_path / "original" / "test_truth.txt")
    com = iv.accuracy_items(tmp_path / "noisy" / "test_predict.txt", tmp_path / "noisy" / "test_truth.txt")
    assert len(ref) == 300 and ref.names == com.names
    assert rows["noisy"]["accuracy"]["point"] == pytest.approx(com.value())
    assert rows["noisy"]["capacity"]["point"] == pytest.approx(com.value() / ref.value())
    assert rows["noisy"]["capacity"]["point"] < 1.0
    caps = [rows[n]["capacity"] if k == "all" else rows[n]["last_layer"]["capacity"]
            for n in ("copy", "noisy") for k in ("all", "last")]
    half = max(max(c["point"] - c["low"], c["high"] - c["point"]) for c in caps)  # over both views
    assert record["widest_capacity_half_width"] == pytest.approx(half)
    assert record["meets_width_goal"] == (half <= 0.05)
    assert json.loads((tmp_path / probe.RESULT).read_text()) == json.loads(json.dumps(record))
    # the second view, the last hidden state alone, has its own files and paired intervals
    last = iv.accuracy_items(tmp_path / "noisy" / "last" / "test_predict.txt", tmp_path / "noisy" / "last" / "test_truth.txt")
    assert rows["noisy"]["last_layer"]["accuracy"]["point"] == pytest.approx(last.value())
    assert rows["copy"]["last_layer"]["capacity"]["verdict"] == "indistinguishable"


def test_report_separates_measurement_from_pipeline_check(synthetic_probe, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_leaderboard import _items_exproot

    probe.measure(synthetic_probe, "original", tmp_path / "probe", voices=60)
    exp = _items_exproot(tmp_path / "lb")
    lb.write_leaderboard(lb.build_leaderboard(exp, cost=False), tmp_path / "superb")
    md = report.render_markdown(report.build_blocks(tmp_path, [], "tiny_hubert"), tmp_path)
    sections = {s.splitlines()[0]: s for s in re.split(r"^## ", md, flags=re.M)[1:]}
    measured = sections["4. Measured: capacity kept on keyword spotting, unseen voices"]
    assert "300 test clips (30 voices)" in measured and "paired 95 % bootstrap" in measured
    interval = r"\d+\.\d \[\d+\.\d, \d+\.\d\] \| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \| (in)?distinguishable"
    assert re.search(rf"\| noisy \| {interval} \| {interval} \|", measured)  # both views
    assert "| copy | " in measured and "| 1.000 [1.000, 1.000] |" in measured and "indistinguishable" in measured
    check = sections["5. Pipeline check: SUPERB tasks through s3prl's run_downstream"]
    assert "not a measurement" in check and "SUPERB score over KS, ER, ASR" in check
    assert re.search(r"\| other \| \d+\.\d \[\d+\.\d, \d+\.\d\] \|", check)
    page = report.render_html(report.build_blocks(tmp_path, [], "tiny_hubert"))
    assert "0.85 [0.81, 0.89]" in page  # the same formats in HTML


def test_number_formats():
    assert display.fmt_int(5334452) == "5,334,452" and display.fmt_int(float("nan")) == "n/a"
    assert display.fmt_si(4.145e8) == "414.5 M" and display.fmt_si(1.2e9) == "1.2 G" and display.fmt_si(None) == "n/a"
    assert display.fmt_interval(93.75, 88.14, 96.9) == "93.8 [88.1, 96.9]"
    assert display.fmt_interval(1.0312, None, None, 2) == "1.03" and display.fmt_interval(None) == "n/a"
    assert display.fmt_interval(-3927.2, decimals=0) == "-3,927"
