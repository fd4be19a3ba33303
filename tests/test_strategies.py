"""Layer-selection strategies, targets and the new ``prune`` command (``commands/prune.py``).

Known answers: models built so that a layer is an exact identity map (pre-layer-norm layers whose output
projections are zeroed) must have that layer removed first by the data-driven strategies; statistics are
compared with an independent per-utterance computation; budgets with the parameters of the actually pruned
checkpoint.
"""

import importlib.util
import json

import numpy as np
import pytest
import torch

from s3prl_redundancy import cli
from s3prl_redundancy.audio import AudioDataset
from s3prl_redundancy.checkpoints import load_checkpoint
from s3prl_redundancy.cli import main
from s3prl_redundancy.compression import strategies as S
from s3prl_redundancy.compression.cost import LayerCostModel, parameter_counts
from s3prl_redundancy.compression.statistics import LayerStatistics, collect_statistics, frame_counts, load_labels
from s3prl_redundancy.compression.structure import make_upstream
from s3prl_redundancy.testing.audio import write_labelled_audio
from s3prl_redundancy.testing.models import make_identity_layers
from s3prl_redundancy.errors import UserInputError
from s3prl_redundancy.compression.layers import prune_checkpoint
from s3prl_redundancy.plugins import build_strategy, pruning_strategies
from s3prl_redundancy.testing.models import build_checkpoint



@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    info = write_labelled_audio(folder, classes=3, per_class=4, seconds=(0.4, 0.7), seed=0)
    return folder, info


@pytest.fixture(scope="module")
def identity_ckpt(tmp_path_factory):
    """A pre-LN 5-layer HuBERT whose layers 2 and 4 (the last) are exact identity maps."""
    ckpt = make_identity_layers(build_checkpoint("hubert", num_layers=5, seed=3, layer_norm_first=True), [2, 4])
    path = tmp_path_factory.mktemp("identity") / "identity.pt"
    torch.save(ckpt, path)
    return ckpt, path


# --------------------------------------------------------------------------------------
# Position strategies and targets
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, order",
    [("backward", [5, 4, 3, 2, 1]), ("shallow", [5, 4, 3, 2, 1]), ("forward", [1, 2, 3, 4, 5]),
     ("forward-backward", [5, 1, 4, 2, 3])],
)
def test_position_strategies_order_and_nested_plans(name, order):
    strategy = build_strategy(name)
    assert strategy.rank(6).order == order
    previous = set()
    for n in range(1, 6):
        plan = S.plan_layers(strategy, 6, S.Target("drop", n))
        assert plan.remove == order[:n] and set(plan.keep) == set(range(6)) - set(order[:n])
        assert previous <= set(plan.remove)  # nested: dropping n+1 removes what dropping n removes
        previous = set(plan.remove)
    assert 0 in S.plan_layers(strategy, 6, S.Target("drop", 5)).keep  # layer 0 is never removed by these


@pytest.mark.parametrize(
    "target, removed",
    [(S.Target("drop", 2), 2), (S.Target("keep", 2), 4), (S.Target("ratio", 0.5), 3), (S.Target("ratio", 0.4), 2)],
)
def test_target_counts(target, removed):
    assert len(S.plan_layers(build_strategy("backward"), 6, target).remove) == removed


@pytest.mark.parametrize(
    "target, message",
    [(S.Target("drop", 0), "removes no layer"), (S.Target("keep", 6), "removes no layer"),
     (S.Target("ratio", 0.05), "rounds to 0 layers"), (S.Target("keep", 0), "removes every one of the 6 layers"),
     (S.Target("drop", 6), "removes every one"), (S.Target("keep", 9), "has only 6 transformer layers"),
     (S.Target("default"), "needs a target")],
)
def test_targets_that_remove_nothing_or_everything_are_refused(target, message):
    with pytest.raises(UserInputError, match=message):
        S.plan_layers(build_strategy("backward"), 6, target)


