"""`liar prune`: one option per PruneConfig field, its help text and default read from the field's metadata,
so the command line and the API cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from liar.config import GROUPS, PruneConfig


def _help(f: dataclasses.Field) -> str:
    meta = f.metadata
    text = meta["help"] if meta["flag"] else f"{meta['help']} (default: {meta['default_text'] or f.default})"
    return text.replace("%", "%%")  # argparse %-formats help strings


def add_config_options(groups: dict[str, argparse._ArgumentGroup]) -> None:
    """One option per PruneConfig field, in the field's group."""
    for f in dataclasses.fields(PruneConfig):
        group, meta = groups[f.metadata["group"]], f.metadata
        if meta["flag"]:
            group.add_argument(meta["flag"], dest=f.name, action="store_false" if f.default else "store_true",
                               help=_help(f))
            continue
        kind = meta["parse"] or {float: float, int: int}.get(type(f.default), str)  # None defaults: text
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=f.default,
                           choices=meta["choices"], metavar=None if meta["choices"] else meta["metavar"] or f.name.upper(),
                           help=_help(f))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prune", help="prune a model and write the smaller checkpoint",
        description="Prune attention heads and FFN neurons, repair with LIAR reconstruction, write a smaller "
                    "checkpoint and its report (liar_report.json). Every option is a field of liar.PruneConfig.")
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    groups["what to prune"].add_argument(
        "--model", default=None, metavar="PATH",
        help="transformers checkpoint folder or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    out = groups["output"]
    out.add_argument("--out", default=None, metavar="DIR",
                     help="output folder, created by liar (required unless --dry-run; must not exist unless "
                          "--overwrite)")
    out.add_argument("--dry-run", action="store_true",
                     help="print the plan (units kept per layer, parameters, memory, output format) and stop: "
                          "no calibration, no output")
    out.add_argument("--json", action="store_true", help="also print the result as one JSON line at the end")
    add_config_options(groups)


def config_from(args: argparse.Namespace) -> PruneConfig:
    fields = {f.name for f in dataclasses.fields(PruneConfig)}
    return PruneConfig(**{k: v for k, v in vars(args).items() if k in fields})


def run(args: argparse.Namespace) -> dict | None:
    config = config_from(args)  # bad values fail here, before torch is imported
    if args.dry_run:
        from liar.plan import print_plan

        return print_plan(args.model, config)
    if args.out is None:
        raise ValueError("--out is missing: name the folder to write the pruned model to (or pass --dry-run to "
                         "only print the plan)")
    from liar import distributed
    from liar.api import prune

    succeeded = False
    try:
        report = prune(args.model, args.out, config, command=shlex.join(["liar", *args.argv]))
        speaks = distributed.is_main()  # read before the process group is torn down
        succeeded = True
    finally:
        distributed.shutdown(succeeded)
    if not speaks:
        return None
    print(report.summary())
    out = shlex.quote(args.out)
    print(f"  details: liar report {out}   picture: liar report {out} --plot pruned.png")
    m = report.model
    return {"out": report.output["path"], "report": report.output["report"],
            "stock_loadable": report.output["stock_loadable"], "params_before": m["params_before"],
            "params_after": m["params_after"], "block_fraction_removed": m["block_fraction_removed"],
            "seconds": report.timings["total"]}
