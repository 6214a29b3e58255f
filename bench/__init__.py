"""Benchmarks: kernels vs the torch reference (bench_gram.py), end-to-end pruning, GPU checks."""
