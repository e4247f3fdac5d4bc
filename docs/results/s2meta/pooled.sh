#!/usr/bin/env bash
# Issue 17, s²Meta: PT + s²Meta (`s2meta@learner.init=pooled`: omega_R starts at FT's pooled network, trained by
# FT's recipe in a stage 0; that start competes in the selection) next to FT, rerun at the same commit.
#   bash docs/results/s2meta/pooled.sh [DATASET] [SEEDS...]     (default ml-1m, seeds 0 1 2; one seed at a time,
#   one thread; resumable: a seed whose record exists under runs/ is skipped). Then merges the tables.
set -euo pipefail
cd "$(dirname "$0")/../../.."
M=.venv/bin/metarec
D=${1:-ml-1m}
shift || true
SEEDS=${*:-0 1 2}
OUT=docs/results/s2meta
mkdir -p runs/logs
for s in $SEEDS; do
  f=$OUT/runs/${D}_pooled_s$s
  [ -f "$f.json" ] && continue
  echo "$(date +%T) $f" >&2
  OMP_NUM_THREADS=1 $M scenario compare --dataset "$D" --seeds "$s" --learners FT=scenario-ft \
    PT-s2Meta=s2meta@learner.init=pooled --quiet --out "$f" --save "runs/s2meta/$D" \
    > "runs/logs/s2meta_${D}_pooled_s$s.log" 2>&1 || { echo "failed (see runs/logs/s2meta_${D}_pooled_s$s.log)"; exit 1; }
done
R=$(for s in 0 1 2; do f=$OUT/runs/${D}_pooled_s$s.json; [ -f "$f" ] && echo "$f"; done)
# shellcheck disable=SC2086
$M scenario merge $R --labels FT PT-s2Meta --title "PT + s²Meta (learner.init=pooled) against FT on $D scenarios" \
  --out "$OUT/${D}_pooled"
