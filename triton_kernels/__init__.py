"""Triton kernels for liar (installed as liar.triton_kernels)."""
