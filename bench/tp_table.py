"""Markdown table of bench/tp_smollm2.sh rows (out/tp/results.jsonl) -> stdout."""

import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1] if len(sys.argv) > 1 else "out/tp/results.jsonl")]
print("| ratio | reconstruct | hidden | heads/KV | FFN | parameters | held-out ppl | prune s |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    p, e = r["prune"], r["eval"]
    ppl = e.get("perplexity", e.get("ppl"))
    heads = f"{p['num_attention_heads']}/{p['num_key_value_heads']}"
    params = f"{p['params_before']:,} → {p['params_after']:,}"
    print(f"| {p['ratio']} | {p['reconstruct']} | {p['hidden_size']} | {heads} | {p['intermediate_size']} | {params} "
          f"| {ppl:.2f} | {p['seconds']} |")
