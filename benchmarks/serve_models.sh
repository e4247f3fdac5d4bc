#!/usr/bin/env bash
# The ml-1m models benchmarks/serve_bench.py measures (docs/benchmarks/serving.md): one epoch each. Latency and
# throughput depend on the model's shape (items, layers, support size), not on how long it trained.
# MML needs its encoders: `make setup-mml` first.
# Usage: bash benchmarks/serve_models.sh   (then the serve_bench command in docs/benchmarks/serving.md)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
for l in bias foldin melu tanp mamo; do
  .venv/bin/metarec train --learner "$l" --dataset ml-1m --train.epochs=1 --quiet --out "runs/bench/ml-1m/$l"
done
for l in sasrec mml; do  # run directories: runs/bench/seq/ml-1m/LABEL-s0-o<hash of the overrides>
  .venv/bin/metarec compare --protocol sequential --dataset ml-1m --learners "$l" --seeds 0 --train.epochs=1 \
    --quiet --runs-dir runs/bench/seq
done
