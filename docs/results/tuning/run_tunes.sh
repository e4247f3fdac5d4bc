#!/usr/bin/env bash
# Equal-budget tuning on user-cold, seed 0, meta-valid only (issue 19): every learner gets the same number of
# trials (TRIALS) of `metarec tune` from the paper settings; slow learners also stop starting new trials after
# WALL seconds (the tables say which ones stopped short). Resumable: a rerun finishes the studies.
# The best trial is stored as preset default-DATASET (default-DATASET-implicit) with "when" naming the dataset
# and view. metafold's ALS start is fixed to foldin's tuned preset of the same dataset and view (so run foldin
# first), and its 30 trials search the meta-training settings (lr, epochs, anchor).
# Usage: bash docs/results/tuning/run_tunes.sh DATASET explicit|implicit [LEARNER ...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
DATASET=${1:?dataset}; VIEW=${2:?view}; shift 2
LEARNERS=${*:-bias foldin metafold}
TRIALS=${TRIALS:-30}
WALL=${WALL:-1500}
export OMP_NUM_THREADS=1
NAME="default-$DATASET$([ "$VIEW" = implicit ] && echo "-implicit" || echo "")"
for L in $LEARNERS; do
  extra=(); dir=$L
  if [ "$L" = metafold ]; then
    dir=metafold-on-foldin
    mapfile -t extra < <(.venv/bin/python - "$NAME" <<'PY'
import json, sys
over = json.load(open("metarec/presets.json"))["foldin"][sys.argv[1]]["overrides"]
for k, v in over.items():
    print(f"--learner.start.{k.removeprefix('learner.')}={v}")
PY
)
  fi
  .venv/bin/metarec tune --learner "$L" --dataset "$DATASET" --protocol user-cold --view "$VIEW" --seed 0 \
    --preset paper "${extra[@]}" --trials "$TRIALS" --timeout "$WALL" \
    --out "docs/results/tuning/${DATASET}_${VIEW}/$dir" --preset-name "$NAME" --quiet
done
