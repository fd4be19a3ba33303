"""``s3prl-redundancy prune``: remove layers by a strategy and/or apply heads / low-rank / magnitude compression.

``--strategy`` (backward, forward, forward-backward, explicit, shallow, block-influence, knn-block-influence,
similarity-blocks, convexity, or a plugin's) with a target (``--drop``/``--keep``/``--ratio``/
``--param-budget``/``--latency-budget``); ``--keep-layers 0,1,3`` alone is the strategy ``explicit``, as in the
first version of this command. ``--bridge linear`` replaces removed runs by fitted linear maps;
``--technique heads,lowrank,magnitude`` compresses further. Writes ``pruned.pt``, ``manifest.json`` (what was
removed and why, every layer's score, parameters / MACs / latency before and after) and ``scores.png``;
``--dry-run`` prints the plan and writes nothing. See ``docs/compression.md``.
"""

from __future__ import annotations

import json
import sys

# Python argument names in library errors -> this command's flags (the rest are --name-with-dashes)
FLAGS = {"out_dir": "--out", "similarity_metric": "--similarity"}


def add_arguments(parser):
    from s3prl_redundancy.compression.strategies import BUILTIN_STRATEGIES  # the help lists built-ins: no plugin import here

    parser.add_argument("--upstream", required=True, help="source family entry, e.g. hubert_local, wav2vec2_local, wavlm_local, or tiny_hubert (the embedded model)")
    parser.add_argument("--ckpt", help="source checkpoint (s3prl local format) or a transformers model folder (config.json + model.safetensors); default: s3prl's default weights for the family")
    parser.add_argument("--out", required=True, help="output folder (pruned.pt, manifest.json, scores.png)")
    parser.add_argument("--force", action="store_true", help="replace the outputs of an earlier run of this command in --out (only those; other files are kept)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (and what the techniques would remove); write nothing")

    g = parser.add_argument_group("layer selection")
    g.add_argument("--strategy", help=f"how to choose layers to remove: {', '.join(BUILTIN_STRATEGIES)} (or a plugin's); "
                                      "default: explicit when --keep-layers is given")
    t = g.add_mutually_exclusive_group()
    t.add_argument("--drop", type=int, help="remove N layers")
    t.add_argument("--keep", type=int, help="keep N layers")
    t.add_argument("--ratio", type=float, help="remove this fraction of the layers (0 < R < 1)")
    t.add_argument("--keep-layers", help="0-based transformer layers to keep, e.g. 0,1,3 (strategy explicit)")
    t.add_argument("--param-budget", help="at most this many inference parameters: 50M, 2.5e7 or 60%% (of the model)")
    t.add_argument("--latency-budget", help="at most this latency on --latency-seconds of audio on this machine: 0.3, 300ms or 80%%")
    g.add_argument("--per-block", type=int, default=1, help="similarity-blocks: layers kept per block (default 1)")
    g.add_argument("--similarity", choices=("cka", "cosine"), default="cka", help="similarity-blocks: similarity of states (default cka)")
    g.add_argument("--convexity-mode", choices=("peak", "least-added"), default="peak",
                   help="convexity: remove the layers after the convexity peak, or those adding least convexity")
    g.add_argument("--convexity-k", type=int, default=10, help="convexity: neighbours in the k-NN graph (default 10)")
    g.add_argument("--convexity-pairs", type=int, default=5000, help="convexity: same-class pairs sampled per class (default 5000)")
    g.add_argument("--knn-k", type=int, default=10, help="knn-block-influence: neighbours (default 10)")
    g.add_argument("--knn-frames", type=int, default=4096, help="knn-block-influence: frames sampled (default 4096)")

    d = parser.add_argument_group("data (for data-driven strategies, head importance and bridges)")
    d.add_argument("--data", help="folder of audio (searched recursively) or a file list")
    d.add_argument("--labels", help="CSV with rows path,label (default for convexity: one sub-folder of --data per class)")
    d.add_argument("--max-utterances", type=int, help="use at most this many files of --data")
    d.add_argument("--max-seconds", type=float, default=20.0, help="crop each utterance to its first seconds (default 20)")
    d.add_argument("--batch-size", type=int, default=4)
    d.add_argument("--seed", type=int, default=0)

    b = parser.add_argument_group("bridges")
    b.add_argument("--bridge", choices=("linear",), help="replace each removed run of layers by a linear map fitted on --data")
    b.add_argument("--bridge-ridge", type=float, default=1e-4, help="ridge, relative to the input variance (default 1e-4)")
    b.add_argument("--bridge-holdout", type=float, default=0.2,
                   help="fraction of --data held out to measure plain removal vs bridge (default 0.2; 0: fit on all, no measurement)")

    c = parser.add_argument_group("techniques (applied after layer removal, in the order given)")
    c.add_argument("--technique", help="comma-separated: heads, lowrank, magnitude")
    c.add_argument("--heads-drop", type=int, help="heads: remove N heads in all")
    c.add_argument("--heads-ratio", type=float, help="heads: remove this fraction of all heads")
    c.add_argument("--head-importance", choices=("output-norm", "weight-norm"), default="output-norm",
                   help="heads: output-norm (measured on --data, default) or weight-norm (no data)")
    c.add_argument("--min-heads-per-layer", type=int, default=1)
    c.add_argument("--rank", type=int, help="lowrank: rank of every factorised matrix")
    c.add_argument("--energy", type=float, help="lowrank: keep this fraction of each matrix's spectral energy (0 < E <= 1)")
    c.add_argument("--lowrank-modules", help="lowrank: ffn, attention, or fc1,fc2,q_proj,k_proj,v_proj,out_proj (default all)")
    c.add_argument("--sparsity", type=float, help="magnitude: fraction of linear weights set to zero")
    c.add_argument("--magnitude-scope", choices=("module", "global"), default="module")

    m = parser.add_argument_group("cost measurement")
    m.add_argument("--cost-seconds", type=float, default=10.0, help="audio length for MACs (default 10 s)")
    m.add_argument("--latency-seconds", type=float, default=10.0, help="audio length for latency (default 10 s)")
    m.add_argument("--latency-repeats", type=int, default=3)
    m.add_argument("--no-latency", action="store_true", help="do not measure latency (parameters and MACs only)")
    m.add_argument("--progress", action="store_true", help="progress bars for passes over --data")


