#!/usr/bin/env bash
# Issue 14's "numbers must not move": one small-budget run of each family (rating, warm-up, scenario,
# sequential) plus the demo table, written under OUT (default studies/refactor/before). Run once before the
# refactoring and once after (the after runs use the new spelling, `metarec train/compare --protocol P`), then
# `python studies/refactor/compare_numbers.py` diffs the two.
# Usage: bash studies/refactor/numbers.sh [OUT] [new]
set -euo pipefail
OUT=${1:-studies/refactor/before}
NEW=${2:-}
B=.venv/bin/metarec
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
if [ -z "$NEW" ]; then
  $B demo > "$OUT/demo.txt"
  $B compare --dataset ml-100k --learners melu bias foldin mamo --seeds 0 --train.epochs=2 --quiet --out "$OUT/rating"
  $B warmup --dataset ml-100k --methods base mean metaemb mwuf --seeds 0 --train.epochs=1 --quiet --out "$OUT/warmup"
  $B scenario compare --dataset ml-100k --learners s2meta scenario-ft scenario-itempop emcdr --seeds 0 --train.epochs=1 \
     --quiet --out "$OUT/scenario"
  $B seqrec --dataset ml-100k --methods sasrec ptft cbml mml-id --seeds 0 --quick --runs-dir '' --brief-json --quiet \
     --out "$OUT/seqrec"
else
  $B demo > "$OUT/demo.txt"
  $B compare --protocol user-cold --dataset ml-100k --learners melu bias foldin mamo --seeds 0 --train.epochs=2 --quiet \
     --out "$OUT/rating"
  $B compare --protocol warmup --dataset ml-100k --learners base mean metaemb mwuf --seeds 0 --train.epochs=1 \
     --quiet --out "$OUT/warmup"
  $B compare --protocol scenario --dataset ml-100k --learners s2meta scenario-ft scenario-itempop emcdr --seeds 0 \
     --train.epochs=1 --quiet --out "$OUT/scenario"
  $B compare --protocol sequential --dataset ml-100k --learners sasrec ptft cbml mml-id --seeds 0 --quick \
     --runs-dir '' --brief-json --quiet --out "$OUT/seqrec"
fi
