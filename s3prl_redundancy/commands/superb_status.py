"""``s3prl-redundancy superb-status``: the state of every run of a `superb` output folder (queued, running, finished, failed with the tail of its log).

Reads the run folders (``run.json``) and asks the launcher that holds a run's job (SLURM's ``sacct`` through
submitit, or submitit's local executor) whether it is queued or running. Nothing is submitted or changed.

Example::

    s3prl-redundancy superb-status exp
"""

from __future__ import annotations

FLAGS = {"exproot": ""}  # a positional argument: written as its value


def add_arguments(parser):
    parser.add_argument("exproot", help="the --out folder of `s3prl-redundancy superb`")
    parser.add_argument("--tail", type=int, default=15, help="log lines shown for a failed run (default 15)")
    parser.add_argument("--json", action="store_true", help="print the states as JSON")


def run(args) -> int:
    import json
    from pathlib import Path

    from ..errors import UserInputError
    from ..superb.cluster import experiment_status
    from ..superb.runs import RUNS_DIR

    root = Path(args.exproot)
    if not (root / RUNS_DIR).is_dir():
        raise UserInputError(f"{root} has no {RUNS_DIR}/ folder: not the output of superb (or nothing ran yet)",
                             argument="exproot")
    states = experiment_status(root, tail=args.tail)
    if args.json:
        print(json.dumps(states, indent=1))
        return 0
    counts = {}
    for s in states:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
        job = f" job {s['job_id']} ({s['launcher']}, {s['phase']})" if s["job_id"] else ""
        print(f"{s['run']:<28} {s['state']:<12}{job} {s['detail']}".rstrip())
        if s["state"] in ("failed",) and s["log_tail"]:
            print(f"  log: {s['log']}")
            print("\n".join("  | " + line for line in s["log_tail"].splitlines()))
    print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no runs yet")
    return 0
