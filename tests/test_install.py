"""Installs anywhere: the sdist holds every source and header and builds liar._C; without a C++ compiler the
install still succeeds, warns, and the torch reference serves. Each test installs into a throwaway venv that
sees this venv's packages (torch, setuptools) through a .pth file, with pip's --no-build-isolation --no-deps,
so nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

CHECK = (
    "import sys, torch, liar, liar.ops as ops\n"
    "from liar import _ext\n"
    "assert liar.__file__.startswith(sys.prefix), liar.__file__\n"
    "x = torch.randn(30, 7).bfloat16()  # auto sends bf16 to the compiled kernel on CPU (fp32 goes to MKL)\n"
    "G, s = torch.zeros(7, 7), torch.zeros(7)\n"
    "assert ops.gram_update(G, s, x) == 30\n"
    "assert torch.allclose(G.triu(), (x.float().T @ x.float()).triu(), rtol=1e-5, atol=1e-4)\n"
    "print('HAS_EXT', _ext.HAS_EXT, ops.last_backend('gram_update'))\n"
)


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist of this working tree, made from a copy so the checkout gets no build folders."""
    work = tmp_path_factory.mktemp("sdist")
    files = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (work / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / "src" / name)
    done = _run([sys.executable, "setup.py", "-q", "sdist", "-d", str(work / "dist")], work / "src",
                {"LIAR_SKIP_CPP_BUILD": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    (archive,) = (work / "dist").glob("liar-*.tar.gz")
    return archive


def _venv(path: Path) -> Path:
    """A venv without pip whose interpreter also sees this venv's site-packages (after its own)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     path).stdout.strip())
    (site / "repo-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _install(python: Path, archive: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """--ignore-installed: pip must not touch the liar that this venv (visible through the .pth) holds."""
    return _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-v", "--ignore-installed",
                 "--no-build-isolation", "--no-deps", "--no-index", str(archive)], cwd, env)


def test_sdist_holds_every_source_and_header(sdist):
    with tarfile.open(sdist) as tar:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tar.getnames() if "/" in n}
    sources = [p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("csrc/**/*"), *ROOT.glob("triton_kernels/*.py")]
               if p.is_file() and p.suffix in (".h", ".cpp", ".cu", ".cuh", ".py")]
    assert sources and not set(sources) - names, sorted(set(sources) - names)
    assert {"README.md", "setup.py", "pyproject.toml", "MANIFEST.in"} <= names
    assert not [n for n in names if n.endswith(".so")]


def test_sdist_builds_the_extension(sdist, tmp_path):
    python = _venv(tmp_path / "venv")
    done = _install(python, sdist, {"MAX_JOBS": "2"}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ran = _run([str(python), "-c", CHECK], tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "HAS_EXT True cpp" in ran.stdout, ran.stdout + ran.stderr[-2000:]


def test_install_without_a_compiler_warns_and_serves_the_reference(sdist, tmp_path):
    python = _venv(tmp_path / "venv")
    done = _install(python, sdist, {"CC": "false", "CXX": "false", "LIAR_SKIP_CUDA_BUILD": "1"}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "liar._C did not build" in done.stdout + done.stderr, done.stdout[-3000:]
    ran = _run([str(python), "-c", CHECK], tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "HAS_EXT False torch" in ran.stdout, ran.stdout + ran.stderr[-2000:]
