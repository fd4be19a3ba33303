"""``s3prl-redundancy recipe TASK --out FILE``: a complete s3prl downstream config for ``run_downstream -c FILE``.

The official SUPERB recipe of TASK (ks, sid, er, asr), the profile merged in (``--profile smoke``), the data paths
filled from ``--data-root`` (a mini-SUPERB corpus or a folder of the real datasets) or ``--datarc KEY=PATH``; a
data path that cannot be found is refused by name, so the file never holds a ``<SET_BY_RUNNER:...>`` placeholder.
Then, with s3prl alone::

    python -m s3prl.run_downstream -m train -u hubert -d speech_commands -c ks.yaml -p exp/ks
"""

from __future__ import annotations

FLAGS = {"path": "--out", "datarc": "--datarc", "task": ""}


def add_arguments(parser):
    parser.add_argument("task", help="ks, sid, er or asr (or s3prl's downstream name: speech_commands, voxceleb1, emotion)")
    parser.add_argument("--out", required=True, help="the YAML file to write (an existing different file needs --force)")
    parser.add_argument("--profile", default="official", help="official (SUPERB's config) or smoke (a few steps)")
    parser.add_argument("--data-root", help="a mini-SUPERB corpus (corpus.json) or the folder holding the datasets")
    parser.add_argument("--datarc", action="extend", nargs="+", metavar="KEY=PATH",
                        help="one data path, e.g. file_path=/data/VoxCeleb1 (repeatable; wins over --data-root)")
    parser.add_argument("--learning-rate", type=float, help="optimizer.lr (default: the recipe's)")
    parser.add_argument("--fold", help="ER only: the held-out session, 1..5 (default 1)")
    parser.add_argument("--force", action="store_true", help="replace an existing different file")


def _parse_datarc(items):
    from ..errors import UserInputError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserInputError(f"{item!r} is not KEY=PATH (e.g. file_path=/data/VoxCeleb1)", argument="datarc")
        out[key.strip()] = value.strip()
    return out


def run(args) -> int:
    from ..superb.recipe_files import write_user_recipe
    from ..superb.tasks import get_task

    task = get_task(args.task, "task")
    record = write_user_recipe(args.out, task.name, args.profile, data_root=args.data_root,
                               datarc=_parse_datarc(args.datarc), learning_rate=args.learning_rate,
                               test_fold=args.fold, force=args.force)
    print(f"written: {record['config_path']} ({task.name}, profile {record['profile']}, "
          f"lr {record['effective_learning_rate']:g})")
    print(f"run it with s3prl: python -m s3prl.run_downstream -m train -u UPSTREAM -d {task.downstream} "
          f"-c {record['config_path']} -p EXPDIR")
    return 0
