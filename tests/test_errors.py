"""Bad input gets an error naming the file / tensor / option and the fix (exit code 2, no traceback, no
output left behind); runs that do what was asked but not what was meant get a warning in the report."""

from __future__ import annotations

import json
import re
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from liar import data, plan_checks
from liar.io.load import load_pruned
from liar.report import LayerReport, ModuleReport
from tests.conftest import TEXT, char_tokenizer, tiny_model
from tests.test_bert import SENTENCES, bert_tokenizer, tiny_bert
from tests.test_cli import PRUNE, run


def assert_clean_error(capsys, tmp_path, argv, message, out=None):
    """The CLI exits 2 with `message` (a regex) on stderr, no traceback, and leaves no (partial) output."""
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert re_search(message, err), err
    assert "Traceback" not in err
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return err


def re_search(pattern: str, text: str) -> bool:
    return re.search(pattern, text, flags=re.S) is not None


def prune_args(model, out, calib, *extra):
    return [*PRUNE, "--model", model, "--out", out, "--calib", calib, *extra]


def edited_copy(src, dst, edit):
    """A copy of the checkpoint folder `src` whose state dict went through `edit(dict) -> dict`."""
    shutil.copytree(src, dst)
    tensors = edit(load_file(dst / "model.safetensors"))
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


# ---- checkpoint files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("command", ["prune", "eval"])
def test_unreadable_safetensors_names_the_file(damage, command, capsys, model_dir, text_file, tmp_path):
    weights = model_dir / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 3] if damage == "truncated" else b"not a safetensors file" * 9)
    out = tmp_path / "pruned"
    argv = (prune_args(model_dir, out, text_file) if command == "prune"
            else ["eval", "ppl", "--model", model_dir, "--text", text_file, "--seqlen", 32])
    assert_clean_error(capsys, tmp_path, argv, r"model\.safetensors is not a readable safetensors file.*"
                       r"re-save or re-download", out)


def test_fewer_layers_than_config_names_tensor_and_field(capsys, model_dir, text_file, tmp_path):
    src = edited_copy(model_dir, tmp_path / "short",
                      lambda sd: {k: v for k, v in sd.items() if not k.startswith("model.layers.1.")})
    out = tmp_path / "pruned"
    assert_clean_error(capsys, tmp_path, prune_args(src, out, text_file),
                       r"has no tensor model\.layers\.1\.\S+; it holds 1 blocks under 'model\.layers\.' "
                       r"but config\.json \(num_hidden_layers\) declares more: .*re-save or re-download", out)
    assert_clean_error(capsys, tmp_path, ["eval", "ppl", "--model", src, "--text", text_file, "--seqlen", 32],
                       r"lacks 9 tensor\(s\) the config declares, e\.g\. model\.layers\.1\..*re-save")


def test_missing_tensor_in_a_block_is_named(capsys, model_dir, text_file, tmp_path):
    name = "model.layers.0.mlp.up_proj.weight"
    src = edited_copy(model_dir, tmp_path / "holed", lambda sd: {k: v for k, v in sd.items() if k != name})
    out = tmp_path / "pruned"
    assert_clean_error(capsys, tmp_path, prune_args(src, out, text_file),
                       rf"has no tensor {name}; block 0 is incomplete: .*re-save or re-download", out)


