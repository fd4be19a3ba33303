"""``s3prl-redundancy demo``: the whole study (similarity, pruning, distillation, SUPERB, leaderboard) offline.

Runs on the embedded ``tiny_hubert`` by default (no network): builds the mini-SUPERB corpus, analyses layer
similarity, prunes about 40% of the layers with two strategies, distills a mimicking-layer student,
measures how much keyword-spotting capacity each compressed upstream keeps with a frozen-feature probe on voices
pretraining never heard (paired 95 % intervals), checks the original, pruned and distilled upstreams on KS and
SID (ER and ASR with ``--full``) through s3prl's real ``run_downstream`` (smoke profile), and writes
``report.md`` / ``report.html``. A second run
reuses finished stages. ``--upstream hubert`` runs the same study on HuBERT Base where it can be downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_arguments(parser):
    parser.add_argument("--upstream", default="tiny_hubert",
                        help="tiny_hubert (embedded, default), or hubert / wav2vec2 / wavlm (s3prl's released weights)")
    parser.add_argument("--out", default="demo_out", help="output folder (default ./demo_out); reused stages live here")
    parser.add_argument("--quick", action="store_true", help="smallest settings that exercise every stage (tests, CI)")
    parser.add_argument("--full", action="store_true", help="also evaluate ER and ASR")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--probe-voices", type=int, default=None,
                        help="voices of the measured keyword probe (10 clips each, half of the voices for testing; "
                             "default 120, 12 with --quick)")


def run(args) -> int:
    from ..demo.report import write_report
    from ..demo.study import StudyPlan, run_study
    from ..errors import UserInputError

    if args.probe_voices is not None and args.probe_voices < 4:
        raise UserInputError(f"must be >= 4 (half of the voices test the probe), got {args.probe_voices}",
                             argument="probe_voices")

    plan = StudyPlan(out=Path(args.out).resolve(), upstream=args.upstream, quick=args.quick, full=args.full,
                     device=args.device, probe_voices=args.probe_voices)
    run_study(plan)
    paths = write_report(plan.out, plan.log, plan.upstream)
    print(json.dumps({"report": str(paths["markdown"]), "html": str(paths["html"])}))
    return 0
