"""liar_report.json stays small and readable (one line per layer, kept indices as ranges) and loads back
exactly; `liar report DIR` summarizes it on one screen and draws it."""

from __future__ import annotations

import json
import random
import sys

import pytest

import liar
from liar.cli import main
from liar.ranges import from_ranges, to_ranges
from tests.conftest import calib_ids, char_tokenizer, tiny_model


@pytest.mark.parametrize("indices, text", [
    ([], ""), ([7], "7"), ([0, 1, 2, 3, 5, 7, 8, 9], "0-3,5,7-9"), ([2, 4, 6], "2,4,6"), ([5, 6, 0, 1], "5-6,0-1"),
])
def test_ranges_round_trip(indices, text):
    assert to_ranges(indices) == text
    assert from_ranges(text) == indices


def test_random_subsets_round_trip():
    rng = random.Random(3)
    for n in (1, 2, 17, 1537):
        kept = sorted(rng.sample(range(n), rng.randint(1, n)))
        assert from_ranges(to_ranges(kept)) == kept


def test_bad_ranges_name_the_problem():
    with pytest.raises(ValueError, match="negative"):
        to_ranges([-1, 2])
    with pytest.raises(ValueError, match="'3-x'"):
        from_ranges("1,3-x")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    model = tiny_model(num_hidden_layers=3, intermediate_size=101)
    liar.prune(model, out, liar.PruneConfig(ratio=0.3, nsamples=8, seqlen=48, batch_size=4),
               tokenizer=char_tokenizer(), calibration=calib_ids())
    return out


def test_report_round_trips_with_one_line_per_layer(pruned):
    path = pruned / "liar_report.json"
    report = liar.PruneReport.load(path)
    raw = json.loads(path.read_text())
    lines = path.read_text().splitlines()
    assert len([l for l in lines if l.startswith('  {"index":')]) == len(report.layers) == 3
    assert len(lines) < 120
    for layer, saved in zip(report.layers, raw["layers"], strict=True):
        assert isinstance(saved["mlp"]["kept"], str) and from_ranges(saved["mlp"]["kept"]) == layer.mlp.kept
        assert all(isinstance(i, int) for i in layer.mlp.kept + layer.attn.kept + layer.attn.kept_kv)
        assert layer.mlp.units_after == len(layer.mlp.kept) < layer.mlp.units_before
    again = pruned / "again.json"
    report.save(again)
    assert liar.PruneReport.load(again) == report
    assert again.read_text() == path.read_text()


def test_old_reports_with_index_lists_still_load(pruned, tmp_path):
    raw = json.loads((pruned / "liar_report.json").read_text())
    for layer in raw["layers"]:
        for kind in ("attn", "mlp"):
            layer[kind]["kept"] = from_ranges(layer[kind]["kept"])
            layer[kind]["kept_kv"] = None if layer[kind]["kept_kv"] is None else from_ranges(layer[kind]["kept_kv"])
    (tmp_path / "old.json").write_text(json.dumps(raw, indent=1))
    assert liar.PruneReport.load(tmp_path / "old.json") == liar.PruneReport.load(pruned / "liar_report.json")


def test_report_command_prints_the_summary(pruned, capsys):
    assert main(["report", str(pruned)]) == 0
    text = capsys.readouterr().out
    report = liar.PruneReport.load(pruned / "liar_report.json")
    m = report.model
    assert f"{m['params_before']:,} -> {m['params_after']:,}" in text
    assert "none/bias/liar" in text and "mean relative error, FFN" in text
    rows = [l for l in text.splitlines() if l.split()[:1] in (["0"], ["1"], ["2"])]
    assert len(rows) == 3
    first = report.layers[0]
    assert f"{first.attn.units_after}/{first.attn.units_before}" in rows[0]
    assert f"{first.mlp.errors['liar']:.2g}" in rows[0]
    assert len(text.splitlines()) < 40


def test_report_command_plots(pruned, tmp_path, capsys):
    png = tmp_path / "report.png"
    assert main(["report", str(pruned), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert f"plot: {png}" in capsys.readouterr().out


def test_plot_without_matplotlib_names_the_extra(pruned, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    assert main(["report", str(pruned), "--plot", str(tmp_path / "p.png")]) == 2
    assert "liar[plot]" in capsys.readouterr().err


def test_report_of_a_folder_without_one(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "liar_report.json" in capsys.readouterr().err