def test_bad_config_json_names_file_and_position(capsys, model_dir, text_file, tmp_path):
    (model_dir / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": 48,,\n}')
    out = tmp_path / "pruned"
    assert_clean_error(capsys, tmp_path, prune_args(model_dir, out, text_file),
                       r"config\.json is not valid JSON: .* at line 2 column 21", out)


def _narrow(name, rows):
    return lambda sd: {**sd, name: sd[name][:rows]}


@pytest.mark.parametrize("name, rows, expected", [
    ("model.layers.0.mlp.up_proj.weight", 90, r"up_proj\.weight has shape \[90, 48\], expected \[96, 48\]"),
    ("model.layers.1.self_attn.q_proj.weight", 88, r"q_proj\.weight has shape \[88, 48\], expected \[80, 48\] "
                                                   r"\(whole heads of head_dim=16\)"),
    ("model.layers.0.self_attn.v_proj.weight", 16, r"v_proj\.weight has shape \[16, 48\], expected \[32, 48\] "
                                                   r"\(as many rows as self_attn\.k_proj\.weight\)"),
    ("model.layers.0.input_layernorm.weight", 40, r"input_layernorm\.weight has shape \[40\], expected \[48\]"),
])
def test_wrong_tensor_shape_names_tensor_and_shapes(name, rows, expected, capsys, model_dir, text_file, tmp_path):
    src = edited_copy(model_dir, tmp_path / "bad-shape", _narrow(name, rows))
    out = tmp_path / "pruned"
    assert_clean_error(capsys, tmp_path, prune_args(src, out, text_file), expected + r".*re-save or re-download", out)


def test_consistently_narrower_checkpoint_is_accepted(capsys, model_dir, text_file, tmp_path):
    """A pruned checkpoint whose config still says the base widths (liar's per-layer format) is legitimate."""
    pruned = tmp_path / "global"
    code, _, err = run(capsys, *prune_args(model_dir, pruned, text_file, "--allocation", "global", "--ratio", 0.3))
    assert code == 0, err
    config = json.loads((pruned / "config.json").read_text())
    model = load_pruned(pruned)  # every block through load_block's checks, narrower than config.json says
    widths = [layer.mlp.down_proj.in_features for layer in model.model.layers]
    assert config["model_type"] == "liar_pruned" and min(widths) < config["intermediate_size"]


def test_integer_weights_are_refused(capsys, model_dir, text_file, tmp_path):
    name = "model.layers.0.mlp.gate_proj.weight"
    src = edited_copy(model_dir, tmp_path / "int", lambda sd: {**sd, name: (sd[name] * 100).to(torch.int32)})
    out = tmp_path / "pruned"
    assert_clean_error(capsys, tmp_path, prune_args(src, out, text_file),
                       rf"tensor {name} in \S+ is int32; liar prunes floating-point checkpoints: dequantize first",
                       out)


def test_missing_tokenizer_lists_the_files(capsys, model_dir, text_file, tmp_path):
    for item in model_dir.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens")):
            item.unlink()
    out = tmp_path / "pruned"
    assert_clean_error(capsys, tmp_path, prune_args(model_dir, out, text_file),
                       r"has no tokenizer \(none of tokenizer\.json, tokenizer\.model.*\); copy the tokenizer files.*"
                       r"calibration token ids", out)


def test_gguf_magic_then_garbage(capsys, text_file, tmp_path, monkeypatch):
    monkeypatch.setenv("LIAR_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF" + struct.pack("<I", 3) + bytes(range(256)) * 4)
    out = tmp_path / "pruned"
    assert_clean_error(capsys, tmp_path, prune_args(gguf, out, text_file),
                       r"broken\.gguf is not a readable GGUF file: .*re-download it", out)
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # no conversion left behind


# ---- calibration and evaluation files ----------------------------------------------------------------------------


def bad_calibration(tmp_path):
    files = {
        "binary.txt": (bytes(range(256)) * 8, r"binary\.txt is not UTF-8 text \(byte 0x80 on line 2\)"),
        "nul.txt": (b"fine\nstill fine\n\x00\x01\x02", r"nul\.txt is binary \(a NUL byte on line 3\)"),
        "bad.jsonl": (b'{"text": "a review"}\n{"text": oops}\n', r"bad\.jsonl line 2 is not valid JSON"),
        "array.jsonl": (b'{"text": "a review"}\n["a", "b"]\n', r"array\.jsonl line 2 is a JSON list, not an object"),
        "short.csv": (b'label,text\n1,"a review"\n0\n', r"short\.csv line 3: the `text` field is missing"),
        "null.jsonl": (b'{"text": "a review"}\n{"text": null}\n', r"null\.jsonl line 2: the `text` field is null"),
        "binary.csv": (bytes(range(256)) * 8, r"binary\.csv is not UTF-8 text \(byte 0x80 on line 2\)"),
        "nul.csv": (b'text\n"a review"\n\x00\x01\n', r"nul\.csv line 3: `text` holds a NUL byte"),
    }
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
    return {name: message for name, (_, message) in files.items()}


@pytest.mark.parametrize("name", ["binary.txt", "nul.txt", "bad.jsonl", "array.jsonl", "short.csv", "null.jsonl",
                                  "binary.csv", "nul.csv"])
def test_malformed_calibration_file_names_file_and_line(name, capsys, model_dir, tmp_path):
    message = bad_calibration(tmp_path)[name]
    out = tmp_path / "pruned"
    assert_clean_error(capsys, tmp_path, prune_args(model_dir, out, tmp_path / name), message, out)


def test_calibration_folder(capsys, model_dir, tmp_path):
    out = tmp_path / "pruned"
    assert_clean_error(capsys, tmp_path, prune_args(model_dir, out, tmp_path),
                       rf"{tmp_path} is a folder; pass a \.txt/\.jsonl/\.csv file", out)


@pytest.mark.parametrize("extra, message", [
    (["--seqlen", 0], r"--seqlen 0: a window needs at least 2 tokens"),
    (["--seqlen", 1], r"--seqlen 1: a window needs at least 2 tokens"),
    (["--seqlen", -4], r"--seqlen -4: a window needs at least 2 tokens"),
    (["--seqlen", 64, "--max-tokens", 32], r"--max-tokens 32 is below --seqlen 64.*pass --max-tokens 64 or more"),
    (["--batch-size", 0], r"--batch-size 0: pass 1 or more"),
])
def test_eval_ppl_options_are_validated(extra, message, capsys, model_dir, text_file, tmp_path):
    assert_clean_error(capsys, tmp_path, ["eval", "ppl", "--model", model_dir, "--text", text_file, *extra], message)


@pytest.fixture
def classifier_dir(tmp_path):
    path = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(path)
    bert_tokenizer().save_pretrained(path)
    return path


def test_eval_ppl_on_a_classifier(capsys, classifier_dir, text_file, tmp_path):
    assert_clean_error(capsys, tmp_path, ["eval", "ppl", "--model", classifier_dir, "--text", text_file],
                       r"perplexity needs a causal LM; this checkpoint loads as BertForSequenceClassification; "
                       r"use `liar eval accuracy`")


@pytest.mark.parametrize("content, message", [
    (b'{"text": "good", "label": 1}\n{"text": "bad", "label": 0\n', r"acc\.jsonl line 2 is not valid JSON"),
    (b'{"text": "good", "label": 1}\n["bad", 0]\n', r"acc\.jsonl line 2 is a JSON list, not an object"),
    (b'{"text": "good", "label": 1}\n{"text": null, "label": 0}\n', r"acc\.jsonl line 2: the `text` field is null"),
    (b'{"text": "good", "label": 1}\n{"text": "bad", "label": null}\n',
     r"acc\.jsonl line 2: the `label` field is null"),
])
def test_eval_accuracy_malformed_jsonl(content, message, capsys, classifier_dir, tmp_path):
    (tmp_path / "acc.jsonl").write_bytes(content)
    assert_clean_error(capsys, tmp_path, ["eval", "accuracy", "--model", classifier_dir, "--data",
                                          tmp_path / "acc.jsonl"], message)


def test_eval_ppl_nan_is_an_error(capsys, text_file, tmp_path):
    path = tmp_path / "nan"
    model = tiny_model()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] = float("inf")
    model.save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    assert_clean_error(capsys, tmp_path, ["eval", "ppl", "--model", path, "--text", text_file, "--seqlen", 32],
                       r"the model produced NaN/Inf logits.*try --dtype float32")


