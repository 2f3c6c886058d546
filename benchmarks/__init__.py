"""Benchmarks: `python -m benchmarks.lr_find_quality`, `python -m benchmarks.lr_find_speed`.

Each reports ratios against a baseline measured in the same run and writes benchmarks/results/.
"""
