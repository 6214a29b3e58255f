"""Data-parallel calibration: 2 CPU processes (gloo, launched by torchrun) against 1 process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from liar.io.shards import ShardReader
from tests.conftest import char_tokenizer, tiny_model


@pytest.fixture
def env(tmp_path):
    """The launched processes' environment, with a per-test TMPDIR: torchrun's agent creates a torchelastic_*
    folder per run and never removes it; here it lands in tmp_path (which pytest cleans up), not in /tmp."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}


def assert_temp_folders_stayed_in(env: dict) -> None:
    assert list(Path(env["TMPDIR"]).glob("torchelastic_*")), "torchrun wrote its folders somewhere else"


def _args(source: Path, out: Path, text: Path, *extra: str) -> list[str]:
    return ["-m", "liar", "prune", "--model", str(source), "--out", str(out), "--calib", str(text),
            "--nsamples", "8", "--seqlen", "64", "--batch-size", "2", "--ratio", "0.3", *extra]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", *args]


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src"
    tiny_model(num_hidden_layers=3, intermediate_size=160).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("calibration, alpha, allocation", [("dense", "0.01", "global"), ("sequential", "0.01", "global"),
                                                          ("dense", "auto", "error")])
def test_two_ranks_equal_one(calibration, alpha, allocation, source, text_file, tmp_path, env):
    selection = "reconstruction" if allocation == "error" else "criterion"
    extra = ("--calibration", calibration, "--allocation", allocation, "--selection", selection, "--alpha", alpha)
    subprocess.run([sys.executable, *_args(source, tmp_path / "one", text_file, *extra)], check=True, env=env,
                   capture_output=True)
    two = subprocess.run(torchrun(*_args(source, tmp_path / "two", text_file, *extra, "--json")), env=env,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    assert len([l for l in two.stdout.splitlines() if l.startswith("{")]) == 1  # rank 0 alone speaks
    one_report = json.loads((tmp_path / "one" / "liar_report.json").read_text())
    two_report = json.loads((tmp_path / "two" / "liar_report.json").read_text())
    assert two_report["backends"]["ranks"] == "2" and one_report["backends"]["ranks"] == "1"
    for a, b in zip(one_report["layers"], two_report["layers"]):
        assert a["attn"]["kept"] == b["attn"]["kept"] and a["mlp"]["kept"] == b["mlp"]["kept"]
        assert a["mlp"]["tokens"] == b["mlp"]["tokens"] == 8 * 64
        assert a["attn"]["alpha"] == b["attn"]["alpha"] and a["mlp"]["alpha"] == b["mlp"]["alpha"]  # the same folds
    assert_temp_folders_stayed_in(env)
    x, y = ShardReader(tmp_path / "one"), ShardReader(tmp_path / "two")
    assert sorted(x.keys()) == sorted(y.keys())
    for name in x.keys():
        a, b = x.get(name).double(), y.get(name).double()
        # The same fp32 sums in another order; the solve amplifies the rounding by up to ~1/α, and the bias
        # (a difference of means) most: measured ≤ 3e-4 relative here.
        assert float((a - b).norm()) <= 1e-3 * float(a.norm()) + 1e-12, name


def _workers(parent: int) -> list[int]:
    """Child processes of `parent` (torchrun's agent spawns one per rank)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            kids.append(int(stat.parent.name))
    return kids


def test_a_killed_rank_stops_every_rank_and_the_run_resumes(tmp_path, text_file, env):
    src = tmp_path / "src"
    tiny_model(hidden_size=192, intermediate_size=768, num_hidden_layers=8, num_attention_heads=6,
               num_key_value_heads=2, head_dim=32).save_pretrained(src)
    char_tokenizer().save_pretrained(src)
    extra = ("--nsamples", "32", "--seqlen", "96", "--batch-size", "4")
    whole = subprocess.run(torchrun(*_args(src, tmp_path / "whole", text_file), *extra), env=env,
                           capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-3000:]
    out, partial = tmp_path / "resumed", tmp_path / ".resumed.partial"
    launcher = subprocess.Popen(torchrun(*_args(src, out, text_file), *extra), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while len(list(partial.glob("model-*.safetensors"))) < 2 and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = _workers(launcher.pid)
    assert workers, "torchrun has no workers"
    os.kill(workers[-1], signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and "SIGKILL" in err  # torchrun names the failure and stops the rest
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    finished = len(list(partial.glob("model-*.safetensors")))
    assert 2 <= finished < 8 and not out.exists()
    again = subprocess.run(torchrun(*_args(src, out, text_file), *extra), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_temp_folders_stayed_in(env)
    for name in sorted(p.name for p in (tmp_path / "whole").iterdir() if p.name != "liar_report.json"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def _fail_on_rank_one(rank: int, init: str, results: str) -> None:
    import torch.distributed as dist

    from liar import distributed
    from liar.forward import sum_over_ranks
    from liar.stats import GramStats

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    stats = GramStats.zeros(3, backend="torch")
    stats.update(torch.randn(5, 3))
    outcome = "finished"
    try:
        with distributed.step():
            if rank == 1:
                raise OSError(28, "No space left on device")
            sum_over_ranks(stats)  # rank 0 would wait here forever without the vote
    except distributed.RankFailure as err:
        outcome = f"RankFailure: {err}"
    except OSError as err:
        outcome = f"OSError: {err}"
    Path(results, f"rank{rank}").write_text(outcome)
    dist.destroy_process_group()


def test_an_error_on_one_rank_stops_the_others_with_a_clear_error(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_fail_on_rank_one, args=(f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "rank1").read_text().startswith("OSError")
    assert (tmp_path / "rank0").read_text().startswith("RankFailure: another rank failed")