# ---- one sentence per line -----------------------------------------------------------------------------------------


def test_txt_without_blank_lines_is_one_document_per_line(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    assert data.read_texts(lines) == SENTENCES
    paragraphs = tmp_path / "paragraphs.txt"
    paragraphs.write_text("first line\nsame document\n\n  \nsecond document\n", encoding="utf-8")
    assert data.read_texts(paragraphs) == ["first line\nsame document", "second document"]


def test_encoder_calibrates_on_a_sentence_per_line_file(capsys, classifier_dir, tmp_path):
    lines = tmp_path / "sentences.txt"
    lines.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    code, stdout, err = run(capsys, "prune", "--model", classifier_dir, "--out", tmp_path / "o", "--calib", lines,
                            "--nsamples", len(SENTENCES), "--seqlen", 64, "--batch-size", 4, "--ratio", 0.3)
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "liar_report.json").read_text())
    assert report["calibration"]["nsamples"] == len(SENTENCES)


# ---- warnings ------------------------------------------------------------------------------------------------------


def layer(index, heads, neurons):
    """A report row: (before, after) heads and neurons."""
    return LayerReport(index, ModuleReport("attn", heads[0], heads[1], list(range(heads[1]))),
                       ModuleReport("mlp", neurons[0], neurons[1], list(range(neurons[1]))))