def _print_plan(plan, out=None) -> None:
    out = out if out is not None else sys.stdout
    r = plan.ranking
    print(f"strategy {plan.strategy}: {plan.target.describe()}; {plan.num_layers} layers -> keep {plan.keep}", file=out)
    if r.score_name:
        print(f"score: {r.score_name} (higher = more important)", file=out)
    for l in range(plan.num_layers):
        score = "" if r.scores is None else f"{r.scores[l]: .4g}"
        mark = f"REMOVE #{plan.remove.index(l) + 1}" if l in plan.remove else "keep"
        print(f"  layer {l:>3}  {score:>10}  {mark:<10}  {r.reasons.get(l, '')}", file=out)


def _choose(args):
    """Validate every option before heavy work: ``(family, target, strategy or None, techniques)``."""
    from ..compression.compress import TechniqueOptions, parse_techniques
    from ..compression.strategies import Target
    from ..errors import UserInputError
    from ..families import family_for_upstream
    from ..plugins import build_strategy

    family = family_for_upstream(args.upstream)
    target = Target.from_options(args.drop, args.keep, args.ratio, args.keep_layers, args.param_budget, args.latency_budget)
    name = args.strategy or ("explicit" if target.kind == "layers" else None)
    techniques = TechniqueOptions(parse_techniques(args.technique), args.heads_drop, args.heads_ratio, args.head_importance,
                                  args.min_heads_per_layer, args.rank, args.energy, args.lowrank_modules, args.sparsity,
                                  args.magnitude_scope)
    if name is None and target.kind != "default":
        raise UserInputError("a layer target (--drop/--keep/--ratio/--param-budget/--latency-budget) needs --strategy NAME")
    if name is None and not techniques.techniques:
        raise UserInputError("nothing to do: give --strategy (with a target) or --keep-layers, and/or --technique heads|lowrank|magnitude")
    strategy = None
    if name is not None:
        strategy = build_strategy(name, keep_layers=list(target.value) if target.kind == "layers" else None,
                                  per_block=args.per_block, mode=args.convexity_mode, k=args.convexity_k,
                                  max_pairs=args.convexity_pairs, seed=args.seed)
        if strategy.needs_data and not args.data:
            raise UserInputError(
                f"strategy {name!r} scores layers on audio: pass --data DIR (a folder of audio files or a file list)"
                + (" with class labels (--labels CSV, or one sub-folder per class)" if strategy.needs_labels else "")
            )
    techniques.validate(has_data=bool(args.data))
    if args.bridge and not args.data:
        raise UserInputError("--bridge linear is fitted on audio: pass --data DIR")
    if args.bridge and strategy is None:
        raise UserInputError("--bridge replaces removed layers: it needs --strategy (or --keep-layers)")
    return family, target, strategy, techniques


def _load_data(args, strategy, fam, ckpt):
    """``(dataset, labels)`` from ``--data`` / ``--labels`` (None where not given or not needed); clips too
    short for the model's CNN front end are skipped (and named)."""
    from ..errors import UserInputError

    if not args.data:
        if args.labels:
            raise UserInputError("--labels labels the audio of --data; pass --data too")
        return None, None
    from ..audio import AudioDataset
    from ..compression.statistics import load_labels

    dataset = AudioDataset.from_data(args.data, max_utterances=args.max_utterances, max_seconds=args.max_seconds)
    dataset = dataset.without_short_clips(fam.min_samples(ckpt))
    labels = None
    if args.labels or (strategy is not None and strategy.needs_labels):
        labels = load_labels(dataset, args.labels)
    return dataset, labels


