"""Benchmarks of pod-replace-guard next to its baselines (``make bench``).

Every measurement runs its baselines in the same run, because the machines are shared
and noisy: the ratios are the result, the absolute numbers are context. See
docs/benchmarks.md for the method and the latest figures.
"""
