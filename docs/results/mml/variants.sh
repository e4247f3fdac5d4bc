#!/usr/bin/env bash
# Issue 17 on one dataset: MML's options (model.meta_query, model.init=pooled, model.fusion_select=valid), CBML's
# model.meta_query, and MML 5.2.2's support-only SASRec, next to the faithful rows rerun at the same commit, all at
# windows of 15 and MML's reduced budget of README.md (first order, 4 meta-epochs, 2 + 2 for generator and fusion).
#   [JOBS="v-main v-group"] bash docs/results/mml/variants.sh [DATASET] [SEEDS...]   (default ml-100k, seeds 0 1 2,
#   every job: v-main v-ptlr v-group v-base v-cbml v-long; v-best on request)
# One job at a time, one thread. Resumable like run_all.sh: a job whose record exists under runs/ is skipped.
# Then merges what exists into docs/results/mml/variants_DATASET.{md,json} (the tables of `seqrec --merge`) and
# variants.json (ml-100k; variants_DATASET.detail.json for another dataset): per record its meta-valid and test
# NDCG@10, per-query-index test metrics, stage epochs and seconds, fusion selection, PT-FT rate selection.
set -euo pipefail
cd "$(dirname "$0")/../../.."
M=.venv/bin/metarec
D=${1:-ml-100k}
shift || true
SEEDS=${*:-0 1 2}
R=docs/results/mml/runs
mkdir -p "$R" runs/logs
MML_BUDGET="--model.inner.first_order=true --meta.epochs=4 --meta.patience=2 --gen_train.epochs=2 \
--gen_train.patience=2 --fusion_train.epochs=2 --fusion_train.patience=2 --pretrain.epochs=4 --pretrain.patience=2"
Q5=model.meta_query=5   # m = the new users' query length (--n-query 5)
PT=model.init=pooled    # stage 0 = ptft-mml's stage 1 (pretrain.* = meta.* above), then MAML
FS=model.fusion_select=valid
JOBS=${JOBS:-v-main v-ptlr v-group v-base v-cbml v-long}
run() {  # run OUT ARGS...: one `metarec compare --protocol sequential` process, skipped when OUT.json exists
  local out=$1; shift
  [ -f "$R/$out.json" ] && return 0
  case " $JOBS " in *" $(echo "$out" | sed -E 's/^[^_]*_(v-[a-z]+)_s[0-9]+$/\1/') "*) ;; *) return 0 ;; esac
  echo "$(date +%T) $out" >&2
  OMP_NUM_THREADS=1 $M compare --protocol sequential --dataset "$D" --max-len 15 "$@" --seeds "$s" --brief-json \
    --quiet --out "$R/$out" > "runs/logs/$out.log" 2>&1 || { echo "failed (see runs/logs/$out.log)"; exit 1; }
}
for s in $SEEDS; do
  # the main learner alone (the best MAML variant of the faithful table): paper, last-5 queries, PT + MAML, both
  run "${D}_v-main_s$s" --learners mml-main "mml-main-q5=mml-main@$Q5" "mml-main-pt=mml-main@$PT" \
    "mml-main-pt-q5=mml-main@$PT,$Q5" $MML_BUDGET
  # PT + MAML at a tenth of the outer rate (meta.lr 1e-4): at 1e-3 the first MAML epoch undoes the pooled start
  run "${D}_v-ptlr_s$s" --learners "mml-main-pt-q5-lr4=mml-main@$PT,$Q5,meta.lr=1e-4" \
    "mml-main-pt-lr4=mml-main@$PT,meta.lr=1e-4" $MML_BUDGET
  # ml-1m (JOBS=v-best, not in the default list): the best ml-100k variant alone, PT + MAML with the last-5 queries
  # at a tenth of the outer rate (v-ptlr's first learner; stage 1 ~900 s per seed on one thread)
  run "${D}_v-best_s$s" --learners "mml-main-pt-q5-lr4=mml-main@$PT,$Q5,meta.lr=1e-4" $MML_BUDGET
  # the group {ID, text} with fusion: paper, fusion selection on meta-valid, last-5 queries (+ selection);
  # ptft-mml; PT + MAML with last-5 queries and selection. Variants share stages through the process's cache.
  run "${D}_v-group_s$s" --learners mml "mml-fs=mml@$FS" "mml-q5=mml@$Q5" "mml-q5-fs=mml@$Q5,$FS" ptft-mml \
    "mml-pt-q5-fs=mml@$PT,$Q5,$FS" $MML_BUDGET
  # the non-meta rows at the same windows (faithful table's budget) and the support-only SASRec of 5.2.2
  run "${D}_v-base_s$s" --learners sasrec ptft \
    "sasrec-support=ptft@model.pretrain=false,model.finetune.params=all,model.finetune.steps=50" \
    --train.epochs=30 --train.patience=5
  # CBML, the other MAML method: paper and last-5 queries (10 epochs, patience 3)
  run "${D}_v-cbml_s$s" --learners cbml "cbml-q5=cbml@$Q5" --train.epochs=10 --train.patience=3
  # is it the budget? the paper's query, the last-5 queries and PT + MAML (last 5, outer rate 1e-4) to early
  # stopping (a 20-epoch cap, patience 3)
  run "${D}_v-long_s$s" --learners "mml-main-e20=mml-main@meta.epochs=20,meta.patience=3" \
    "mml-main-q5-e20=mml-main@$Q5,meta.epochs=20,meta.patience=3" \
    "mml-main-pt-q5-lr4-e20=mml-main@$PT,$Q5,meta.lr=1e-4,meta.epochs=20,meta.patience=3" $MML_BUDGET
done
files=$(for s in 0 1 2; do for j in v-main v-ptlr v-best v-group v-base v-cbml v-long; do
  f="$R/${D}_${j}_s$s.json"; [ -f "$f" ] && echo "$f"; done; done)
# shellcheck disable=SC2086
$M seqrec --merge $files --brief-json --out "docs/results/mml/variants_${D}"
.venv/bin/python - "$D" $files <<'EOF'
import json, sys
d, files = sys.argv[1], sys.argv[2:]
rows = []
for f in files:
    for r in json.load(open(f))["results"]:
        rows.append({k: r.get(k) for k in ("method", "seed", "best_epoch", "train_seconds", "stages",
                                            "test_by_query", "fusion_select", "finetune_lr_selection")}
                    | {"valid_ndcg@10": r["valid"]["ndcg@10"], "test_ndcg@10": r["test"]["ndcg@10"], "file": f})
out = "docs/results/mml/variants.json" if d == "ml-100k" else f"docs/results/mml/variants_{d}.detail.json"
json.dump({"dataset": d, "records": rows}, open(out, "w"), indent=1)
print("wrote", out)
EOF
