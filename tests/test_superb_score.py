"""SUPERB score and Score-P against hand arithmetic on the site's published per-task results.

Published numbers: superbbenchmark/website-react, backend/utils.py ``get_leaderboard_default`` (public set, the
SUPERB paper's rows); reference points: frontend/src/Data.js ``reference_points``. Each expected value below is
written out as its own arithmetic, not computed through the module.
"""

from __future__ import annotations

import pytest

from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.superb import score as sc

# (KS acc, SID acc, ER acc, ASR WER, paramShared) as published on the site
PUBLISHED = {
    "HuBERT Base": (96.30, 81.42, 64.92, 6.42, 94697600),
    "wav2vec 2.0 Base": (96.23, 75.18, 63.43, 6.43, 95044608),
    "HuBERT Large": (95.29, 90.33, 67.62, 3.62, 316609408),
    "wav2vec 2.0 Large": (96.66, 86.14, 65.64, 3.75, 317390592),
    "FBANK": (41.3826674, 20.058174, 48.23672168, 23.18, 0),
}

# Hand computation: 1000 * (v - FBANK) / (topline - FBANK), constants typed from Data.js
HAND = {
    "HuBERT Base": {
        "KS": 1000 * (96.30 - 41.3826674) / (96.66 - 41.3826674),
        "SID": 1000 * (81.42 - 20.058174) / (90.3 - 20.058174),
        "ER": 1000 * (64.92 - 48.23672168) / (67.62 - 48.23672168),
        "ASR": 1000 * (23.18 - 6.42) / (23.18 - 3.62),
    },
    "wav2vec 2.0 Base": {
        "KS": 1000 * (96.23 - 41.3826674) / (96.66 - 41.3826674),
        "SID": 1000 * (75.18 - 20.058174) / (90.3 - 20.058174),
        "ER": 1000 * (63.43 - 48.23672168) / (67.62 - 48.23672168),
        "ASR": 1000 * (23.18 - 6.43) / (23.18 - 3.62),
    },
    "HuBERT Large": {
        "KS": 1000 * (95.29 - 41.3826674) / (96.66 - 41.3826674),
        "SID": 1000 * (90.33 - 20.058174) / (90.3 - 20.058174),
        "ER": 1000.0,  # HuBERT Large is the ER topline
        "ASR": 1000.0,  # and the ASR topline
    },
    "wav2vec 2.0 Large": {
        "KS": 1000.0,  # the KS topline
        "SID": 1000 * (86.14 - 20.058174) / (90.3 - 20.058174),
        "ER": 1000 * (65.64 - 48.23672168) / (67.62 - 48.23672168),
        "ASR": 1000 * (23.18 - 3.75) / (23.18 - 3.62),
    },
}


def results_of(name):
    ks, sid, er, asr, _ = PUBLISHED[name]
    return {"KS": ks, "SID": sid, "ER": er, "ASR": asr}


def test_reference_points_are_the_sites():
    expected = {"KS": (41.3826674, 96.66), "SID": (20.058174, 90.3), "ER": (48.23672168, 67.62),
                "ASR": (23.18, 3.62)}
    assert {t: (r.baseline, r.topline) for t, r in sc.REFERENCE_POINTS.items()} == expected
    assert [t for t, r in sc.REFERENCE_POINTS.items() if not r.higher_better] == ["ASR"]


@pytest.mark.parametrize("name", sorted(HAND))
def test_normalized_task_scores_match_hand_arithmetic(name):
    for task, value in results_of(name).items():
        assert sc.normalized_task_score(task, value) == pytest.approx(HAND[name][task], abs=1e-9)
    # rounded values as a second, readable check
    if name == "HuBERT Base":
        got = {t: round(sc.normalized_task_score(t, v), 1) for t, v in results_of(name).items()}
        assert got == {"KS": 993.5, "SID": 873.6, "ER": 860.7, "ASR": 856.9}


@pytest.mark.parametrize("name", sorted(HAND))
def test_superb_score_is_mean_of_task_scores(name):
    result = sc.superb_score(results_of(name))
    hand = HAND[name]
    assert result.score == pytest.approx((hand["KS"] + hand["SID"] + hand["ER"] + hand["ASR"]) / 4, abs=1e-9)
    assert result.tasks == ("KS", "SID", "ER", "ASR")
    assert result.label == "SUPERB score over KS, SID, ER, ASR"
    assert result.complete and result.score_p is None


def test_fbank_scores_zero_and_toplines_score_1000():
    assert sc.superb_score(results_of("FBANK")).score == pytest.approx(0.0, abs=1e-9)
    assert sc.normalized_task_score("asr", 3.62) == pytest.approx(1000.0)
    assert sc.normalized_task_score("ks", 96.66) == pytest.approx(1000.0)


def test_hubert_base_total_and_score_p():
    # (993.4874 + 873.5796 + 860.7047 + 856.8507) / 4 = 896.1556; Score-P divides by 94.6976 M parameters
    result = sc.superb_score(results_of("HuBERT Base"), params_millions=94697600 / 1e6)
    assert result.score == pytest.approx(896.1556, abs=1e-3)
    assert result.score_p == pytest.approx(896.1556 / 94.6976, abs=1e-4)
    assert round(result.score_p, 2) == 9.46


def test_score_p_rules():
    # under 1 M parameters: divide by 1, not by the fraction
    small = sc.superb_score({"KS": 96.30}, params_millions=0.5)
    assert small.score_p == pytest.approx(small.score)
    # a score below FBANK is not divided (the site's parameter_panelize keeps scores <= 0 as they are)
    below = sc.superb_score({"KS": 30.0, "SID": 81.42}, params_millions=10)
    ks = 1000 * (30.0 - 41.3826674) / (96.66 - 41.3826674)
    sid = 1000 * (81.42 - 20.058174) / (90.3 - 20.058174)
    assert below.score_p == pytest.approx((ks + sid / 10) / 2)


def test_partial_scores_say_which_tasks():
    result = sc.superb_score({"asr": 6.42, "ks": 96.30})
    assert result.tasks == ("KS", "ASR") and not result.complete
    assert result.label == "SUPERB score over KS, ASR"
    assert result.to_dict()["label"] == "SUPERB score over KS, ASR"
    assert result.score == pytest.approx((HAND["HuBERT Base"]["KS"] + HAND["HuBERT Base"]["ASR"]) / 2)


@pytest.mark.parametrize("results, params, argument", [
    ({}, None, "results"),
    ({"PR": 5.0}, None, "results"),
    ({"KS": "high"}, None, "results"),
    ({"KS": float("nan")}, None, "results"),
    ({"KS": 90.0, "ks": 91.0}, None, "results"),
    ({"KS": 90.0}, -1.0, "params_millions"),
])
def test_bad_input_names_the_argument(results, params, argument):
    with pytest.raises(UserInputError) as info:
        sc.superb_score(results, params_millions=params)
    assert info.value.argument == argument
