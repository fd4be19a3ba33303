"""``s3prl-redundancy leaderboard``: rebuild the SUPERB leaderboard (CSV, Markdown, JSON, Pareto plot) of a `superb` output folder.

Reads the ``run.json`` of every finished run and the per-item test files s3prl's experts left in its ``expdir``
(nothing is trained or evaluated again: every score gets its 95 % interval, capacity kept a paired one, each row
the SUPERB score over the tasks it ran and its learning rates; seeded, so a rebuild is byte-identical) and
measures the cost of each upstream once (cached in ``cost.json``)."""

from __future__ import annotations

FLAGS = {"exproot": ""}  # a positional argument: written as its value


def add_cost_arguments(parser, threads_help: str) -> None:
    """The options of the cost measurement, shared with the ``superb`` command."""
    for flag, kwargs in (
        ("--reference", dict(help="upstream label that capacity kept is relative to (default: the one recorded by "
                                  "`superb`, i.e. its --reference or first --upstreams entry)")),
        ("--cost-seconds", dict(type=float, default=1.0, help="audio length of the cost measurement (default 1.0)")),
        ("--cost-repeats", dict(type=int, default=5, help="latency repeats; the median is kept (default 5)")),
        ("--threads", dict(type=int, help=threads_help)),
    ):
        parser.add_argument(flag, **kwargs)


def add_arguments(parser):
    parser.add_argument("exproot", help="the --out folder of `s3prl-redundancy superb`")
    parser.add_argument("--device", default="cpu", help="where latency is measured: cpu or cuda (default cpu)")
    add_cost_arguments(parser, "torch threads while timing (default: torch's; 1 on a busy machine)")
    parser.add_argument("--remeasure", action="store_true", help="measure the cost again even if cost.json matches")
    parser.add_argument("--no-cost", action="store_true", help="leave the cost columns empty (no upstream is loaded)")


def run(args) -> int:
    from ..superb.leaderboard import build_leaderboard, check_cost_options, write_leaderboard

    check_cost_options(args.cost_seconds, args.cost_repeats)
    if args.device != "cpu":
        from ..upstream_loading import resolve_device

        resolve_device(args.device)
    board = build_leaderboard(args.exproot, reference=args.reference, device=args.device, cost=not args.no_cost,
                              cost_seconds=args.cost_seconds, cost_repeats=args.cost_repeats, threads=args.threads,
                              remeasure=args.remeasure)
    paths = write_leaderboard(board)
    print(board.markdown)
    print("written: " + ", ".join(paths.values()))
    return 0
