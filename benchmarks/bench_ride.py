"""Throughput of the RIDE estimator at its default hyperparameters.

16 images of 64x64 (dead leaves), default RIDE (64 hidden units, one layer,
MCGSM with 32 components, 4 scales, 32 features, nb_size 5).  Prints pixels
per second for ``loglikelihood``, sites per second for one SGD epoch (forward
and backward, no fine-tuning) and pixels per second for ``sample``, with the
floating-point rate of the matrix products as a fraction of the machine's own
float64 matrix-multiply rate measured in the same run.

Run:  python benchmarks/bench_ride.py
"""

import os
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_time, matmul_rate  # noqa: E402

from ride import RIDE  # noqa: E402
from ride.datasets import dead_leaves  # noqa: E402


def main(num_images=16, size=64):
    images = dead_leaves(num_images, size, random_state=0)
    model = RIDE(finetune_iter=0, num_epochs=1, random_state=0, learning_rate=0.1)
    model.fit(images[:2, :16, :16])  # compile and initialise
    gemm = matmul_rate()

    H, K, S, F = model.num_hiddens, model.num_components, model.num_scales, 32
    n_in = model.layers_[0].num_inputs
    k_in = n_in + 2 * H
    # matrix-product FLOPs per site: LSTM gates, MCGSM projections
    lstm = 2 * 5 * H * k_in
    mcgsm = 2 * H * (F + K + K) + 2 * K * F
    flops = {"loglikelihood": lstm + mcgsm,
             "SGD epoch": 3 * (lstm + mcgsm),  # forward, backward data + weights
             "sample": lstm + mcgsm}
    sites = num_images * (size - 2) * (size - 4)

    t_ll = best_time(lambda: model.loglikelihood(images), repeats=3)
    model.set_params(warm_start=True)
    t_fit = best_time(lambda: model.fit(images), repeats=2)
    small = images[:, :32, :32]
    small_sites = num_images * 30 * 28
    start = time.perf_counter()
    model.sample(small, random_state=0)
    t_sample = time.perf_counter() - start

    print(f"RIDE benchmark: {num_images} images of {size}x{size}, defaults "
          f"(H={H}, K={K}, S={S}, F={F}, nb_size=5), float64, "
          f"{numba.get_num_threads()} threads")
    print(f"machine float64 matmul rate: {gemm / 1e9:.1f} GFLOP/s")
    for label, seconds, count, unit in (
        ("loglikelihood", t_ll, sites, "pixels"),
        ("SGD epoch (fwd+bwd)", t_fit, sites, "sites"),
        ("sample (32x32 images)", t_sample, small_sites, "pixels"),
    ):
        rate = count / seconds
        achieved = rate * flops[label.split(" (")[0]]
        print(f"{label:24s} {rate:12,.0f} {unit}/s   {achieved / 1e9:6.1f} GFLOP/s "
              f"= {achieved / gemm:6.1%} of matmul")


if __name__ == "__main__":
    main()
