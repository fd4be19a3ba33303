"""``s3prl-redundancy similarity``: layer-by-layer similarity (cosine, CKA, debiased CKA, mutual k-NN), blocks and block influence of an s3prl upstream.

Runs the upstream once over the audio of ``--data`` and writes ``similarity.json``, one CSV and one
heatmap per metric, ``similarity_all.png`` and ``block_influence.png`` into ``--out``. Under
``torchrun --nproc_per_node N`` the data is sharded across the processes (gloo on CPU, nccl on CUDA),
the statistics are all-reduced and rank 0 writes the same numbers as one process.
"""

from __future__ import annotations

import json

FLAGS = {
    "out_dir": "--out",
    "dataset": "--data",
    "metric_options": "--mknn-k / --mknn-max-frames / --seed",
    "checkpoint_dir": "--out",
}
"""Python argument -> flag, where the library's argument names differ from this command's flags."""


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_arguments(parser):
    parser.add_argument("--upstream", required=True, help="s3prl hub entry, e.g. hubert_local, wav2vec2_local, wavlm_local, distiller_local, pruned_hubert")
    parser.add_argument("--ckpt", help="upstream checkpoint, passed to the entry as s3prl's -k/--upstream_ckpt: a path, folder, URL or hub id, as the entry takes it (hf_*_custom: a transformers folder or hub id; the *_local and this project's entries also take a transformers folder)")
    parser.add_argument("--model-config", help="upstream model config YAML, passed to the entry as s3prl's -g/--upstream_model_config")
    parser.add_argument("--data", required=True, help="folder of audio (wav/flac/ogg, searched recursively) or a text file listing audio paths")
    parser.add_argument("--metrics", default="cosine,cka,debiased_cka,mknn",
                        help="comma-separated metrics (default: cosine,cka,debiased_cka,mknn); block influence is always computed")
    parser.add_argument("--max-utterances", type=_positive_int, help="use the first N files (sorted)")
    parser.add_argument("--max-seconds", type=_positive_float, help="crop every utterance to its first S seconds")
    parser.add_argument("--batch-size", type=_positive_int, default=8,
                        help="utterances per forward (default 8); 1 makes every utterance's hidden states independent of padding")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    parser.add_argument("--mknn-k", type=_positive_int, default=10, help="neighbours for mutual k-NN (default 10)")
    parser.add_argument("--mknn-max-frames", type=_positive_int, default=4096, help="frames sampled for mutual k-NN (default 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutual k-NN frame sample (and torch) (default 0)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--force", action="store_true", help="overwrite results already in --out (and discard an interrupted run's checkpoint unless --resume)")
    parser.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                        help="save the statistics to OUT/.partial after every N utterances (per process), for --resume")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run whose checkpoint is in OUT/.partial")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader processes reading audio (default 0: in the main process)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _metric_options(args, names) -> dict:
    from ..similarity.analysis import metric_registry
    from ..similarity.metrics import constructor_options

    registry = metric_registry()
    options = {}
    for name in names:
        cls = registry.get(name)
        if cls is None:
            continue
        params = constructor_options(cls)
        opts = {}
        if name == "mknn":
            opts.update(k=args.mknn_k, max_frames=args.mknn_max_frames)
        if "seed" in params:
            opts["seed"] = args.seed
        if opts:
            options[name] = opts
    return options


def run(args) -> int:
    import torch

    from .. import distributed as dist_utils
    from ..audio import AudioDataset
    from ..errors import UserInputError
    from ..similarity.analysis import PARTIAL_DIR, MetricSet, result_names, analyze, check_output_dir

    ctx = dist_utils.init_from_env(args.device)
    try:
        names = [m.strip() for m in args.metrics.split(",") if m.strip()]
        options = _metric_options(args, names)
        MetricSet(names, options)  # unknown names / bad options fail before any work
        if args.num_workers < 0:
            raise UserInputError(f"must be >= 0, got {args.num_workers}", argument="num_workers")
        use_checkpoints = bool(args.checkpoint_every) or args.resume
        outputs = result_names(names) + ([PARTIAL_DIR] if use_checkpoints else [])
        # the folder policy (incl. writability) is checked before the audio is listed or the model loaded
        out = check_output_dir(args.out, force=args.force, resume=args.resume, outputs=outputs)
        dataset = AudioDataset.from_data(args.data, max_utterances=args.max_utterances, max_seconds=args.max_seconds)
        partial = out.path / PARTIAL_DIR
        dist_utils.barrier()
        if ctx.is_main and use_checkpoints:
            out.prepare()  # with --force (and no --resume): deletes the previous run's outputs, .partial included
            out.record(PARTIAL_DIR)
        dist_utils.barrier()
        torch.manual_seed(args.seed)
        report = analyze(
            args.upstream,
            dataset,
            metrics=names,
            batch_size=args.batch_size,
            device=args.device,
            metric_options=options,
            progress=not args.quiet,
            ckpt=args.ckpt,
            model_config=args.model_config,
            checkpoint_dir=partial if use_checkpoints else None,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            num_workers=args.num_workers,
        )
        if ctx.is_main:
            report.write(out)
            if PARTIAL_DIR in out.recorded():
                out.remove(PARTIAL_DIR)
            _print_summary(report, out.path, ctx.world_size)
        dist_utils.barrier()
        return 0
    finally:
        dist_utils.cleanup(ctx)


def resume_hint(args, argv) -> str:
    """What an interrupted run left in ``--out`` and the command that continues it."""
    from pathlib import Path

    from ..cli import command_line
    from ..similarity.analysis import PARTIAL_DIR

    partial = Path(args.out) / PARTIAL_DIR
    if not (args.checkpoint_every or args.resume) or not any(partial.glob("rank*.pt")):
        return ("nothing was saved (save progress with --checkpoint-every N); run the same command again"
                + (" with --force" if not args.force and Path(args.out).is_dir() else ""))
    return f"progress is saved in {partial}; continue with: {command_line('similarity', argv, add=['--resume'], drop=['--force'])}"


def _print_summary(report, out, processes: int) -> None:
    summary = {
        "out": str(out),
        "upstream": report.upstream,
        "num_utterances": report.num_utterances,
        "num_frames": report.num_frames,
        "layers": len(report.layers),
        "processes": processes,
        "blocks": {name: (b or {}).get("blocks") for name, b in report.blocks.items()},
    }
    print(json.dumps(summary), flush=True)