def test_shortfall_at_min_keep_warns():
    layers = [layer(0, (6, 1), (96, 10)), layer(1, (6, 1), (96, 10))]
    [warning] = plan_checks.removal_warnings(0.99, 0.1, 0.74, layers)
    assert "asked for 99.0%" in warning and "74.0% were removed" in warning
    assert "2 of 2 layers keep the --min-keep 0.1 floor" in warning and "lower --min-keep" in warning
    assert plan_checks.removal_warnings(0.2, 0.1, 0.195, [layer(0, (6, 6), (96, 70))]) == []


def test_nothing_removed_warns_and_summary_is_signed():
    [warning] = plan_checks.removal_warnings(0.001, 0.1, -0.004, [layer(0, (6, 6), (96, 96))])
    assert "removes no head and no neuron" in warning and "blocks +0.4%" in warning and "raise --ratio" in warning


def test_biases_outweighing_the_removal_warn():
    layers = [layer(0, (6, 6), (96, 94)), layer(1, (6, 6), (96, 94))]
    [warning] = plan_checks.removal_warnings(0.01, 0.1, -0.006, layers)
    assert "removes 4 heads/neurons but the biases" in warning and "blocks +0.6%" in warning
    assert "pass --no-bias" in warning


def test_seqlen_beyond_positions_warns():
    config = tiny_model().config  # max_position_embeddings 256
    assert plan_checks.seqlen_warnings(256, config) == []
    [warning] = plan_checks.seqlen_warnings(300, config)
    assert "--seqlen 300 exceeds the model's max_position_embeddings=256" in warning


@pytest.mark.parametrize("ratio, warning, change", [
    (0.99, r"lower --min-keep", r"blocks -\d\d\.\d%"),
    (0.001, r"removes no head and no neuron", r"blocks -0\.0%"),
    (0.003, r"removes 2 heads/neurons but the biases", r"blocks \+\d\.\d%"),
])
def test_prune_reports_the_warning(ratio, warning, change, capsys, model_dir, text_file, tmp_path):
    out = tmp_path / "pruned"
    code, stdout, err = run(capsys, *prune_args(model_dir, out, text_file, "--ratio", ratio))
    assert code == 0, err
    report = json.loads((out / "liar_report.json").read_text())
    assert any(re_search(warning, w) for w in report["warnings"]), report["warnings"]
    assert re_search(change, stdout) and re_search("warning: .*" + warning, stdout), stdout


def test_prune_and_eval_warn_about_seqlen(capsys, caplog, text_file, tmp_path):
    path = tmp_path / "short-positions"
    tiny_model(max_position_embeddings=24).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    out = tmp_path / "pruned"
    code, _, err = run(capsys, *prune_args(path, out, text_file))
    assert code == 0, err
    report = json.loads((out / "liar_report.json").read_text())
    assert any("--seqlen 32 exceeds the model's max_position_embeddings=24" in w for w in report["warnings"])
    code, _, err = run(capsys, "eval", "ppl", "--model", out, "--text", text_file, "--seqlen", 32, "--max-tokens", 256)
    assert code == 0, err
    assert "max_position_embeddings=24" in caplog.text


def bos_tokenizer():
    """The character tokenizer, adding `<bos>` before every text as Gemma's does."""
    from tokenizers import processors

    tok = char_tokenizer()
    tok.add_special_tokens({"bos_token": "<bos>"})
    bos = tok.convert_tokens_to_ids("<bos>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[
        ("<bos>", bos)])
    return tok, bos


def test_windows_start_with_the_tokenizers_prefix():
    """Calibration and perplexity windows begin with the `<bos>` a Gemma-style tokenizer adds (never scored);
    a tokenizer that adds nothing (SmolLM2's) gets the plain windows it always got."""
    from liar.eval import perplexity

    tok, bos = bos_tokenizer()
    assert data.window_prefix(tok) == [bos] and data.window_prefix(char_tokenizer()) == []
    ids = data.calibration_ids(tok, [TEXT], nsamples=3, seqlen=20, seed=0)
    assert ids.shape == (3, 20) and (ids[:, 0] == bos).all() and not (ids[:, 1:] == bos).any()
    plain = data.calibration_ids(char_tokenizer(), [TEXT], nsamples=3, seqlen=20, seed=0)
    assert not (plain == bos).any()
    stream = data.token_stream(tok, [TEXT], 200)
    model = tiny_model(vocab_size=len(tok))
    with_bos = perplexity(model, stream, seqlen=20, prefix=[bos])
    assert with_bos["tokens"] == (200 // 19) * 19  # every text token after a window's <bos> is scored
    assert perplexity(model, stream, seqlen=20)["tokens"] == (200 // 20) * 19
