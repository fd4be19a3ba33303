"""``s3prl-redundancy lc-finetune``: layer-consistency fine-tuning, so every prefix of k layers gives usable features.

Continues training an unshared pretrained model (a ``hubert_local`` / ``wav2vec2_local`` / ``wavlm_local``
checkpoint, ``tiny_hubert``, or s3prl's ``hubert`` / ``wav2vec2`` / ``wavlm`` weights) with a sampled exit depth
against its frozen original's final layer (arXiv 2105.00812), plus HuBERT's masked-prediction loss at that depth
when ``--targets`` gives the k-means centres it was pretrained against. Writes ``lc_<family>.pt`` (the family's
s3prl local format; serve its first k layers with ``-u lc_<family> -k lc_<family>.pt -g depth.yaml``),
``history.json``, ``manifest.json``, ``loss_curve.png`` and
the resumable ``train_state.pt`` into ``--out``. One process, or ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

FLAGS = {"upstream": "--upstream", "depth_range": "--depth-range", "stop_after": "--stop-after"}


def add_arguments(parser):
    parser.add_argument("--upstream", required=True,
                        help="model to fine-tune: hubert_local / wav2vec2_local / wavlm_local (with --ckpt), tiny_hubert "
                             "(the shipped model unless --ckpt), or hubert / wav2vec2 / wavlm (s3prl's default weights, "
                             "downloaded by s3prl)")
    parser.add_argument("--ckpt", help="checkpoint in s3prl's local format of the family (hubert_local, wav2vec2_local, "
                                       "wavlm_local)")
    parser.add_argument("--data", required=True, help="folder of audio (searched recursively) or a file list")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size in utterances (default 8)")
    parser.add_argument("--crop-seconds", type=float, default=2.0, help="crop of every utterance of a batch (default 2 s; the shortest utterance of the batch if shorter)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4, constant)")
    parser.add_argument("--depth-range", metavar="LO,HI", help="exit depths drawn uniformly per step (default 1,L: every depth)")
    parser.add_argument("--mse-weight", type=float, default=1.0, help="weight of the frame MSE to the frozen final layer (default 1)")
    parser.add_argument("--cosine-weight", type=float, default=1.0, help="weight of mean(1 - cos) to the frozen final layer (default 1)")
    parser.add_argument("--targets", metavar="CENTRES",
                        help="k-means centres of MFCC frames the model was pretrained against (pretrain-tiny's "
                             "targets_*.npz in its data folder, or a (K, 39) .npy): adds the masked-prediction loss "
                             "at the sampled depth (HuBERT only)")
    parser.add_argument("--mp-weight", type=float, default=1.0, help="weight of the masked-prediction loss (default 1; with --targets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", type=int, default=None, help="utterances held out for the per-depth loss (default 10%%, 1..100)")
    parser.add_argument("--max-utterances", type=int, default=None, help="use only the first N files of --data")
    parser.add_argument("--max-seconds", type=float, default=None, help="crop utterances to their first S seconds")
    parser.add_argument("--save-every", type=int, default=50, help="write train_state.pt every N steps (default 50)")
    parser.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this many steps in total; --resume continues exactly")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from train_state.pt")
    parser.add_argument("--force", action="store_true", help="delete a previous lc-finetune run in --out and start over")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default cpu")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")


def run(args) -> int:
    import json

    from ..layer_consistency.finetune import LCFinetuneConfig, lc_finetune

    cfg = LCFinetuneConfig(**{k: v for k, v in vars(args).items() if k in LCFinetuneConfig.__dataclass_fields__})
    manifest = lc_finetune(cfg)
    if manifest:
        losses = manifest["heldout_depth_losses"]
        print(json.dumps({"checkpoint": manifest["load_with"], "steps": manifest["steps"],
                          "heldout_loss_before": losses.get("before"), "heldout_loss_after": losses.get("after")}))
    return 0