def test_target_parsing():
    assert S.Target.from_options(param_budget="2.5M") == S.Target("param_budget", 2.5e6)
    assert S.Target.from_options(param_budget="60%") == S.Target("param_budget", -0.6)
    assert S.Target.from_options(latency_budget="250ms").value == pytest.approx(0.25)
    assert S.Target.from_options(latency_budget="80%") == S.Target("latency_budget", -0.8)
    assert S.Target.from_options(keep_layers="0,2") == S.Target("layers", (0, 2))
    with pytest.raises(UserInputError, match="give one target"):
        S.Target.from_options(drop=1, keep=2)
    with pytest.raises(UserInputError, match="strictly between 0 and 1"):
        S.Target.from_options(ratio=1.0)
    with pytest.raises(UserInputError, match="not a number"):
        S.Target.from_options(param_budget="lots")


def test_explicit_strategy_and_keep_layers_with_another_strategy():
    plan = S.plan_layers(build_strategy("explicit", keep_layers=[0, 3]), 4, S.Target("layers", (0, 3)))
    assert plan.keep == [0, 3] and plan.remove == [1, 2]
    with pytest.raises(UserInputError, match="`keep_layers` picks the layers itself"):
        S.plan_layers(build_strategy("backward"), 4, S.Target("layers", (0, 3)))
    with pytest.raises(UserInputError, match="keeps all 4 layers"):
        S.plan_layers(build_strategy("explicit", keep_layers=[0, 1, 2, 3]), 4, S.Target("layers", (0, 1, 2, 3)))


