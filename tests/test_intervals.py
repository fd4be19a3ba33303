"""Intervals of SUPERB results against independent computations, on files in s3prl 0.4.18's formats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.superb import intervals as iv

Z95 = 1.959963984540054  # standard normal 97.5 % quantile


def hand_wilson(k, n, z=Z95):
    """Wilson score interval from its textbook formula."""
    p = k / n
    centre = (p + z ** 2 / (2 * n)) / (1 + z ** 2 / n)
    half = (z / (1 + z ** 2 / n)) * math.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2))
    return centre - half, centre + half


def write_labels(path, pairs):
    """A ``<filename> <label>`` file as s3prl's experts write it."""
    path.write_text("".join(f"{f} {label}\n" for f, label in pairs))
    return path


def label_files(tmp_path, truth, predict, stem="test"):
    names = [f"speaker{i % 7}/utt_{i:05d}.wav" for i in range(len(truth))]
    p = write_labels(tmp_path / f"{stem}_predict.txt", zip(names, predict))
    t = write_labels(tmp_path / f"{stem}_truth.txt", zip(names, truth))
    return p, t


# ------------------------------------------------------------------------------------------------
# binomial intervals
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, n", [(8, 10), (0, 20), (20, 20), (613, 700), (1, 3)])
def test_wilson_matches_hand_formula(k, n):
    got = iv.wilson_interval(k, n)
    low, high = hand_wilson(k, n)
    assert (got.low, got.high) == pytest.approx((max(low, 0.0), min(high, 1.0)), abs=1e-12)
    assert got.point == k / n


def test_wilson_known_value():
    # 8 of 10: the textbook (0.4902, 0.9433)
    got = iv.wilson_interval(8, 10)
    assert (round(got.low, 4), round(got.high, 4)) == (0.4902, 0.9433)


@pytest.mark.parametrize("k, n", [(8, 10), (0, 20), (20, 20), (613, 700)])
def test_clopper_pearson_matches_beta_quantiles(k, n):
    got = iv.clopper_pearson_interval(k, n)
    low = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    high = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-9)


def test_accuracy_interval_from_s3prl_files(tmp_path):
    truth = ["yes", "no", "up", "down", "_silence_"] * 20
    predict = list(truth)
    for i in range(0, 100, 10):  # 10 wrong of 100
        predict[i] = "_unknown_"
    p, t = label_files(tmp_path, truth, predict)
    got = iv.accuracy_interval(p, t)
    low, high = hand_wilson(90, 100)
    assert got.point == pytest.approx(90.0)
    assert (got.low, got.high) == pytest.approx((100 * low, 100 * high))
    exact = iv.accuracy_interval(p, t, method="exact")
    assert exact.low < got.low and exact.method == "exact"


def test_items_matched_by_filename_not_line_order(tmp_path):
    names = ["a.wav", "b.wav", "c.wav", "d.wav"]
    write_labels(tmp_path / "p.txt", zip(reversed(names), ["x", "y", "y", "y"]))  # d:x c:y b:y a:y
    write_labels(tmp_path / "t.txt", zip(names, ["y", "y", "y", "x"]))  # a:y b:y c:y d:x
    items = iv.accuracy_items(tmp_path / "p.txt", tmp_path / "t.txt")
    assert items.value() == 100.0


@pytest.mark.parametrize("change, word", [("missing", "missing"), ("extra", "extra")])
def test_missing_or_extra_items_are_refused(tmp_path, change, word):
    truth = ["yes", "no", "up"]
    p, t = label_files(tmp_path, truth, truth)
    lines = p.read_text().splitlines()
    if change == "missing":
        p.write_text("\n".join(lines[:-1]) + "\n")
    else:
        p.write_text("\n".join(lines + ["other/file.wav yes"]) + "\n")
    with pytest.raises(UserInputError) as info:
        iv.accuracy_interval(p, t)
    assert info.value.argument == "predict_path"
    assert word in str(info.value)


def test_bad_files_are_refused(tmp_path):
    p, t = label_files(tmp_path, ["yes"], ["yes"])
    with pytest.raises(UserInputError) as info:
        iv.accuracy_interval(tmp_path / "nope.txt", t)
    assert info.value.argument == "predict_path"
    t.write_text("a.wav yes\na.wav no\n")
    with pytest.raises(UserInputError) as info:
        iv.accuracy_interval(p, t)
    assert info.value.argument == "truth_path" and "twice" in str(info.value)
    with pytest.raises(UserInputError) as info:
        iv.accuracy_interval(p, p, method="wald")
    assert info.value.argument == "method"


# ------------------------------------------------------------------------------------------------
# ASR: WER and its bootstrap
# ------------------------------------------------------------------------------------------------


def write_ark(path, rows):
    path.write_text("".join(f"{u} {text}\n" for u, text in rows))
    return path


