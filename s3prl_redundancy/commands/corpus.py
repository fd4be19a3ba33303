"""``s3prl-redundancy corpus``: build the mini-SUPERB corpus (espeak-ng speech in the layouts of s3prl's KS, SID, ER, ASR experts).

``s3prl-redundancy corpus --out DIR [--size tiny|small] [--seed N] [--force] [--workers N] [--quiet]``: the
arguments of :func:`s3prl_redundancy.superb.corpus.build_corpus`."""

from __future__ import annotations

FLAGS = {"out_dir": "--out"}


def add_arguments(parser):
    from ..superb.corpus import SIZES

    parser.add_argument("--out", required=True,
                        help="output folder (new or empty; --force to rebuild a corpus built there before)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="tiny (~300 files) or small (~1400 files)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical files")
    parser.add_argument("--force", action="store_true",
                        help="delete the corpus built in --out before (only its files) and build again")
    parser.add_argument("--workers", type=int, default=None, help="parallel espeak-ng processes (default: min(2, CPUs))")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..superb.corpus import build_corpus
    from ..superb.tasks import TASKS

    info = build_corpus(args.out, size=args.size, seed=args.seed, force=args.force, workers=args.workers,
                        progress=not args.quiet)
    print(f"mini-SUPERB {info.size} corpus (seed {info.seed}): {info.n_files} files in {info.build_seconds:.1f} s "
          f"at {info.root}")
    for task in TASKS:
        print(f"  {task:4s} -d {info.downstream[task]:16s} " +
              " ".join(f"{k}={v}" for k, v in info.datarc_for(task).items()))
    return 0
