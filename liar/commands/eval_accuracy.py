"""`liar eval accuracy`: sequence-classification accuracy on a labelled file (default: Rotten Tomatoes test)."""

from __future__ import annotations

import argparse

from liar.config import DEVICES, DTYPES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("accuracy", help="sequence-classification accuracy on a labelled file",
                              description="Accuracy of a sequence classifier (e.g. BertForSequenceClassification).")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="sequence-classifier folder (e.g. BertForSequenceClassification)")
    p.add_argument("--data", default=None, metavar="FILE",
                   help=".jsonl/.csv with `text` and `label` (default: the embedded Rotten Tomatoes test split)")
    p.add_argument("--max-length", type=int, default=128, help="truncate texts to this many tokens (default: 128)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="compute device (default: auto)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="compute dtype (default: auto)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line at the end")


def run(args: argparse.Namespace) -> dict:
    import time

    from liar import data
    from liar.devices import resolve_device, resolve_dtype
    from liar.eval import accuracy, label_ids
    from liar.io.load import load_pruned, load_tokenizer, resolve_source

    started = time.perf_counter()
    if args.batch_size < 1 or args.max_length < 2:
        raise ValueError(f"--batch-size {args.batch_size} --max-length {args.max_length}: pass --batch-size 1 or "
                         "more and --max-length 2 or more")
    texts_labels = data.read_labelled(args.data) if args.data else None  # a bad file fails before the model loads
    source = resolve_source(args.model)
    device = resolve_device(args.device)
    model = load_pruned(source, dtype=resolve_dtype(args.dtype, device), device=device)
    if texts_labels:
        texts, raw = texts_labels
        labels = label_ids(raw, model.config)
    else:
        texts, labels = data.rotten_tomatoes("test")
    result = accuracy(model, load_tokenizer(source), texts, labels, args.batch_size, args.max_length)
    result.update(model=str(source), data=args.data or "embedded Rotten Tomatoes sentences (test split)",
                  seconds=time.perf_counter() - started)
    print(f"accuracy {result['accuracy']:.4f} ({result['correct']}/{result['n']}, {result['seconds']:.1f} s)")
    return result