def test_wer_items_and_corpus_wer(tmp_path):
    ref = write_ark(tmp_path / "test-clean-noLM-ref.ark",
                    [("u1", "THE CAT SAT"), ("u2", "ON THE MAT"), ("u3", "HELLO")])
    hyp = write_ark(tmp_path / "test-clean-noLM-hyp.ark",
                    [("u3", ""), ("u1", "THE CAT SAT"), ("u2", "ON A MAT TODAY")])
    items = iv.wer_items(hyp, ref)
    assert items.names == ("u1", "u2", "u3")
    assert items.numer.tolist() == [0, 2, 1]  # u2: one substitution + one insertion; u3: one deletion
    assert items.denom.tolist() == [3, 3, 1]
    assert items.value() == pytest.approx(100 * 3 / 7)
    assert iv.s3prl_transcript_files(tmp_path, "test-clean") == (hyp, ref)


def test_seeded_bootstrap_reproduced_independently(tmp_path):
    rng = np.random.default_rng(123)
    n = 300
    lengths = rng.integers(3, 30, size=n)
    edits = np.minimum(rng.poisson(2.0, size=n), lengths)
    ref = write_ark(tmp_path / "ref.ark", [(f"utt{i:04d}", " ".join(["W"] * lengths[i])) for i in range(n)])
    # hypothesis = reference with the first edits[i] words substituted
    hyp = write_ark(tmp_path / "hyp.ark", [(f"utt{i:04d}", " ".join(["X"] * edits[i] + ["W"] * (lengths[i] - edits[i])))
                                          for i in range(n)])
    got = iv.wer_interval(hyp, ref, resamples=2000, seed=7)
    # independent: utterance ids sort as written, so item i is utt i; one (2000, n) draw from default_rng(7)
    idx = np.random.default_rng(7).integers(0, n, size=(2000, n))
    samples = 100 * edits[idx].sum(axis=1) / lengths[idx].sum(axis=1)
    assert got.point == pytest.approx(100 * edits.sum() / lengths.sum())
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(samples, [0.025, 0.975])))
    assert got.low < got.point < got.high
    assert iv.wer_interval(hyp, ref, resamples=2000, seed=7) == got  # identical on rebuild


def test_wer_mismatched_utterances_refused(tmp_path):
    ref = write_ark(tmp_path / "ref.ark", [("u1", "A B"), ("u2", "C")])
    hyp = write_ark(tmp_path / "hyp.ark", [("u1", "A B")])
    with pytest.raises(UserInputError) as info:
        iv.wer_interval(hyp, ref)
    assert info.value.argument == "hyp_path" and "u2" in str(info.value)


# ------------------------------------------------------------------------------------------------
# ER folds
# ------------------------------------------------------------------------------------------------


def test_fold_spread_of_published_hubert_base_folds():
    # ERfold1..5_acc_public of HuBERT Base on the SUPERB site; its ER_acc_public is 64.92
    folds = [62.39631, 66.568917, 65.24761, 65.179437, 65.18936]
    mean, std, low, high = iv.fold_spread(folds)
    assert round(mean, 2) == 64.92
    hand_std = math.sqrt(sum((f - sum(folds) / 5) ** 2 for f in folds) / 4)
    assert std == pytest.approx(hand_std)
    assert (low, high) == (62.39631, 66.568917)


def test_er_fold_summary_from_files(tmp_path):
    files = {}
    for fold, wrong in [("fold1", 2), ("fold2", 5)]:
        truth = ["neu", "hap", "ang", "sad"] * 5
        predict = ["sad" if i < wrong else t for i, t in enumerate(truth)]
        folder = tmp_path / fold
        folder.mkdir()
        label_files(folder, truth, predict, stem=f"test_{fold}")
        files[fold] = iv.s3prl_label_files(folder, "test", fold)
    summary = iv.er_fold_summary(files)
    # fold1: items 0, 1 predicted "sad" wrongly: 18/20; fold2: items 0-4 predicted "sad", item 3 is sad: 16/20
    assert summary.folds["fold1"].point == pytest.approx(90.0)
    assert summary.folds["fold2"].point == pytest.approx(80.0)
    assert summary.mean == pytest.approx(85.0) and (summary.min, summary.max) == (80.0, 90.0)
    assert summary.std == pytest.approx(math.sqrt(50.0))
    assert summary.to_dict()["folds"]["fold1"]["method"] == "wilson"


# ------------------------------------------------------------------------------------------------
# paired capacity
# ------------------------------------------------------------------------------------------------


def synthetic_correct(n, accuracy, seed):
    return (np.random.default_rng(seed).random(n) < accuracy).astype(float)


def items_of(correct, names=None):
    names = tuple(names or (f"item{i:05d}" for i in range(len(correct))))
    return iv.ItemScores(names, np.asarray(correct, float), np.ones(len(correct)), "acc")


