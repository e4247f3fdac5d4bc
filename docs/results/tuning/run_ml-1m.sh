#!/usr/bin/env bash
# Equal-budget tuning on ml-1m user-cold, seed 0, meta-valid only (issue 19): every learner gets the same number
# of trials (TRIALS) of `metarec tune` from the paper settings; the slow neural learners also stop starting new
# trials after WALL seconds (the tables say which ones stopped short). Resumable: a rerun finishes the studies.
# Usage: bash docs/results/tuning/run_ml-1m.sh [explicit|implicit] [LEARNER ...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
VIEW=${1:-explicit}; shift || true
LEARNERS=${*:-bias foldin metafold ptft melu}
TRIALS=${TRIALS:-30}
WALL=${WALL:-1500}
export OMP_NUM_THREADS=1
suffix=$([ "$VIEW" = implicit ] && echo "-implicit" || echo "")
for L in $LEARNERS; do
  .venv/bin/metarec tune --learner "$L" --dataset ml-1m --protocol user-cold --view "$VIEW" --seed 0 --preset paper \
    --trials "$TRIALS" --timeout "$WALL" --out "docs/results/tuning/ml-1m_${VIEW}/$L" \
    --preset-name "default-ml-1m$suffix" --quiet
done
