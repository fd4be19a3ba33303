"""Sweeps: capacity versus layers removed, one curve per strategy; evaluators; bridged curves."""

import csv
import json

import numpy as np
import pytest
import torch

from s3prl_redundancy.audio import AudioDataset
from s3prl_redundancy.checkpoints import load_checkpoint
from s3prl_redundancy.cli import main
from s3prl_redundancy.compression.statistics import load_labels
from s3prl_redundancy.compression.sweep import LinearProbeEvaluator, ModelFeatures, probe_split, run_sweep
from s3prl_redundancy.testing.audio import write_labelled_audio
from s3prl_redundancy.testing.models import make_identity_layers
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.families import FAMILIES
from s3prl_redundancy.testing.models import build_checkpoint


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep_audio")
    write_labelled_audio(folder, classes=3, per_class=4, seconds=(0.4, 0.6), seed=2)
    dataset = AudioDataset.from_data(folder)
    return folder, dataset, load_labels(dataset)


class CountingEvaluator:
    """An evaluator of the kind a SUPERB run would plug in: it gets the pruned checkpoint."""

    name = "counting"

    def __init__(self):
        self.layers_seen = []

    def evaluate(self, checkpoint, features):
        fam = FAMILIES["hubert"]
        n = fam.num_layers(checkpoint)
        self.layers_seen.append(n)
        return {"layers_left": n, "states": features.pooled.shape[1]}


def test_sweep_rows_shared_selections_and_custom_evaluators(tiny_ckpts, labelled):
    _, dataset, labels = labelled
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    counter = CountingEvaluator()
    result = run_sweep(ckpt, ["backward", "shallow", "forward"], dataset, labels, max_drop=2, evaluators=[counter])
    assert [(r["strategy"], r["layers_removed"]) for r in result.rows] == [
        (s, n) for s in ("backward", "shallow", "forward") for n in range(3)]
    assert all(r["layers_left"] == 4 - r["layers_removed"] and r["states"] == 5 - r["layers_removed"] for r in result.rows)
    # backward and shallow make the same selections, and n = 0 is the source model for all: 1 + 2 + 2 evaluations
    assert result.options["evaluations"] == 5 and sorted(counter.layers_seen) == [2, 2, 3, 3, 4]
    assert next(r for r in result.rows if r["strategy"] == "forward" and r["layers_removed"] == 2)["kept_layers"] == "0 3"


def test_sweep_command_writes_csv_plot_and_json(tiny_ckpts, labelled, tmp_path, capsys):
    folder, _, _ = labelled
    out = tmp_path / "sweep"
    argv = ["sweep", "--upstream", "hubert_local", "--ckpt", str(tiny_ckpts["hubert"]), "--strategies",
            "backward,block-influence", "--data", str(folder), "--max-drop", "2", "--out", str(out)]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 6 and {"probe_accuracy", "cka_to_source", "mse_to_source", "parameters"} <= set(rows[0])
    source = [r for r in rows if r["layers_removed"] == "0"]
    assert all(float(r["cka_to_source"]) == pytest.approx(1.0) and float(r["mse_to_source"]) == 0.0 for r in source)
    assert all(0.0 <= float(r["probe_accuracy"]) <= 1.0 for r in rows)
    params = [int(r["parameters"]) for r in rows if r["strategy"] == "backward"]
    assert params[0] > params[1] > params[2]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    details = json.loads((out / "sweep.json").read_text())
    assert details["rankings"]["block-influence"]["score_name"].startswith("block influence")
    assert main(argv) == 2 and "--force" in capsys.readouterr().err


def test_linear_probe_on_features_with_known_separability():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 10)
    centres = {"a": 0.0, "b": 5.0, "c": 10.0}
    good = np.stack([rng.standard_normal((30, 4)) + np.array([centres[l] for l in labels])[:, None]] * 3, axis=1)
    train, test = probe_split(labels, 0.3, seed=0)
    assert set(labels[test]) == {"a", "b", "c"} and len(test) == 9 and not set(train) & set(test)
    probe = LinearProbeEvaluator(labels, train, test, "last")
    assert probe.evaluate(None, ModelFeatures(good, torch.zeros(1, 4)))["probe_accuracy"] == 1.0
    noise = rng.standard_normal((30, 3, 4))
    assert probe.evaluate(None, ModelFeatures(noise, torch.zeros(1, 4)))["probe_accuracy"] < 0.8


@pytest.mark.slow
def test_bridged_curve_recovers_what_plain_removal_loses(labelled):
    """Layers 2 and 3 of a pre-LN model compute ``x + c``: removing them (backward, 2 layers) loses ``c``;
    with a bridge the output is recovered (CKA 1, MSE ~0) while the plain curve drops."""
    _, dataset, labels = labelled
    ckpt = make_identity_layers(build_checkpoint("hubert", num_layers=4, seed=8, layer_norm_first=True), [2, 3], keep_biases=True)
    result = run_sweep(ckpt, ["backward"], dataset, labels, max_drop=2, bridge="linear", bridge_ridge=0.0)
    by = {(r["strategy"], r["layers_removed"]): r for r in result.rows}
    assert by[("backward+bridge", 0)]["cka_to_source"] == pytest.approx(1.0)
    assert by[("backward+bridge", 2)]["mse_to_source"] < 1e-6 < by[("backward", 2)]["mse_to_source"]
    assert by[("backward+bridge", 2)]["cka_to_source"] > by[("backward", 2)]["cka_to_source"]


def test_sweep_errors(tiny_ckpts, labelled):
    _, dataset, labels = labelled
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    with pytest.raises(UserInputError, match="no ranking to sweep"):
        run_sweep(ckpt, ["explicit"], dataset, labels, max_drop=1)
    with pytest.raises(UserInputError, match="`max_drop` must be between 1 and 3"):
        run_sweep(ckpt, ["backward"], dataset, labels, max_drop=4)
    with pytest.raises(UserInputError, match="11 labels for 12 audio files"):
        run_sweep(ckpt, ["backward"], dataset, labels[:-1], max_drop=1)
    with pytest.raises(UserInputError, match="at least 2 utterances per class"):
        probe_split(["a", "a", "b"], 0.3, 0)
