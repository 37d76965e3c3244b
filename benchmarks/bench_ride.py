"""Throughput of the RIDE estimator at its default hyperparameters.

16 images of 64x64 (dead leaves), default RIDE (64 hidden units, one layer,
MCGSM with 32 components, 4 scales, 32 features, nb_size 5).  Prints pixels
per second for ``loglikelihood``, sites per second for one SGD epoch (forward
and backward, no fine-tuning) and pixels per second for ``sample``, with the
floating-point rate of the matrix products as a fraction of the machine's own
float64 matrix-multiply rate measured in the same run.

Run:  python benchmarks/bench_ride.py
"""

import cProfile
import os
import pstats
import sys
import time

import numba

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_time, matmul_rate  # noqa: E402

from ride import RIDE  # noqa: E402
from ride._threads import single_threaded_blas  # noqa: E402
from ride.datasets import dead_leaves  # noqa: E402


def stage_profile(model, images):
    """Seconds spent in each stage of one training pass over ``images``."""
    times = {}

    def timed(name, function):
        start = time.perf_counter()
        result = function()
        times[name] = times.get(name, 0.0) + time.perf_counter() - start
        return result

    with single_threaded_blas():
        inputs, outputs = timed("extract + whiten", lambda: model._preprocess(images))
        for batch in range(0, len(images), model.batch_size):
            x = inputs[batch:batch + model.batch_size]
            y = outputs[batch:batch + model.batch_size]
            hidden, caches = timed("LSTM forward",
                                   lambda: model._layer_forward(x, keep=True))
            h = hidden.reshape(-1, hidden.shape[-1])
            _, _, grad_h, _ = timed("MCGSM loglik + gradients",
                                    lambda: model.mcgsm_._forward_backward(
                                        h, y.reshape(-1, y.shape[-1]), True, True))
            timed("LSTM backward", lambda: model._layer_backward(
                caches, grad_h.reshape(hidden.shape), 0))
    return times


def sample_profile(model, images):
    """Share of ``sample`` time per function group, from cProfile."""
    profiler = cProfile.Profile()
    profiler.runcall(model.sample, images, random_state=0, return_loglik=True)
    stats = pstats.Stats(profiler).stats
    total = sum(v[2] for v in stats.values())
    groups = {"LSTM step": "slstm_step", "MCGSM sample": "sample",
              "MCGSM loglik of the draw": "_forward_backward",
              "whitening maps": "transform"}
    shares = {}
    for label, name in groups.items():
        cumulative = max((v[3] for k, v in stats.items() if k[2] == name and
                          "ride" in k[0] and (name != "sample" or "mcgsm" in k[0])),
                         default=0.0)
        shares[label] = cumulative
    return shares, total


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

    print("\nwhere the time goes in one training pass (no optimiser step):")
    times = stage_profile(model, images[..., None])
    total = sum(times.values())
    for name, seconds in times.items():
        print(f"  {name:28s} {seconds * 1e3:8.1f} ms  {seconds / total:6.1%}")
    print("where the time goes in sample (cProfile, cumulative; overheads included):")
    shares, total = sample_profile(model, small[:, :16, :16])
    for name, seconds in shares.items():
        print(f"  {name:28s} {seconds * 1e3:8.1f} ms  {seconds / total:6.1%}")


if __name__ == "__main__":
    main()
