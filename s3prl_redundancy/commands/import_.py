"""``s3prl-redundancy import``: write a transformers HubertModel / Wav2Vec2Model / WavLMModel folder as an s3prl local checkpoint.

The inverse of ``export``. Reads config.json, model.safetensors (or pytorch_model.bin, weights only) and
preprocessor_config.json; the ...ForCTC / ...ForSequenceClassification variants give their base model (the
head is skipped). The written checkpoint loads with -u hubert_local / wav2vec2_local / wavlm_local; every
command and pruned entry also takes the folder directly. See docs/compression.md.
"""

from __future__ import annotations

import json

# Python argument names in library errors -> this command's flags (the rest are --name-with-dashes)
FLAGS = {"ckpt": "--from-transformers", "folder": "--from-transformers"}


def add_arguments(parser):
    parser.add_argument("--from-transformers", required=True, metavar="DIR",
                        help="a transformers model folder (config.json + model.safetensors), e.g. hubert-base-ls960")
    parser.add_argument("--out", required=True, help="the s3prl local checkpoint to write (model.pt)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="largest allowed difference to transformers' hidden states (default 1e-4)")


def run(args) -> int:
    from ..transformers_import import import_to_file

    report = import_to_file(args.from_transformers, args.out, force=args.force, atol=args.atol)
    summary = {k: report[k] for k in ("out", "family", "architecture", "num_layers", "normalize", "skipped_head", "zero_filled")}
    summary.update(local_entry=f"{report['family']}_local", max_abs_diff=report["check"]["max_abs_diff"])
    print(json.dumps(summary))
    return 0
