"""``s3prl-redundancy distill``: replace a teacher's whole transformer stack with small mimicking layers.

Writes ``student.pt`` (load it with ``-u distilled_<family> -k student.pt``), ``train_log.csv``,
``manifest.json``, ``loss_curve.png``, ``report.json`` / ``report.md`` and the resumable ``checkpoint.pt``
into ``--out``. Runs on one CPU / GPU, or under ``torchrun --nproc_per_node N`` with DistributedDataParallel.
"""

from __future__ import annotations

import sys


def _positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def add_arguments(parser):
    parser.add_argument("--teacher", required=True,
                        help="teacher entry: hubert_local / wav2vec2_local / wavlm_local (with --ckpt), or hubert / "
                             "wav2vec2 / wavlm (s3prl's default weights, downloaded by s3prl)")
    parser.add_argument("--ckpt", help="teacher checkpoint in s3prl's local format, or a transformers model folder (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="folder of audio (searched recursively) or a file list")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--targets", default=None,
                        help="teacher layers to predict, 1-based hidden_states indices, e.g. 4,8,12 (default: all)")
    parser.add_argument("--arch", default="mlp", choices=["mlp", "linear", "transformer"], help="mimicker (default mlp)")
    parser.add_argument("--hidden", type=int, default=64, help="mimicker width h (default 64, as the paper)")
    parser.add_argument("--no-residual", dest="residual", action="store_false",
                        help="mlp: predict each layer outright instead of adding to the previous prediction")
    parser.add_argument("--heads", type=int, default=0, help="transformer mimicker heads (default hidden // 32)")
    parser.add_argument("--front-end", default="teacher", choices=["teacher", "light"],
                        help="teacher: copy and freeze the teacher's CNN front end (default); light: train a small "
                             "front end at the teacher's frame rate, first alone, then with the mimickers")
    parser.add_argument("--front-end-steps", type=int, default=None,
                        help="light: steps of the first stage, matching the teacher's transformer input "
                             "(default steps // 4)")
    parser.add_argument("--front-end-channels", type=int, default=64, help="light: CNN channels (default 64)")
    parser.add_argument("--layer-weighting", default="none", choices=["none", "variance"],
                        help="none (default): plain sum of per-layer MSEs; variance: each layer's MSE relative to the "
                             "teacher layer's variance, so every layer counts alike")
    parser.add_argument("--no-final-norm", dest="final_norm", action="store_false",
                        help="pre-LN teachers: do not end the last prediction with a copy of the teacher's final "
                             "LayerNorm")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size in utterances (default 8)")
    parser.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--max-seconds", type=_positive_float, default=None, help="crop utterances to their first S seconds")
    parser.add_argument("--max-utterances", type=int, default=None, help="use only the first N files of --data")
    parser.add_argument("--heldout", type=int, default=None,
                        help="utterances held out for the report (default 10%%, 1..100)")
    parser.add_argument("--save-every", type=int, default=500, help="write checkpoint.pt every N steps (default 500)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint.pt")
    parser.add_argument("--force", action="store_true", help="delete a previous run in --out and start over")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default cpu")
    parser.add_argument("--cosine-weight", type=float, default=0.0,
                        help="add DistilHuBERT's -log sigmoid(cos) term with this weight (default 0: MSE only)")
    parser.add_argument("--cache-teacher", action="store_true",
                        help="compute the teacher's features once and train from a disk cache (small datasets)")
    parser.add_argument("--cache-max-gb", type=_positive_float, default=2.0, help="refuse a larger cache (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-report", dest="report", action="store_false", help="skip report.json / report.md")
    parser.add_argument("--report-repeats", type=int, default=5, help="latency repeats in the report (default 5)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")


def resume_hint(args, argv) -> str:
    """What an interrupted run left in ``--out`` and the command that continues it."""
    from pathlib import Path

    from ..cli import command_line
    from ..distill.outputs import STATE as CHECKPOINT

    if not (Path(args.out) / CHECKPOINT).is_file():
        return f"no checkpoint was written yet (the first comes at step {args.save_every}); run the same command again"
    resume = command_line("distill", argv, add=["--resume"], drop=["--force"])
    return f"the last checkpoint is {Path(args.out) / CHECKPOINT}; continue with: {resume}"


def run(args) -> int:
    import json

    from ..distill.trainer import DistillConfig, TrainingDivergedError, distill

    cfg = DistillConfig(**{k: v for k, v in vars(args).items() if k in DistillConfig.__dataclass_fields__})
    try:
        manifest = distill(cfg)
    except TrainingDivergedError as e:
        print(f"s3prl-redundancy distill: training diverged: {e}", file=sys.stderr)
        return 1
    if manifest:
        summary = {k: manifest[k] for k in ("student", "load_with", "targets")}
        summary.update(initial_loss=manifest["training"]["initial_loss"], final_loss=manifest["training"]["final_loss"])
        print(json.dumps(summary))
    return 0