def test_identical_predictions_give_capacity_one_zero_width(tmp_path):
    truth = ["a", "b", "c", "d"] * 50
    predict = ["a" if i % 3 else t for i, t in enumerate(truth)]
    p, t = label_files(tmp_path, truth, predict)
    ref, same = iv.accuracy_items(p, t), iv.accuracy_items(p, t)
    got = iv.paired_capacity(ref, same, resamples=2000, seed=0)
    assert (got.point, got.low, got.high) == (1.0, 1.0, 1.0)
    assert got.difference.width == 0.0 and got.verdict == "indistinguishable"


def test_clearly_worse_model_is_distinguishable():
    ref = items_of(synthetic_correct(2000, 0.9, seed=1))
    worse = items_of(synthetic_correct(2000, 0.6, seed=2))
    got = iv.paired_capacity(ref, worse, resamples=2000, seed=0)
    assert got.verdict == "distinguishable"
    assert got.high < 1.0 and got.difference.high < 0
    assert got.point == pytest.approx(worse.value() / ref.value())


def test_a_few_flipped_items_are_indistinguishable():
    correct = synthetic_correct(500, 0.8, seed=3)
    other = correct.copy()
    flip = np.flatnonzero(correct == 1)[:2]  # two items newly wrong of 500
    other[flip] = 0
    got = iv.paired_capacity(items_of(correct), items_of(other), resamples=2000, seed=0)
    assert got.verdict == "indistinguishable"
    assert got.low < got.point < 1.0 + 1e-12


def test_paired_bootstrap_reproduced_independently():
    ref_c, com_c = synthetic_correct(400, 0.85, seed=4), synthetic_correct(400, 0.8, seed=5)
    got = iv.paired_capacity(items_of(ref_c), items_of(com_c), resamples=3000, seed=11)
    idx = np.random.default_rng(11).integers(0, 400, size=(3000, 400))
    ref_s, com_s = 100 * ref_c[idx].mean(axis=1), 100 * com_c[idx].mean(axis=1)
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(com_s / ref_s, [0.025, 0.975])))
    assert (got.difference.low, got.difference.high) == pytest.approx(
        tuple(np.quantile(com_s - ref_s, [0.025, 0.975])))
    assert iv.paired_capacity(items_of(ref_c), items_of(com_c), resamples=3000, seed=11) == got


def test_paired_capacity_on_wer_uses_word_accuracy(tmp_path):
    ref = write_ark(tmp_path / "ref.ark", [(f"u{i}", "A B C D") for i in range(50)])
    hyp_ref = write_ark(tmp_path / "h1.ark", [(f"u{i}", "A B C D" if i % 5 else "A B C X") for i in range(50)])
    hyp_com = write_ark(tmp_path / "h2.ark", [(f"u{i}", "A B C D" if i % 2 else "A X C X") for i in range(50)])
    got = iv.paired_capacity(iv.wer_items(hyp_ref, ref), iv.wer_items(hyp_com, ref), resamples=1000)
    wer_ref, wer_com = 100 * 10 / 200, 100 * 50 / 200  # 10 utts x 1 edit; 25 utts x 2 edits
    assert got.point == pytest.approx((100 - wer_com) / (100 - wer_ref))
    assert got.verdict == "distinguishable"


def test_paired_items_must_match():
    ref = items_of([1, 0, 1])
    other = items_of([1, 0, 1], names=["item00000", "item00001", "elsewhere"])
    with pytest.raises(UserInputError) as info:
        iv.paired_capacity(ref, other, resamples=10)
    assert info.value.argument == "compressed"
    assert "missing" in str(info.value) and "extra" in str(info.value)


def test_bootstrap_of_thousands_of_items_is_chunked_without_changing_the_result():
    """10,000 resamples of 5,000 items are drawn in chunks (bounded memory); the interval is that of the
    accuracies: 0.88 / 0.90 kept, well inside (0.9, 1.0)."""
    ref, com = items_of(synthetic_correct(5000, 0.9, 6)), items_of(synthetic_correct(5000, 0.88, 7))
    cap = iv.paired_capacity(ref, com, resamples=10_000, seed=0)
    assert cap.low < cap.point < cap.high and 0.9 < cap.low and cap.high < 1.0
    assert cap == iv.paired_capacity(ref, com, resamples=10_000, seed=0)  # seeded: identical on a rebuild


def test_wilson_bounds_are_exact_at_the_ends():
    """At 0 or n correct the Wilson bound is exactly 0 or 1, not a rounding residue, so the point lies inside."""
    for n in (1, 6, 32, 1000):
        assert iv.wilson_interval(0, n).low == 0.0 and iv.wilson_interval(n, n).high == 1.0
        assert iv.wilson_interval(0, n).high > 0 and iv.wilson_interval(n, n).low < 1
