#!/usr/bin/env bash
# Issue 6 on one dataset: the six baselines (windows of 50), MML with its ablations and PT-FT with the MML network
# (windows of 15, with SASRec/PT-FT rerun there for a like-for-like table), 3 seeds, then the training-data curve.
#   bash docs/results/mml/run_all.sh [DATASET] [LANES]        (default ml-1m, 2 jobs at a time, one thread each)
# Resumable: every job writes its own results file under docs/results/mml/runs/ and is skipped once that file
# exists; a killed job resumes from its per-epoch checkpoints under runs/seqrec/ (`train s` then counts the
# finished epochs of the earlier processes too). Needs `make setup-mml` (the MiniLM text features).
# Cost on the 2-core machine, ml-1m: about 1.8 CPU-hours per seed for the six baselines (measured on seed 0); at
# MML's reduced budget below, the five MML jobs of a seed took 80 and 95 minutes of summed `train s` on seeds 0
# and 1 with 2-4 jobs sharing the 2 cores (about 1 CPU-hour; one stage-1 meta-epoch 2.4 CPU-minutes for one
# learner, about 4.5 for the group). ml-100k much less.
# The ml-100k tables in this folder were made by the commands in README.md (same protocol and budget; the
# MML table's per-seed runs were stopped and recovered by hand, hence their longer record).
set -euo pipefail
cd "$(dirname "$0")/../../.."
M=.venv/bin/metarec
D=${1:-ml-1m}
LANES=${2:-2}
R=docs/results/mml/runs
mkdir -p "$R" runs/logs  # runs/: checkpoints and logs, not in git
# MML's budget on this CPU machine (README.md, "What was run"): first-order MAML, 4 meta-epochs, 2 + 2 epochs for
# the generator and the fusion layer; the code's defaults are the paper's (second order, 100 epochs)
MML_BUDGET="--model.inner.first_order=true --meta.epochs=4 --meta.patience=2 --gen_train.epochs=2 \
--gen_train.patience=2 --fusion_train.epochs=2 --fusion_train.patience=2"
jobs=()
add() {  # add OUT ARGS...: one `metarec seqrec` process, skipped when OUT.json exists
  local out=$1; shift
  [ -f "$R/$out.json" ] || jobs+=("OMP_NUM_THREADS=1 $M seqrec --dataset $D $* --brief-json --quiet --out $R/$out \
> runs/logs/$out.log 2>&1")
}
baselines() {  # sasrec and ptft in one process: PT-FT fine-tunes SASRec's pretraining
  add "${D}_sasrec-ptft_s$1" --methods sasrec ptft --seeds $1
  for m in gru4rec full sml cbml; do add "${D}_${m}_s$1" --methods $m --seeds $1; done
}
mml_jobs() {  # mml, mml-nogen and mml-nofusion share stage 1 (and mml/mml-nofusion stage 2) in one process
  add "${D}_mml-group_s$1" --max-len 15 --methods mml mml-nogen mml-nofusion --seeds $1 $MML_BUDGET
  for m in mml-main mml-id ptft-mml; do add "${D}_${m}_s$1" --max-len 15 --methods $m --seeds $1 $MML_BUDGET; done
  add "${D}_base15_s$1" --max-len 15 --methods sasrec ptft --seeds $1 --train.epochs=30 --train.patience=5
}
# order: seed 0 complete first (its MML rows and the curve's reuse come from it), then the other baselines, then
# MML's seeds 1 and 2, so that a run stopped part way leaves whole tables rather than a bit of everything
baselines 0; mml_jobs 0; baselines 1; baselines 2; mml_jobs 1; mml_jobs 2
if [ ${#jobs[@]} -gt 0 ]; then
  printf '%s\0' "${jobs[@]}" | xargs -0 -P "$LANES" -I{} bash -c '{} || { echo "failed (see its log): {}"; exit 1; }'
fi
$M seqrec --merge $(for s in 0 1 2; do for m in sasrec-ptft gru4rec full sml cbml; do echo "$R/${D}_${m}_s$s.json"; done; done) \
  --brief-json --out docs/results/mml/${D}_baselines
$M seqrec --merge $(for s in 0 1 2; do for m in mml-group mml-main mml-id ptft-mml base15; do echo "$R/${D}_${m}_s$s.json"; done; done) \
  --brief-json --out docs/results/mml/${D}_mml
# Figure 2: seed 0, the fraction-1.0 points from the table's runs
OMP_NUM_THREADS=1 .venv/bin/python studies/mml_curve.py --dataset "$D" --max-len 15 --fracs 0.25 0.5 1.0 \
  --methods mml ptft-mml --seeds 0 --out docs/results/mml --reuse docs/results/mml/${D}_mml.json --quiet \
  ${MML_BUDGET//--/}
