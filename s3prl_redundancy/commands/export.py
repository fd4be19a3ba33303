"""``s3prl-redundancy export``: write a (layer-)pruned checkpoint as a transformers HubertModel / Wav2Vec2Model / WavLMModel.

The folder holds config.json, model.safetensors and preprocessor_config.json (save_pretrained), plus
s3prl_redundancy_export.json with the equality check against s3prl's model (done before anything is
written). See docs/compression.md.
"""

from __future__ import annotations

import json

# Python argument names in library errors -> this command's flags (the rest are --name-with-dashes)
FLAGS = {"out_dir": "--out"}


def add_arguments(parser):
    parser.add_argument("--ckpt", required=True, help="pruned.pt written by `s3prl-redundancy prune` (or any s3prl local checkpoint)")
    parser.add_argument("--out", required=True, help="output folder for save_pretrained")
    parser.add_argument("--force", action="store_true", help="replace the files of an earlier export in --out (only those), or write beside other files")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference to s3prl's hidden states (default 1e-4)")


def run(args) -> int:
    from ..checkpoints import load_family_checkpoint
    from ..compression.compress import output_dir
    from ..compression.export_transformers import EXPORT_NAMES, export

    out = output_dir(args.out, args.force, command="export", names=EXPORT_NAMES)  # before loading anything
    _, ckpt = load_family_checkpoint(args.ckpt)
    report = export(ckpt, out, atol=args.atol)
    print(json.dumps({"out": str(args.out), "class": report["transformers_class"], "num_hidden_layers": report["num_hidden_layers"],
                      "max_abs_diff": report["check"]["max_abs_diff"]}))
    return 0
