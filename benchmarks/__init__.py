"""The benchmark suite behind ``make bench`` (``python -m benchmarks``).

Every benchmark times our code and the official-style baseline (``baseline.py``) in the
same run, interleaved, and checks that both compute the same numbers; the suite rewrites
``docs/performance.md``.
"""
