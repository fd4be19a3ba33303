#!/usr/bin/env bash
# Issue 7's check, reproducible: does removing 40% of tiny_hubert's layers (no post-training) keep >= 90% of its
# keyword-spotting accuracy? Every strategy is evaluated (not only the best), through s3prl's real run_downstream,
# on the mini-SUPERB "small" corpus with SUPERB's KS recipe (official optimizer, model and batch size; only the
# number of steps and the evaluation interval are shortened). `make ks-check` runs it; results:
#   $OUT/superb/leaderboard.md   (KS accuracy, capacity kept vs the original, parameters, MACs, latency)
# Usage: tools/ks_capacity_check.sh [OUT] [STEPS]      (defaults: runs/ks_check 1000)
# A second run reuses the corpus, the pruned checkpoints and every finished KS run.
set -euo pipefail
OUT=${1:-runs/ks_check}
STEPS=${2:-1000}
BIN=${BIN:-.venv/bin}
CLI="$BIN/s3prl-redundancy"
STRATEGIES=(backward block-influence similarity-blocks convexity)

mkdir -p "$OUT"
[ -f "$OUT/corpus/corpus.json" ] || "$CLI" corpus --out "$OUT/corpus" --size small --quiet
SPEECH="$OUT/corpus/LibriSpeech/train-clean-100"   # many voices: statistics for the data-driven strategies

labels="original=tiny_hubert"
args=()
for strategy in "${STRATEGIES[@]}"; do
  name="pruned_${strategy//-/_}"
  if [ ! -f "$OUT/$name/manifest.json" ]; then
    extra=()
    [ "$strategy" = backward ] || extra=(--data "$SPEECH")
    "$CLI" prune --upstream tiny_hubert --progress --strategy "$strategy" --ratio 0.4 --out "$OUT/$name" "${extra[@]}"
  fi
  labels="$labels,$name=pruned_hubert"
  args+=(--upstream-args "$name:k=$OUT/$name/pruned.pt")
done

"$CLI" superb --upstreams "$labels" --tasks ks --data-root "$OUT/corpus" --out "$OUT/superb" \
  --profile official --reference original --device "${DEVICE:-cpu}" "${args[@]}" \
  --recipe-override "ks:runner.total_steps=$STEPS" --recipe-override "ks:runner.eval_step=$((STEPS / 4))" \
  --recipe-override "ks:runner.save_step=$((STEPS / 4))" --recipe-override "ks:runner.log_step=$((STEPS / 10))" \
  --recipe-override "ks:downstream_expert.datarc.num_workers=0"
cat "$OUT/superb/leaderboard.md"
