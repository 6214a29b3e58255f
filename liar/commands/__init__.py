"""`liar` sub-commands, one module each: `add_parser(subparsers)` declares the options and `run(args)` does
the work, importing torch and the rest only then (so --help and argument errors answer instantly)."""
