"""`liar eval ppl`: perplexity of a model on the held-out split of a named corpus (default imdb) or a text file."""

from __future__ import annotations

import argparse

from liar.commands.eval_zeroshot import SEQLEN_HELP, seqlen_type
from liar.config import CORPORA, DEVICES, DTYPES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("ppl", help="perplexity on held-out text (default: held-out IMDB reviews)",
                              description="Perplexity over non-overlapping windows of a named corpus's held-out "
                                          "split or of a text file.")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="model folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--text", default="imdb", metavar="NAME|FILE",
                   help=f"the held-out split of a named corpus ({', '.join(CORPORA)}; never used by --calib NAME) "
                        "or a .txt/.jsonl/.csv file (default: imdb)")
    p.add_argument("--seqlen", type=seqlen_type, default=512, help=SEQLEN_HELP + " (default: 512)")
    p.add_argument("--max-tokens", type=int, default=16384, help="tokens evaluated at most (default: 16384)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default: 4)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="compute device (default: auto)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="compute dtype (default: auto)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line at the end")


def _check_args(args: argparse.Namespace, seqlen: int) -> None:
    """One window needs seqlen >= 2 tokens, and max-tokens must hold one window."""
    if seqlen < 2:
        raise ValueError(f"--seqlen {seqlen}: a window needs at least 2 tokens; pass --seqlen 2 or more")
    if args.max_tokens < seqlen:
        raise ValueError(f"--max-tokens {args.max_tokens} is below --seqlen {seqlen}, so not one window fits; "
                         f"pass --max-tokens {seqlen} or more")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: pass 1 or more")


def run(args: argparse.Namespace) -> dict:
    import logging
    import time

    from liar import corpora, data
    from liar.devices import resolve_device, resolve_dtype
    from liar.eval import check_causal_lm, perplexity, resolve_seqlen
    from liar.io.load import load_pruned, load_tokenizer, resolve_source
    from liar.plan_checks import seqlen_warnings

    started = time.perf_counter()
    if isinstance(args.seqlen, int):
        _check_args(args, args.seqlen)  # before any loading
    source = resolve_source(args.model)
    device = resolve_device(args.device)
    model = load_pruned(source, dtype=resolve_dtype(args.dtype, device), device=device)
    check_causal_lm(model)
    seqlen = resolve_seqlen(args.seqlen, model.config)
    _check_args(args, seqlen)
    for warning in seqlen_warnings(seqlen, model.config):
        logging.getLogger("liar").warning(warning)
    tokenizer = load_tokenizer(source)
    texts, described = corpora.resolve(args.text, "heldout")
    ids = data.token_stream(tokenizer, texts, args.max_tokens)
    result = perplexity(model, ids, seqlen=seqlen, batch_size=args.batch_size, prefix=data.window_prefix(tokenizer))
    result.update(model=str(source), text=str(args.text), text_source=described,
                  seconds=time.perf_counter() - started)
    print(f"perplexity {result['ppl']:.3f} over {result['tokens']} tokens ({result['seconds']:.1f} s)")
    return result
