"""``s3prl-redundancy pretrain-tiny``: pretrain the small HuBERT shipped as ``tiny_hubert`` (MFCC k-means, masked prediction)."""

from __future__ import annotations

import json

FLAGS = {"ckpt": "--targets-from"}  # the checkpoint reader names its file `ckpt`; here it is --targets-from


def add_arguments(parser):
    parser.add_argument("--out", required=True, help="output folder: train_state.pt, tiny_hubert.pt (hubert_local format), history.json, loss_curve.png")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="number of training steps (exactly reproducible for a seed); the shipped model used 800")
    budget.add_argument("--minutes", type=float, help="training time budget: steps = minutes / measured seconds per step (the step count depends on the machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the k-means, the initialisation, batches and masks (default 0)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cpu (default) or cuda (bf16 autocast)")
    parser.add_argument("--data-dir", help="cache folder for the synthetic speech and its targets (default OUT/data)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per step (default 8)")
    parser.add_argument("--sentences", type=int, default=1500, help="synthetic sentences (default 1500, plus --phrases short phrases)")
    parser.add_argument("--phrases", type=int, default=400, help="synthetic 1-3 word phrases (default 400)")
    parser.add_argument("--no-cmn", action="store_true", help="k-means on MFCCs without per-utterance mean removal (fairseq's dump_mfcc_feature.py); keeps more speaker information in the targets")
    parser.add_argument("--clusters", type=int, default=100, help="k-means clusters K of the targets (default 100)")
    parser.add_argument("--targets-from", metavar="CKPT", help="HuBERT's second iteration: k-means targets from a hidden state of this hubert_local checkpoint (e.g. an earlier pretrain-tiny run) instead of MFCCs")
    parser.add_argument("--target-layer", type=int, default=3, help="with --targets-from: the hidden state to cluster (0 = transformer input, 6 = last layer; default 3)")
    parser.add_argument("--share-layers", metavar="all|G", help="layer consistency (arXiv 2105.00812): the transformer layers share one set of weights ('all') or G sets (consecutive groups); default: no sharing")
    parser.add_argument("--depth-range", metavar="LO,HI", help="layer consistency: the depth of every step is drawn uniformly from LO..HI (a function of seed and step), the loss taken after that layer through the final layer norm; default: always all layers")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100; also every 5 minutes)")
    parser.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this many steps in total; the learning-rate schedule still spans --steps, and --resume continues exactly (train in stages)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its train_state.pt")
    parser.add_argument("--force", action="store_true", help="start over even if --out holds a run")


def plot_history(history, evals, path) -> None:
    """A small PNG: training loss (smoothed) and masked accuracy (train, validation)."""
    import matplotlib

    from ..io import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([h["step"] + 1 for h in history])
    loss = np.array([h["loss"] for h in history])
    acc = np.array([h["acc_masked"] for h in history])
    k = max(1, len(loss) // 100)
    smooth = lambda a: np.convolve(a, np.ones(k) / k, mode="valid")  # noqa: E731
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7, 2.6), dpi=80)
    a1.plot(steps[k - 1 :], smooth(loss))
    a1.set_xlabel("step")
    a1.set_ylabel("loss")
    a1.set_title("CE(masked) + 0.5 CE(unmasked)", fontsize=9)
    a2.plot(steps[k - 1 :], smooth(acc), label="train (masked)")
    if evals:
        a2.plot([e["step"] for e in evals], [e["val_acc_masked"] for e in evals], "o-", label="held-out (masked)")
    a2.set_xlabel("step")
    a2.set_ylabel("accuracy")
    a2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def resume_hint(args, argv) -> str:
    """What an interrupted run left in ``--out`` and the command that continues it."""
    from pathlib import Path

    from ..cli import command_line
    from ..pretrain.train import STATE

    if not (Path(args.out) / STATE).is_file():
        return (f"no training state was written yet (the first after {args.checkpoint_every} steps); run the same "
                "command again" + ("" if args.force or args.resume else " with --force"))
    resume = command_line("pretrain-tiny", argv, add=["--resume"], drop=["--force"])
    return f"the last state is {Path(args.out) / STATE}; continue with: {resume}"


def run(args) -> int:
    from pathlib import Path

    from ..errors import UserInputError
    from ..pretrain.data import DataConfig
    from ..pretrain.train import CURVE, TrainConfig, train

    if args.steps is not None and args.steps < 1:
        raise UserInputError(f"must be positive, got {args.steps}", argument="steps")
    if args.stop_after is not None and args.stop_after < 1:
        raise UserInputError(f"must be positive, got {args.stop_after}", argument="stop_after")
    if args.clusters < 2:
        raise UserInputError(f"must be at least 2, got {args.clusters}", argument="clusters")
    if args.minutes is not None and args.minutes <= 0:
        raise UserInputError(f"must be positive, got {args.minutes}", argument="minutes")
    if args.targets_from is not None and args.no_cmn:  # train() checks the file and hashes it
        raise UserInputError("applies to MFCC targets; it cannot be combined with `targets_from`", argument="no_cmn")
    from ..layer_consistency import parse_depth_range, parse_share_layers
    from ..pretrain.model import MODEL_CFG

    n_layers = int(MODEL_CFG["encoder_layers"])
    share = parse_share_layers(args.share_layers, n_layers)
    depth_range = parse_depth_range(args.depth_range, n_layers)
    cfg = TrainConfig(seed=args.seed, steps=args.steps, minutes=args.minutes, batch_size=args.batch_size,
                      checkpoint_every=args.checkpoint_every, mfcc_cmn=not args.no_cmn, n_clusters=args.clusters,
                      targets_from=args.targets_from, target_layer=args.target_layer,
                      share_layers=share, depth_range=depth_range,
                      data=DataConfig(seed=args.seed, n_sentences=args.sentences, n_phrases=args.phrases))
    result = train(cfg, args.out, data_dir=args.data_dir, device=args.device, resume=args.resume, force=args.force,
                   stop_after=args.stop_after, log=lambda m: print(m, flush=True))
    if result["history"]:
        plot_history(result["history"], result["evals"], Path(args.out) / CURVE)
    last = result["evals"][-1] if result["evals"] else {}
    print(json.dumps({"checkpoint": result["checkpoint"], "steps": result["step"], "total_steps": result["total_steps"],
                      "train_seconds": round(result["seconds"], 1), "final_loss": result["history"][-1]["loss"] if result["history"] else None,
                      "val_acc_masked": last.get("val_acc_masked")}))
    return 0
