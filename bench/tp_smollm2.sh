#!/usr/bin/env bash
# Torch-Pruning (LLM-example settings) on SmolLM2-135M at 20% / 50%, reconstruct none / bias / liar,
# then held-out perplexity. Rows: out/tp/results.jsonl (one prune JSON + one eval JSON per run).
set -euo pipefail
MODEL=${MODEL:-$(.venv/bin/python -c "from liar.io.load import resolve_source; print(resolve_source(None))")}
CALIB=${CALIB:-out/imdb_calib.txt}   # the embedded IMDB calibration split, one review per blank-line block
NS=${NS:-16}; SL=${SL:-256}
for ratio in ${RATIOS:-0.2 0.5}; do
  for mode in ${MODES:-liar bias none}; do
    out=out/tp/smollm2-r${ratio}-${mode}
    rm -rf "$out"
    prune=$(.venv/bin/python -m liar.integrations.torch_pruning --model "$MODEL" --out "$out" --ratio "$ratio" \
            --calib "$CALIB" --nsamples "$NS" --seqlen "$SL" --reconstruct "$mode" 2>"$out.log" | tail -1)
    ppl=$(.venv/bin/liar eval ppl --model "$out" --json ${EVAL_ARGS:-} 2>>"$out.log" | tail -1)
    echo "{\"prune\": $prune, \"eval\": $ppl}" | tee -a out/tp/results.jsonl
  done
done
