"""``s3prl-redundancy sweep``: capacity versus layers removed, one curve per strategy (linear probe on labelled audio).

Prunes 0..--max-drop layers by each strategy, evaluates every model with a logistic-regression probe on
utterance-level mean-pooled features (held-out split) and the CKA of its output to the source model's,
and writes sweep.csv, sweep.png and sweep.json into --out. See docs/compression.md.
"""

from __future__ import annotations

import json

# Python argument names in library errors -> this command's flags (the rest are --name-with-dashes)
FLAGS = {"out_dir": "--out", "similarity_metric": "--similarity"}


def add_arguments(parser):
    parser.add_argument("--upstream", required=True, help="source family entry, e.g. hubert_local, wav2vec2_local, wavlm_local")
    parser.add_argument("--ckpt", help="source checkpoint (s3prl local format) or a transformers model folder (config.json + model.safetensors); default: s3prl's default weights for the family")
    parser.add_argument("--strategies", required=True, help="comma-separated, e.g. backward,forward,block-influence,convexity")
    parser.add_argument("--data", required=True, help="labelled audio: one sub-folder per class, or any folder with --labels")
    parser.add_argument("--labels", help="CSV with rows path,label")
    parser.add_argument("--max-drop", type=int, required=True, help="evaluate 0..N layers removed")
    parser.add_argument("--out", required=True, help="output folder (sweep.csv, sweep.png, sweep.json)")
    parser.add_argument("--force", action="store_true", help="replace the outputs of an earlier run of this command in --out (only those; other files are kept)")
    parser.add_argument("--probe-features", choices=("mean", "last"), default="mean",
                        help="probe on the mean of all hidden states (default) or the last one")
    parser.add_argument("--test-fraction", type=float, default=0.3, help="held-out fraction for the probe (stratified)")
    parser.add_argument("--bridge", choices=("linear",), help="also evaluate every selection with linear bridges over the removed runs")
    parser.add_argument("--bridge-ridge", type=float, default=1e-4)
    parser.add_argument("--per-block", type=int, default=1, help="similarity-blocks: layers kept per block")
    parser.add_argument("--similarity", choices=("cka", "cosine"), default="cka")
    parser.add_argument("--convexity-mode", choices=("peak", "least-added"), default="peak")
    parser.add_argument("--convexity-k", type=int, default=10)
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--knn-frames", type=int, default=4096)
    parser.add_argument("--max-utterances", type=int)
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")


def run(args) -> int:
    from s3prl_redundancy.upstreams.pruned.expert import resolve_source

    from ..audio import AudioDataset
    from ..checkpoints import load_family_checkpoint
    from ..compression.statistics import load_labels
    from ..compression.sweep import OUTPUT_NAMES, run_sweep, write_sweep
    from ..compression.compress import output_dir
    from ..errors import UserInputError
    from ..families import embedded_checkpoint, family_for_upstream

    family = family_for_upstream(args.upstream)
    args.ckpt = args.ckpt or embedded_checkpoint(args.upstream)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise UserInputError("`strategies` is empty; give e.g. backward,block-influence")
    out = output_dir(args.out, args.force, command="sweep", names=OUTPUT_NAMES)
    dataset = AudioDataset.from_data(args.data, max_utterances=args.max_utterances, max_seconds=args.max_seconds)
    source = resolve_source(family.name, args.ckpt)
    fam, ckpt = load_family_checkpoint(source, expected_family=family.name)
    dataset = dataset.without_short_clips(fam.min_samples(ckpt))
    labels = load_labels(dataset, args.labels)
    result = run_sweep(
        ckpt, strategies, dataset, labels, args.max_drop, source=args.ckpt or family.default_url,
        strategy_options={"per_block": args.per_block, "mode": args.convexity_mode, "k": args.convexity_k, "seed": args.seed},
        probe_features=args.probe_features, test_fraction=args.test_fraction, bridge=args.bridge,
        bridge_ridge=args.bridge_ridge, batch_size=args.batch_size, knn_k=args.knn_k, knn_frames=args.knn_frames,
        similarity_metric=args.similarity, seed=args.seed, progress=args.progress,
    )
    path = write_sweep(result, out)
    print(json.dumps({"csv": str(path), "rows": len(result.rows), "evaluations": result.options["evaluations"]}))
    return 0
