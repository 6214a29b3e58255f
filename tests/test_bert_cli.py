"""The BERT path through the command line: `liar prune` calibrating on sentences, `liar eval accuracy`."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import transformers

import liar
from tests.test_bert import SENTENCES, bert_tokenizer, tiny_bert
from tests.test_cli import last_json, run

LABELS = {0: "negative", 1: "positive"}


@pytest.fixture
def classifier_dir(tmp_path):
    path = tmp_path / "tiny-bert"
    model = tiny_bert(id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model.save_pretrained(path)
    bert_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def sentence_file(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text("\n\n".join(SENTENCES), encoding="utf-8")
    return path


def write_labelled(path, labels):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(SENTENCES, labels)))
    else:
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(zip(SENTENCES, labels))
    return path


def one_by_one_correct(model, labels) -> int:
    """Predictions sentence by sentence, with no padding at all: the reference for batched accuracy."""
    tok = bert_tokenizer()
    with torch.no_grad():
        predicted = [int(model(**tok(t, return_tensors="pt")).logits.argmax()) for t in SENTENCES]
    return sum(p == y for p, y in zip(predicted, labels))


def test_prune_on_sentences_then_eval_accuracy(capsys, classifier_dir, sentence_file, tmp_path):
    out = tmp_path / "pruned"
    code, stdout, _ = run(capsys, "prune", "--model", classifier_dir, "--out", out, "--calib", sentence_file,
                          "--nsamples", 10, "--seqlen", 128, "--batch-size", 4, "--ratio", 0.4, "--json")
    assert code == 0, stdout
    assert not last_json(stdout)["stock_loadable"] and "liar.load_pruned" in stdout
    report = json.loads((out / "liar_report.json").read_text())
    assert report["calibration"]["nsamples"] == 10 and report["calibration"]["source"] == str(sentence_file)
    assert report["calibration"]["padded_tokens"] > report["calibration"]["tokens"]
    labels = [i % 2 for i in range(len(SENTENCES))]
    data = write_labelled(tmp_path / "labelled.jsonl", labels)
    code, stdout, _ = run(capsys, "eval", "accuracy", "--model", out, "--data", data, "--batch-size", 5, "--json")
    assert code == 0
    result = last_json(stdout)
    assert result["n"] == len(SENTENCES)
    assert result["accuracy"] == one_by_one_correct(liar.load_pruned(out), labels) / len(SENTENCES)


def test_label_names_in_csv_map_through_the_model_config(capsys, classifier_dir, tmp_path):
    labels = [i % 2 for i in range(len(SENTENCES))]
    data = write_labelled(tmp_path / "labelled.csv", [LABELS[y].upper() for y in labels])
    code, stdout, _ = run(capsys, "eval", "accuracy", "--model", classifier_dir, "--data", data, "--json")
    assert code == 0
    assert last_json(stdout)["correct"] == one_by_one_correct(liar.load_pruned(classifier_dir), labels)


@pytest.mark.parametrize("labels, message", [(["maybe"] * 12, "neither an integer nor one of"),
                                             ([0, 1, 2] * 4, "outside the model's 2 classes")])
def test_bad_labels_are_a_clear_error(capsys, classifier_dir, tmp_path, labels, message):
    data = write_labelled(tmp_path / "labelled.jsonl", labels)
    code, _, err = run(capsys, "eval", "accuracy", "--model", classifier_dir, "--data", data)
    assert code == 2 and message in err


def test_missing_label_field_is_a_clear_error(capsys, classifier_dir, tmp_path):
    data = tmp_path / "texts.jsonl"
    data.write_text(json.dumps({"text": "no label here"}) + "\n")
    code, _, err = run(capsys, "eval", "accuracy", "--model", classifier_dir, "--data", data)
    assert code == 2 and "lacks the field(s) label" in err


def test_a_model_without_a_classification_head_is_a_clear_error(capsys, tmp_path):
    path = tmp_path / "encoder"
    tiny_bert(transformers.BertModel).save_pretrained(path)
    bert_tokenizer().save_pretrained(path)
    code, _, err = run(capsys, "eval", "accuracy", "--model", path)
    assert code == 2 and "loads as BertModel, which has no classification head" in err


def test_too_few_sentences_for_nsamples(capsys, classifier_dir, sentence_file, tmp_path):
    code, _, err = run(capsys, "prune", "--model", classifier_dir, "--out", tmp_path / "o", "--calib", sentence_file,
                       "--nsamples", 64)
    assert code == 2 and "has 12 sentences/documents but nsamples=64" in err
