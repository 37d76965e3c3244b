"""Helpers shared by the benchmark scripts: timing and the machine's GEMM rate."""

import time

import numpy as np


def best_time(function, repeats=5):
    """Smallest wall-clock time of ``repeats`` calls, in seconds (after a warm-up)."""
    function()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(dtype=np.float64, size=2000, repeats=3):
    """The machine's own matrix-multiply rate in FLOP/s, measured now."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    seconds = best_time(lambda: a @ b, repeats)
    return 2.0 * size**3 / seconds
