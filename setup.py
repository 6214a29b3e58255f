"""Build liar and its compiled kernels liar._C (C++ on CPU always; CUDA when a CUDA toolkit and a CUDA torch exist).

Install with `pip install --no-build-isolation -e .` so the extension compiles against the torch you run.
The Triton kernels live in ./triton_kernels and install as `liar.triton_kernels`, so they never shadow the
top-level `triton_kernels` package that triton itself ships.

A compiler that is missing or fails never fails the install: `build_ext` catches it, says so, and liar
installs without liar._C (the torch reference serves every op).

Environment switches (each prints what it did):
    LIAR_SKIP_CPP_BUILD=1    build no extension at all: pure Python, every op served by the torch reference.
    LIAR_SKIP_CUDA_BUILD=1   build the CPU kernels only, even where nvcc and a CUDA torch exist.
    LIAR_CUDA_ARCHS="9.0"    compute capabilities for the CUDA kernels, ';'-separated
                             (default: TORCH_CUDA_ARCH_LIST if set, else "8.0;9.0"; 9.0 = H100/H200).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"
# -ffp-contract=fast lets the vector micro-kernel fuse multiply-add (ISO C++ mode turns that off);
# OpenMP is what at::parallel_for uses inside the extension (torch's own libgomp serves it at run time).
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=fast"]


def _say(message: str) -> None:
    print(f"liar setup: {message}", file=sys.stderr)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _cuda_archs() -> list[str]:
    raw = os.environ.get("LIAR_CUDA_ARCHS") or os.environ.get("TORCH_CUDA_ARCH_LIST") or "8.0;9.0"
    return [a.strip() for a in raw.replace(",", ";").replace(" ", ";").split(";") if a.strip()]


def _gencode(arch: str) -> str:
    num = arch.replace(".", "").replace("+PTX", "")
    return f"-gencode=arch=compute_{num},code=sm_{num}"


def _want_cuda(torch_mod) -> bool:
    if _flag("LIAR_SKIP_CUDA_BUILD"):
        _say("LIAR_SKIP_CUDA_BUILD is set: building the CPU kernels only")
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    if torch_mod.version.cuda is None:
        _say(f"torch {torch_mod.__version__} has no CUDA: building the CPU kernels only")
        return False
    if CUDA_HOME is None or not (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        _say("no CUDA toolkit found (set CUDA_HOME to the toolkit root): building the CPU kernels only")
        return False
    return True


def _extension(torch_mod):
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = [str(p.relative_to(ROOT)) for p in sorted((CSRC / "cpu").glob("*.cpp"))] + ["csrc/bindings.cpp"]
    macros = [("LIAR_TORCH_VERSION", f'"{torch_mod.__version__}"')]
    cxx = list(CXX_FLAGS)
    if not _want_cuda(torch_mod):
        return CppExtension("liar._C", sources, include_dirs=[str(CSRC)], define_macros=macros,
                            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    archs = _cuda_archs()
    _say(f"building the CPU and CUDA kernels for compute capabilities {', '.join(archs)}")
    sources += [str(p.relative_to(ROOT)) for p in sorted((CSRC / "cuda").glob("*.cu"))]
    nvcc = ["-O3", "--threads", "4", *map(_gencode, archs)]
    return CUDAExtension("liar._C", sources, include_dirs=[str(CSRC)], define_macros=[*macros, ("LIAR_WITH_CUDA", None)],
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=["-fopenmp"])


def _tolerant(base):
    """build_ext that turns a compiler or linker failure into a warning and an install without liar._C."""

    class TolerantBuildExt(base):
        def run(self):
            try:
                super().run()
            except Exception as err:  # CompileError, LinkError, ninja's RuntimeError, a missing compiler
                _say(f"WARNING: liar._C did not build ({type(err).__name__}: {err}); installing without compiled "
                     "kernels, the torch reference serves every op. Install a C++ compiler (and ninja) and "
                     "reinstall with `pip install --no-build-isolation .` to get them.")
                self.extensions = []
                self.distribution.ext_modules = []

        def get_outputs(self):
            return super().get_outputs() if self.extensions else []

    return TolerantBuildExt


def _build():
    """(ext_modules, cmdclass); empty when skipped or when torch is not importable at build time."""
    if _flag("LIAR_SKIP_CPP_BUILD"):
        _say("LIAR_SKIP_CPP_BUILD is set: no compiled kernels; the torch reference serves every op")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension
    except ImportError as err:
        _say(f"torch is not importable ({err}); install with --no-build-isolation to build liar._C")
        return [], {}
    _say(f"building liar._C against torch {torch.__version__}")
    return [_extension(torch)], {"build_ext": _tolerant(BuildExtension.with_options(use_ninja=True))}


ext_modules, cmdclass = _build()
packages = find_packages(include=["liar", "liar.*"]) + ["liar.triton_kernels"]

setup(
    packages=packages,
    package_dir={"liar.triton_kernels": "triton_kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
