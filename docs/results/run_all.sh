#!/usr/bin/env bash
# Regenerates every results table in docs/results/ (explicit: about 1 hour on two CPU cores, two jobs at a time;
# implicit: several more hours, the ml-1m implicit tables have not been produced yet).
# Usage: bash docs/results/run_all.sh [all|explicit|implicit]
set -euo pipefail
cd "$(dirname "$0")/../.."
M=.venv/bin/metarec
COMMON="--seeds 0 1 2 --train.epochs=20 --train.patience=4 --quiet"
EXPLICIT="melu melu@train.lr=1e-3,learner.inner.lr=1e-3 noadapt@train.lr=1e-3 ptft@train.lr=1e-3,learner.inner.lr=1e-3 bias itempop"
IMPLICIT="melu@train.lr=1e-3,learner.inner.lr=1e-3 noadapt@train.lr=1e-3 ptft@train.lr=1e-3,learner.inner.lr=1e-3 bias itempop"
WHICH=${1:-all}
jobs=()
for p in user-cold warm item-cold user-item-cold; do
  [ "$WHICH" = implicit ] && break
  jobs+=("$M compare --dataset ml-1m --protocol $p --view explicit --learners $EXPLICIT $COMMON --out docs/results/ml-1m_${p}_explicit")
done
[ "$WHICH" = implicit ] || jobs+=("$M compare --dataset ml-100k --protocol user-cold --view explicit --learners $EXPLICIT $COMMON --out docs/results/ml-100k_user-cold_explicit")
[ "$WHICH" = explicit ] || jobs+=("$M compare --dataset ml-100k --protocol user-cold --view implicit --learners $IMPLICIT $COMMON --out docs/results/ml-100k_user-cold_implicit")
for p in user-cold warm item-cold user-item-cold; do
  [ "$WHICH" = explicit ] && break
  jobs+=("$M compare --dataset ml-1m --protocol $p --view implicit --learners $IMPLICIT $COMMON --out docs/results/ml-1m_${p}_implicit")
done
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -P 2 -I{} bash -c 'log="/tmp/metarec_$(echo "{}" | md5sum | cut -c1-8).log"; if {} >"$log" 2>&1; then echo "done: {}"; else echo "FAILED (see $log): {}"; fi'