def _plan(args, strategy, target, fam, ckpt, dataset, labels):
    """``(plan, statistics)``: the layers ``strategy`` removes for ``target`` (statistics where it needs them)."""
    from ..compression.strategies import plan_layers

    stats = None
    if strategy.needs:
        from ..compression.statistics import collect_statistics
        from ..compression.structure import make_upstream

        stats = collect_statistics(make_upstream(ckpt), dataset, strategy.needs, batch_size=args.batch_size,
                                   knn_k=args.knn_k, knn_frames=args.knn_frames, similarity_metric=args.similarity,
                                   seed=args.seed, progress=args.progress)
        stats.labels = labels
    cost = None
    if target.kind in ("param_budget", "latency_budget"):
        from ..compression.cost import LayerCostModel

        model = LayerCostModel(ckpt, latency_seconds=args.latency_seconds, repeats=args.latency_repeats)
        cost = model.functions(("parameters",) if target.kind == "param_budget" else ("parameters", "latency"))
    return plan_layers(strategy, fam.num_layers(ckpt), target, stats, cost), stats


def _print_dry_run(args, plan, result) -> None:
    from ..compression.compress import build_manifest

    meta = result.checkpoint["s3prl_redundancy"]
    if plan is not None:
        _print_plan(plan)
    summary = build_manifest(result)
    for key in ("heads", "lowrank", "magnitude", "bridges"):
        if key in summary:
            print(f"{key}: {json.dumps(summary[key])[:2000]}")
    print(f"dry run: nothing written (would write {args.out}/pruned.pt, manifest.json, scores.png)")
    print(json.dumps({"dry_run": True, "keep_layers": meta["keep_layers"], "removed_layers": meta["removed_layers"],
                      "parameters": [meta["parameters_before"]["total"], meta["parameters_after"]["total"]]}))


def _extra_manifest(args, ckpt, result, plan, stats, dataset, labels) -> dict:
    """What the manifest records beyond the compression itself: costs, budget model, statistics, data."""
    from ..compression.compress import measure_costs

    extra = {"cost": measure_costs(ckpt, result.checkpoint, seconds=args.cost_seconds, latency=not args.no_latency,
                                   latency_seconds=args.latency_seconds, repeats=args.latency_repeats)}
    if plan is not None and plan.cost:
        extra["budget_model"] = plan.cost
    if stats is not None:
        extra["statistics"] = stats.options
    if dataset is not None:
        extra["data"] = {"path": str(args.data), "utterances": len(dataset), "labels": args.labels,
                         "classes": sorted(set(labels)) if labels else None}
    return extra


def run(args) -> int:
    from s3prl_redundancy.upstreams.pruned.expert import resolve_source

    from ..checkpoints import load_family_checkpoint
    from ..compression.compress import compress, output_dir, write_output
    from ..families import embedded_checkpoint

    args.ckpt = args.ckpt or embedded_checkpoint(args.upstream)
    family, target, strategy, techniques = _choose(args)
    out = None if args.dry_run else output_dir(args.out, args.force, command="prune")
    source = resolve_source(family.name, args.ckpt)
    fam, ckpt = load_family_checkpoint(source, expected_family=family.name)
    if strategy is not None and strategy.advice(ckpt):
        print(f"note: {strategy.advice(ckpt)}", file=sys.stderr)
    dataset, labels = _load_data(args, strategy, fam, ckpt)
    plan = stats = None
    if strategy is not None:
        plan, stats = _plan(args, strategy, target, fam, ckpt, dataset, labels)
    fit_data = holdout = None
    if args.bridge:
        from ..compression.bridges import split_dataset

        fit_data, holdout = (split_dataset(dataset, args.bridge_holdout, args.seed) if args.bridge_holdout > 0 else (dataset, None))
    result = compress(ckpt, source=args.ckpt or family.default_url, plan=plan, bridge=args.bridge,
                      bridge_ridge=args.bridge_ridge, bridge_data=fit_data, bridge_holdout_data=holdout,
                      techniques=techniques, data=dataset, batch_size=args.batch_size, progress=args.progress)
    if args.dry_run:
        _print_dry_run(args, plan, result)
        return 0
    path = write_output(result, out, extra_manifest=_extra_manifest(args, ckpt, result, plan, stats, dataset, labels))
    meta = result.checkpoint["s3prl_redundancy"]
    before, after = meta["parameters_before"]["total"], meta["parameters_after"]["total"]
    print(json.dumps({"checkpoint": str(path), "keep_layers": meta["keep_layers"], "removed_layers": meta["removed_layers"],
                      "parameters": [before, after], "manifest": str(path.parent / "manifest.json")}))
    return 0
