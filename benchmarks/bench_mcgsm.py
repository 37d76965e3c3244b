"""Throughput of the MCGSM log-likelihood and gradients.

Configuration of issue #2: dim_in=64, dim_out=1, K=32, S=4, F=32, 100 000
samples, float64.  Prints samples per second and the same work expressed as a
fraction of the machine's own float64 matrix-multiply rate, measured in the
same run (the machines are shared and noisy, so the ratio is the figure to
compare).

Run:  python benchmarks/bench_mcgsm.py
"""

import os
import sys

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_time, matmul_rate  # noqa: E402

from ride import MCGSM  # noqa: E402


def main(num_samples=100_000, n=64, D=1, K=32, S=4, F=32):
    rng = np.random.default_rng(0)
    model = MCGSM(n, D, K, S, F, random_state=0)
    X = rng.standard_normal((num_samples, n))
    Y = rng.standard_normal((num_samples, D))

    gemm = matmul_rate()
    t_ll = best_time(lambda: model._forward_backward(X, Y, False, False))
    t_grad = best_time(lambda: model._forward_backward(X, Y, True, True))

    # Useful work as matrix-multiply FLOPs per sample: the stacked input
    # projection, the feature energies, and per (c, s) pair a few operations.
    flops_ll = 2 * n * (F + K + K * D) + 2 * K * F + 8 * K * S
    # backward: grad of X B (K F), of features/linear/predictors (outer products)
    # and of X (three products back to n).
    flops_grad = flops_ll + 2 * K * F + 2 * 2 * n * (F + K + K * D) + 12 * K * S

    print(f"MCGSM benchmark: dim_in={n} dim_out={D} K={K} S={S} F={F}, "
          f"{num_samples} samples, float64, {numba.get_num_threads()} threads")
    print(f"machine float64 matmul rate: {gemm / 1e9:.1f} GFLOP/s")
    for label, seconds, flops in (
        ("loglikelihood", t_ll, flops_ll),
        ("loglikelihood + all gradients", t_grad, flops_grad),
    ):
        rate = num_samples / seconds
        print(f"{label:32s} {rate:12,.0f} samples/s   "
              f"{rate * flops / 1e9:6.1f} GFLOP/s = {rate * flops / gemm:6.1%} of matmul")


if __name__ == "__main__":
    main()
