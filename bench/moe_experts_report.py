"""Per-expert routed-token counts and calibration errors on the tiny random MoE test models (tests/test_moe.py),
and the too-few-tokens case (1 x 96 calibration tokens). Run from the repository root:

    PYTHONPATH=. python bench/moe_experts_report.py
"""
from tests.test_moe import FAMILIES, prune_copy, tiny_moe
from tests.conftest import calib_ids
for family in FAMILIES:
    _, rep = prune_copy(tiny_moe(family), ratio=0.3)
    for l in rep.layers:
        print(family, "layer", l.index, "width", l.mlp.units_before, "->", l.mlp.units_after, "heads", len(l.attn.kept),
              "block err", {k: round(v, 4) for k, v in l.mlp.errors.items()})
        for e, x in enumerate(l.mlp.experts):
            print("   expert", e, "tokens", x["tokens"], "none", round(x["errors"]["none"], 4), "liar", round(x["errors"]["liar"], 4))
_, rep = prune_copy(tiny_moe("mixtral"), calib_ids(1, 96), ratio=0.3, nsamples=1, seqlen=96)
for l in rep.layers:
    print("too-few mixtral layer", l.index, "block err", {k: round(v, 4) for k, v in l.mlp.errors.items()})
    for e, x in enumerate(l.mlp.experts):
        print("   expert", e, "tokens", x["tokens"], "sliced" if x["fallback"] else "solved", {k: round(v, 4) for k, v in x["errors"].items()})
