#!/usr/bin/env bash
# s²Meta (issue 5) on one dataset: the comparison, the Table 4 ablations, the mapping/interaction analysis (5.4)
# and the learning process of Figure 2. One `scenario compare` per seed (run in parallel), then merged tables.
# ml-1m: 67 minutes wall for the three seeds on 2 cores (about 35 CPU-minutes per seed; s2meta variants dominate).
# The analyses that read the saved models (README.md): studies/s2meta_steps.py, and the ml-1m budget check.
# Usage: bash docs/results/s2meta/run_all.sh [DATASET]
set -euo pipefail
cd "$(dirname "$0")/../../.."
M=.venv/bin/metarec
D=${1:-ml-100k}
OUT=docs/results/s2meta
LEARNERS="Complete=s2meta ItemPop=scenario-itempop NeuMF=neumf FT=scenario-ft EMCDR=emcdr \
RandInit=s2meta@learner.init=random FixedLr=s2meta@learner.update=sgd FixedStep=s2meta@learner.stop=fixed \
Mapping=s2meta@learner.arch=mapping"
for s in 0 1 2; do
  OMP_NUM_THREADS=1 $M scenario compare --dataset "$D" --seeds $s --learners $LEARNERS --quiet \
    --out $OUT/runs/${D}_s$s --save runs/s2meta/$D > /tmp/s2meta_${D}_s$s.log 2>&1 &
done
wait
R="$OUT/runs/${D}_s0.json $OUT/runs/${D}_s1.json $OUT/runs/${D}_s2.json"
$M scenario merge $R --labels Complete ItemPop NeuMF FT EMCDR --title "s²Meta and baselines on $D scenarios" \
  --out $OUT/${D}_compare
$M scenario merge $R --labels Complete RandInit FixedLr FixedStep --title "Table 4 ablations on $D scenarios" \
  --out $OUT/${D}_ablation
$M scenario merge $R --labels Complete Mapping --title "Interaction module (Complete) against mapping module (5.4) on $D" \
  --out $OUT/${D}_architecture
OMP_NUM_THREADS=1 $M scenario trace runs/s2meta/$D/Complete-s0 --out $OUT/${D}_learning_process
