#!/usr/bin/env bash
# Issue 7's check, reproducible: does removing 40% of tiny_hubert's layers (2 of 6, no post-training) keep >= 90% of
# its keyword-spotting accuracy? On the mini-SUPERB "small" corpus (`make ks-check` runs this script):
#   1. `s3prl-redundancy sweep`: every strategy, 0..3 layers removed, KS accuracy of a linear probe (mean-pooled
#      hidden states) on a held-out part of the KS *train* split (11 classes: 10 commands + unknown; the
#      data-driven strategies score layers on the same clips)
#      -> $OUT/sweep/sweep.csv, sweep.png
#   2. the original and the sweep's best strategy at 40% (plus `backward`, the simplest baseline) through s3prl's
#      real run_downstream with SUPERB's KS recipe (official optimizer, model, batch 32; only the number of steps
#      and the evaluation interval are shortened), tested on the KS *test* split
#      -> $OUT/superb/leaderboard.md (test accuracy, capacity kept vs the original, parameters, MACs, latency)
# The strategy is chosen on train-split probe accuracy, never on the test split.
# Usage: tools/ks_capacity_check.sh [OUT] [STEPS]      (defaults: runs/ks_check 1000). Reruns reuse finished parts.
# About 25 minutes on 2 idle CPU cores (a KS step of batch 32 takes ~0.35 s).
set -euo pipefail
OUT=${1:-runs/ks_check}
STEPS=${2:-1000}
BIN=${BIN:-.venv/bin}
CLI="$BIN/s3prl-redundancy"
STRATEGIES=backward,forward,block-influence,similarity-blocks,convexity

mkdir -p "$OUT"
[ -f "$OUT/corpus/corpus.json" ] || "$CLI" corpus --out "$OUT/corpus" --size small --quiet
KS_TRAIN="$OUT/corpus/speech_commands_v0.01"
KS_CLASSES="$OUT/ks_train_classes"
if [ ! -d "$KS_CLASSES" ]; then  # SUPERB's KS classes: the 10 commands, every other word is _unknown_ (links, no copies)
  "$BIN/python" - "$KS_TRAIN" "$KS_CLASSES" <<'PY'
import os, sys
from pathlib import Path
commands = {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"}
root, out, count = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), 0
for wav in sorted(root.glob("*/*.wav")):
    word = wav.parent.name
    if word == "_background_noise_":
        continue
    label = word if word in commands else "_unknown_"
    (out / label).mkdir(parents=True, exist_ok=True)
    os.symlink(wav, out / label / f"{word}__{wav.name}")
    count += 1
print(f"{count} KS training clips in {len(list(out.iterdir()))} classes")
PY
fi
[ -f "$OUT/sweep/sweep.csv" ] || "$CLI" sweep --upstream tiny_hubert --strategies "$STRATEGIES" --data "$KS_CLASSES" \
  --max-drop 3 --out "$OUT/sweep" --progress

BEST=$("$BIN/python" - "$OUT/sweep/sweep.csv" <<'PY'
import sys
import pandas as pd
rows = pd.read_csv(sys.argv[1])
at_two = rows[rows["layers_removed"] == 2].sort_values(["probe_accuracy", "strategy"], ascending=[False, True])
print(at_two.iloc[0]["strategy"])
PY
)
echo "best strategy at 2 of 6 layers removed (train-split probe): $BEST"

labels="original=tiny_hubert"
args=()
for strategy in $(printf '%s\n' backward "$BEST" | sort -u); do
  name="pruned_${strategy//-/_}"
  if [ ! -f "$OUT/$name/manifest.json" ]; then
    extra=()
    [ "$strategy" = backward ] || [ "$strategy" = forward ] || extra=(--data "$KS_CLASSES")
    "$CLI" prune --upstream tiny_hubert --strategy "$strategy" --ratio 0.4 --out "$OUT/$name" "${extra[@]}"
  fi
  labels="$labels,$name=pruned_hubert"
  args+=(--upstream-args "$name:k=$OUT/$name/pruned.pt")
done

"$CLI" superb --upstreams "$labels" --tasks ks --data-root "$OUT/corpus" --out "$OUT/superb" \
  --profile official --reference original --device "${DEVICE:-cpu}" --jobs "${JOBS:-1}" "${args[@]}" \
  --recipe-override "ks:runner.total_steps=$STEPS" --recipe-override "ks:runner.eval_step=$((STEPS / 3))" \
  --recipe-override "ks:runner.save_step=$((STEPS / 3))" --recipe-override "ks:runner.log_step=$((STEPS / 10))" \
  --recipe-override "ks:downstream_expert.datarc.num_workers=0"
cat "$OUT/superb/leaderboard.md"
