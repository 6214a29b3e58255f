"""Per-expert routed-token counts and calibration errors on the tiny random MoE test models (tests/test_moe.py),
and the too-few-tokens case (1 x 96 calibration tokens). Run from the repository root:

    PYTHONPATH=. python bench/moe_experts_report.py
"""

from tests.conftest import calib_ids
from tests.test_moe import FAMILIES, prune_copy, tiny_moe


def rounded(errors: dict) -> dict:
    return {k: round(v, 4) for k, v in errors.items()}


def show(name: str, report) -> None:
    for layer in report.layers:
        mlp = layer.mlp
        print(f"{name} layer {layer.index}: expert width {mlp.units_before} -> {mlp.units_after}, "
              f"heads {len(layer.attn.kept)}, block errors {rounded(mlp.errors)}")
        for e, expert in enumerate(mlp.experts):
            how = f"sliced ({expert['fallback']})" if expert["fallback"] else "solved"
            print(f"   expert {e}: {expert['tokens']} routed tokens, {how}, errors {rounded(expert['errors'])}")


if __name__ == "__main__":
    for family in FAMILIES:
        show(family, prune_copy(tiny_moe(family), ratio=0.3)[1])
    show("mixtral, 1 x 96 tokens", prune_copy(tiny_moe("mixtral"), calib_ids(1, 96), ratio=0.3, nsamples=1,
                                              seqlen=96)[1])