def test_strategy_lookup_has_one_home_and_no_import_cycle():
    """``builtin_plugin`` imports the strategies module, so that module must not import the plugin manager."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(S))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.split(".")[-1] in ("plugins", "builtin_plugin")]
    assert not hasattr(S, "build_strategy") and not hasattr(S, "available_strategies")
    assert pruning_strategies()["backward"] is S.BackwardStrategy


def test_strategies_that_need_data_say_so():
    for name in ("block-influence", "knn-block-influence", "similarity-blocks", "convexity"):
        with pytest.raises(UserInputError, match="pass `data`"):
            S.plan_layers(build_strategy(name), 4, S.Target("drop", 1), None)
    with pytest.raises(UserInputError, match="unknown strategy 'magic'"):
        build_strategy("magic")
    assert set(S.BUILTIN_STRATEGIES) <= set(pruning_strategies())


# --------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_parameter_cost_model_equals_the_pruned_checkpoint(family, tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts[family])
    model = LayerCostModel(ckpt)
    for keep in ([0, 1, 2, 3], [0, 2], [1, 3], [3]):
        pruned = prune_checkpoint(ckpt, keep)
        expected = parameter_counts(pruned["model_weight" if family == "hubert" else "model"])["inference"]
        assert model.parameters(keep) == expected
    weights = ckpt["model_weight" if family == "hubert" else "model"]
    front = sum(v.numel() for k, v in weights.items()
                if k.startswith(("feature_extractor.", "layer_norm.", "post_extract_proj.", "encoder.")) and not k.startswith("encoder.layers."))
    assert model.parameters([]) == front


def test_parameter_budget_picks_the_fewest_removals_that_fit(tiny_ckpts):
    ckpt = load_checkpoint(tiny_ckpts["hubert"])
    cost = LayerCostModel(ckpt).functions(("parameters",))
    full, per_layer = cost["parameters"]([0, 1, 2, 3]), cost["parameters"]([0]) - cost["parameters"]([])
    plan = S.plan_layers(build_strategy("backward"), 4, S.Target("param_budget", full - per_layer - 1), cost=cost)
    assert plan.remove == [3, 2]  # one layer is not enough (1 parameter short), two are
    assert plan.cost["parameters"]["after"] <= full - per_layer - 1 < plan.cost["parameters"]["before"]
    plan = S.plan_layers(build_strategy("backward"), 4, S.Target("param_budget", -0.9), cost=cost)  # 90 %
    assert len(plan.remove) == 1
    with pytest.raises(UserInputError, match="below the front end's own cost"):
        S.plan_layers(build_strategy("backward"), 4, S.Target("param_budget", cost["parameters"]([]) - 1), cost=cost)
    with pytest.raises(UserInputError, match="removes no layer"):
        S.plan_layers(build_strategy("backward"), 4, S.Target("param_budget", full), cost=cost)


def test_latency_budget_uses_the_linear_model():
    fake = {"latency": lambda keep: 1.0 + 0.5 * len(keep)}  # front 1 s, 0.5 s per layer
    plan = S.plan_layers(build_strategy("forward"), 6, S.Target("latency_budget", 2.6), cost=fake)
    assert plan.remove == [1, 2, 3]  # 3 layers left: 2.5 s
    with pytest.raises(UserInputError, match=r"below the front end's own cost \(1s"):
        S.plan_layers(build_strategy("forward"), 6, S.Target("latency_budget", 0.9), cost=fake)
    relative = S.plan_layers(build_strategy("forward"), 6, S.Target("latency_budget", -0.75), cost=fake)  # 3 s
    assert relative.remove == [1, 2]


# --------------------------------------------------------------------------------------
# Statistics and data-driven strategies on models with known structure
# --------------------------------------------------------------------------------------
def test_frame_counts():
    assert frame_counts([3200, 6400, 6550], 20) == [10, 20, 20]
    assert frame_counts([100], 5) == [1]


class _FakeExpert(torch.nn.Module):
    """Returns hidden states whose padding frames are NaN: statistics must never see them."""

    def __init__(self, states):
        super().__init__()
        self.states = states
        self.model = torch.nn.Module()
        self.model.encoder = torch.nn.Module()
        self.model.encoder.layers = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])

    def forward(self, wavs):
        return {"hidden_states": self.states}


def test_statistics_trim_padding_and_match_a_direct_computation(tmp_path):
    import soundfile

    for i, n in enumerate((3200, 6400)):
        soundfile.write(str(tmp_path / f"{i}.wav"), np.zeros(n, dtype=np.float32) + 0.1, 16000)
    g = torch.Generator().manual_seed(0)
    states = [torch.randn(2, 20, 8, generator=g) for _ in range(3)]
    for h in states:
        h[0, 10:] = float("nan")  # utterance 0 has 10 true frames
    stats = collect_statistics(_FakeExpert(states), AudioDataset.from_data(tmp_path), {"block_influence", "pooled"}, batch_size=2)
    valid = [torch.cat([h[0, :10], h[1]]) for h in states]
    cos = [torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).mean() for a, b in zip(valid, valid[1:])]
    np.testing.assert_allclose(stats.block_influence, [1 - float(c) for c in cos], rtol=1e-6)  # float32 frames: float32 dot products (metrics.product_dtype)
    np.testing.assert_allclose(stats.pooled[0, 1], states[1][0, :10].mean(0).numpy(), rtol=1e-6)
    assert stats.frames == 30


def test_block_influence_matches_per_utterance_reference(identity_ckpt, labelled):
    ckpt, _ = identity_ckpt
    dataset = AudioDataset.from_data(labelled[0], max_utterances=5)
    upstream = make_upstream(ckpt)
    stats = collect_statistics(upstream, dataset, {"block_influence"}, batch_size=1)
    # independent: hooks on every layer (input and output), one utterance at a time
    ins, outs = [], []

    def capture(module, inputs, output):
        ins.append(inputs[0])
        outs.append(output[0])

    for layer in upstream.model.encoder.layers:
        layer.register_forward_hook(capture)
    sums, count = np.zeros(5), 0
    with torch.no_grad():
        for i in range(len(dataset)):
            ins.clear(), outs.clear()
            _, wav = dataset[i]
            frames = upstream([wav])["hidden_states"][0].shape[1]  # conv frames (the encoder may pad one more)
            t = min(round(len(wav) / 320), frames)
            for l in range(5):
                sums[l] += torch.nn.functional.cosine_similarity(ins[l][:t, 0].double(), outs[l][:t, 0].double(), dim=1).sum().item()
            count += t
    np.testing.assert_allclose(stats.block_influence, 1 - sums / count, rtol=1e-5, atol=1e-7)
    assert abs(stats.block_influence[2]) < 1e-6 and abs(stats.block_influence[4]) < 1e-6  # identity layers
    assert min(stats.block_influence[[0, 1, 3]]) > 1e-3


@pytest.mark.parametrize("name", ["block-influence", "knn-block-influence", "similarity-blocks"])
def test_identity_layers_are_removed_first(name, identity_ckpt, labelled):
    ckpt, _ = identity_ckpt
    strategy = build_strategy(name)
    stats = collect_statistics(make_upstream(ckpt), AudioDataset.from_data(labelled[0]), strategy.needs, batch_size=4)
    plan = S.plan_layers(strategy, 5, S.Target("drop", 2), stats)
    assert sorted(plan.remove) == [2, 4], plan.to_dict()


def test_similarity_blocks_keeps_one_representative_per_block():
    s = np.full((7, 7), 0.2)
    for first, last in [(0, 1), (2, 4), (5, 6)]:
        s[first : last + 1, first : last + 1] = 0.95
    np.fill_diagonal(s, 1.0)
    stats = LayerStatistics(num_layers=6, utterance_ids=[], frames=0, similarity=s, similarity_metric="cka")
    plan = S.plan_layers(build_strategy("similarity-blocks"), 6, S.Target("default"), stats)
    assert plan.remove == [5, 3, 2] and plan.keep == [0, 1, 4]
    assert plan.ranking.details["blocks"]["blocks"] == [[0, 1], [2, 4], [5, 6]]
    two = S.plan_layers(build_strategy("similarity-blocks", per_block=2), 6, S.Target("default"), stats)
    assert two.remove == [3]  # block 1 keeps layers 1, 2; block 2 (layers 4, 5) keeps both


def test_convexity_strategy_removes_layers_after_the_peak():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 15)
    offsets = [0.0, 0.5, 40.0, 40.0, 1.0]  # states 2 and 3 separate the classes perfectly; state 4 mixes them
    pooled = np.stack([rng.standard_normal((30, 3)) + np.where(labels == "a", 0, o)[:, None] for o in offsets], axis=1)
    stats = LayerStatistics(num_layers=4, utterance_ids=[], frames=0, pooled=pooled, labels=labels.tolist())
    plan = S.plan_layers(build_strategy("convexity"), 4, S.Target("default"), stats)
    assert plan.ranking.details["peak_state"] == 2 and plan.remove == [3, 2] and plan.keep == [0, 1]
    least = S.plan_layers(build_strategy("convexity", mode="least-added"), 4, S.Target("drop", 1), stats)
    assert least.remove == [3]  # layer 3 (state 3 -> 4) loses the most convexity
    stats.labels = None
    with pytest.raises(UserInputError, match="needs class labels"):
        S.plan_layers(build_strategy("convexity"), 4, S.Target("default"), stats)


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------
def test_labels_from_folders_and_csv(labelled):
    folder, info = labelled
    dataset = AudioDataset.from_data(folder)
    by_folder = load_labels(dataset)
    by_csv = load_labels(dataset, info["csv"])
    assert by_folder == by_csv and sorted(set(by_folder)) == ["class0", "class1", "class2"]


def test_labels_that_do_not_match_the_audio(labelled, tmp_path):
    folder, info = labelled
    dataset = AudioDataset.from_data(folder)
    partial = tmp_path / "partial.csv"
    partial.write_text("path,label\n" + "".join(f"{p.relative_to(folder)},{l}\n" for p, l in list(zip(info["files"], info["labels"]))[:-2]))
    with pytest.raises(UserInputError, match="2 of 12 audio files in `data` have no label"):
        load_labels(dataset, partial)
    other = tmp_path / "other.csv"
    other.write_text("path,label\nnowhere/x.wav,a\n")
    with pytest.raises(UserInputError, match="do not exist under `data`"):
        load_labels(dataset, other)
    one = tmp_path / "one.csv"
    one.write_text("".join(f"{p},{'same'}\n" for p in info["files"]))
    with pytest.raises(UserInputError, match="only one class"):
        load_labels(dataset, one)


# --------------------------------------------------------------------------------------
# The new prune command
# --------------------------------------------------------------------------------------
FAST = ["--no-latency", "--cost-seconds", "1"]


def test_prune_by_block_influence_writes_scores_manifest_and_plot(identity_ckpt, labelled, tmp_path, capsys):
    _, path = identity_ckpt
    out = tmp_path / "out"
    argv = ["prune", "--upstream", "hubert_local", "--ckpt", str(path), "--strategy", "block-influence", "--drop", "2",
            "--data", str(labelled[0]), "--max-utterances", "6", "--out", str(out), "--latency-seconds", "0.5", "--latency-repeats", "1",
            "--cost-seconds", "1"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["removed_layers"] == [2, 4] and manifest["keep_layers"] == [0, 1, 3]
    layers = manifest["plan"]["layers"]
    assert [l["kept"] for l in layers] == [True, True, False, True, False]
    assert all("score" in l and "why" in l for l in layers) and abs(layers[2]["score"]) < 1e-6
    cost = manifest["cost"]
    assert cost["after"]["parameters"]["inference"] < cost["before"]["parameters"]["inference"]
    assert cost["after"]["macs"]["value"] < cost["before"]["macs"]["value"] and "median_s" in cost["after"]["latency"]
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import s3prl.hub as hub

    pruned = hub.hubert_local(ckpt=str(out / "pruned.pt")).eval()  # s3prl's own entry loads a layer-pruned result
    assert len(pruned([torch.zeros(16000)])["hidden_states"]) == 4


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prune", "--upstream", "wav2vec2_local", "--ckpt", str(tiny_ckpts["wav2vec2"]), "--strategy", "forward-backward",
            "--ratio", "0.5", "--out", str(out), "--dry-run"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "REMOVE #1" in text and "REMOVE #2" in text and "nothing written" in text
    assert json.loads(text.strip().splitlines()[-1])["removed_layers"] == [1, 3]
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--strategy", "block-influence", "--drop", "1"], "scores layers on audio: pass --data"),
        (["--strategy", "backward", "--drop", "4"], "removes every one of the 4 layers"),
        (["--strategy", "backward", "--keep", "4"], "removes no layer"),
        (["--strategy", "backward", "--param-budget", "100"], "below the front end's own cost"),
        (["--drop", "1"], "needs --strategy NAME"),
        ([], "nothing to do"),
        (["--strategy", "nope", "--drop", "1"], "unknown strategy 'nope'"),
        (["--technique", "lowrank"], "needs exactly one of --rank R or --energy E"),
        (["--strategy", "backward", "--drop", "1", "--rank", "4"], "--rank given but --technique does not include"),
        (["--technique", "heads", "--heads-drop", "1"], "--head-importance weight-norm (no data)"),
        (["--strategy", "backward", "--drop", "1", "--bridge", "linear"], "fitted on audio: pass --data"),
        (["--strategy", "convexity", "--data", "FLAT"], "not inside a class sub-folder"),
        (["--strategy", "convexity", "--data", "LABELLED", "--labels", "BADCSV"], "have no label"),
    ],
)
def test_bad_input_gives_a_clear_message_and_writes_nothing(extra, message, tiny_ckpts, labelled, tmp_path, capsys):
    flat = tmp_path / "flat"
    write_labelled_audio(flat, classes=2, per_class=2, seconds=(0.3, 0.4), layout="flat")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(f"{labelled[1]['files'][0]},class0\n")
    subst = {"FLAT": str(flat), "LABELLED": str(labelled[0]), "BADCSV": str(bad_csv)}
    out = tmp_path / "out"
    argv = ["prune", "--upstream", "hubert_local", "--ckpt", str(tiny_ckpts["hubert"]), "--out", str(out), *FAST,
            *[subst.get(a, a) for a in extra]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
