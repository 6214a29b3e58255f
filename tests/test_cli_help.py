"""The command line explains itself: every option has a description and a default, and every PruneConfig field
has an option; --help, --version and argument errors never load torch."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from liar.cli import build_parser
from liar.config import GROUPS, PruneConfig


def prune_parser():
    return build_parser()._subparsers._group_actions[0].choices["prune"]


def test_every_config_field_has_a_described_option_in_its_group():
    parser = prune_parser()
    by_dest = {a.dest: a for a in parser._actions}
    titles = {a.dest: g.title for g in parser._action_groups for a in g._group_actions}
    for f in dataclasses.fields(PruneConfig):
        assert f.name in by_dest, f"PruneConfig.{f.name} has no `liar prune` option"
        action = by_dest[f.name]
        assert action.help and len(action.help) > 15, f.name
        assert titles[f.name] == f.metadata["group"] in GROUPS
        if f.metadata["flag"] is None:
            assert action.default == f.default and "(default: " in action.help, f.name


def test_help_lists_a_description_and_default_for_every_option():
    text = prune_parser().format_help()
    options = re.findall(r"^  (--[a-z-]+)(.*)$", text, flags=re.M)
    assert len(options) == len(dataclasses.fields(PruneConfig)) + 4  # + --model --out --dry-run --json
    for name, rest in options:
        body = text.split(f"\n  {name}{rest}", 1)[1].split("\n  --", 1)[0]
        assert (rest + body).strip(), f"{name} has no description"
    for group in GROUPS:
        assert f"\n{group}:\n" in text
    usage = text.split("\n\n", 1)[0]
    assert "[--ratio RATIO]" in usage and "[--out DIR]" in usage and "[--json]" in usage  # shown as optional


def test_flags_keep_their_meaning():
    args = build_parser().parse_args(["prune", "--out", "x", "--no-bias", "--overwrite", "--ratio", "0.3"])
    assert args.intercept is False and args.overwrite is True and args.ratio == 0.3
    assert build_parser().parse_args(["prune", "--dry-run"]).intercept is True


@pytest.mark.parametrize("argv, code, says", [
    (["--version"], 0, "liar 0."),
    (["prune", "--help"], 0, "how to reconstruct:"),
    (["prune", "--ratio", "two"], 2, "invalid float value: 'two'"),
    (["prune", "--out", "x", "--ratio", "2"], 2, "outside (0, 1)"),
    (["prune", "--out", "x", "--max-memory", "8 parsecs"], 2, "cannot read '8 parsecs' as a memory size"),
    (["prune", "--ratio", "0.3"], 2, "--out is missing"),
    (["eval", "zeroshot", "--help"], 0, "--limit"),
    (["eval", "compare", "--help"], 0, "--pruned"),
    (["eval", "speed", "--help"], 0, "--gen-len"),
    (["eval", "ppl", "--help"], 0, "slicegpt"),
    (["report", "--help"], 0, "--plot"),
])
def test_answers_without_importing_torch(argv, code, says):
    probe = ("import sys\nfrom liar.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    rc = e.code\nassert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported'\n"
             "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert says in done.stdout + done.stderr
