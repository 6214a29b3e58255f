"""Build liar (and, once present, its compiled kernels liar._C).

The Triton kernels live in ./triton_kernels and install as `liar.triton_kernels`, so they never shadow the
top-level `triton_kernels` package that triton itself ships.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["liar", "liar.*"]) + ["liar.triton_kernels"]

setup(
    packages=packages,
    package_dir={"liar.triton_kernels": "triton_kernels"},
)
