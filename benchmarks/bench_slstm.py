"""Throughput of the spatial LSTM layer.

Run as ``python benchmarks/bench_slstm.py``.  Reports sites per second (one site
of one image counts as one site) for the forward pass and for forward plus
backward, the floating-point rate as a fraction of this machine's own
matrix-multiply rate, and the speed-up over a plain NumPy implementation that
loops over the sites with one batched matrix product per site.

Flop count per site and image: ``2 * 5H * K_in`` for the forward matrix product
and twice that for the backward pass (gradients with respect to the weights and
to the concatenated input), so forward plus backward counts three times the
forward figure.  Elementwise work is not counted.

The layer runs its scans with BLAS limited to one thread and its own worker
threads each doing the matrix products and the gates of their rows; the NumPy
reference and the matrix-multiply rate use BLAS with its default threads.  The
header states both.  All figures are wall-clock bests of several runs, so other
work on the machine lowers them; the load average is printed at start and end.
"""

import argparse
import os
import sys

import numba
import numpy as np
from threadpoolctl import threadpool_info

from ride.slstm import slstm_backward, slstm_forward

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_time, matmul_rate  # noqa: E402


# ---------------------------------------------------------------------------
# Plain NumPy reference: raster order, one matrix product per site.
# ---------------------------------------------------------------------------


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_forward(weights, biases, inputs):
    """Standard variant, tanh; returns hidden states and per-site records."""
    num_images, num_rows, num_cols, num_inputs = inputs.shape
    num_hiddens = weights.shape[1]
    w_flat = weights.reshape(5 * num_hiddens, -1)
    bias = biases.reshape(-1)
    h = np.zeros((num_rows + 1, num_cols + 1, num_images, num_hiddens), inputs.dtype)
    c = np.zeros_like(h)
    records = {}
    for i in range(num_rows):
        for j in range(num_cols):
            y = np.concatenate([inputs[:, i, j], h[i + 1, j], h[i, j + 1]], axis=1)
            a = y @ w_flat.T + bias
            g = np.tanh(a[:, :num_hiddens])
            s = _sigmoid(a[:, num_hiddens:])
            gate_in, forget_up, forget_left, gate_out = np.split(s, 4, axis=1)
            cell = forget_up * c[i, j + 1] + forget_left * c[i + 1, j] + gate_in * g
            c[i + 1, j + 1] = cell
            h[i + 1, j + 1] = np.tanh(gate_out * cell)
            records[i, j] = (y, g, s)
    return h, c, records


def numpy_backward(weights, h, c, records, grad_hidden):
    """Reverse raster order, one matrix product per site and gate block."""
    num_images, num_rows, num_cols, num_hiddens = grad_hidden.shape
    w_flat = weights.reshape(5 * num_hiddens, -1)
    num_inputs = w_flat.shape[1] - 2 * num_hiddens
    grad_h = np.ascontiguousarray(grad_hidden.transpose(1, 2, 0, 3)).copy()
    grad_c = np.zeros_like(grad_h)
    grad_w = np.zeros_like(w_flat)
    grad_b = np.zeros(5 * num_hiddens, grad_hidden.dtype)
    grad_x = np.empty((num_images, num_rows, num_cols, num_inputs), grad_h.dtype)
    for i in reversed(range(num_rows)):
        for j in reversed(range(num_cols)):
            y, g, s = records[i, j]
            gate_in, forget_up, forget_left, gate_out = np.split(s, 4, axis=1)
            cell = c[i + 1, j + 1]
            grad_u = grad_h[i, j] * (1 - h[i + 1, j + 1] ** 2)
            grad_cell = grad_c[i, j] + grad_u * gate_out
            grad_pre = np.concatenate(
                [grad_cell * gate_in * (1 - g**2), grad_cell * g,
                 grad_cell * c[i, j + 1], grad_cell * c[i + 1, j], grad_u * cell],
                axis=1,
            )
            grad_pre[:, num_hiddens:] *= s * (1 - s)
            grad_w += grad_pre.T @ y
            grad_b += grad_pre.sum(axis=0)
            grad_y = grad_pre @ w_flat
            grad_x[:, i, j] = grad_y[:, :num_inputs]
            if j > 0:
                grad_h[i, j - 1] += grad_y[:, num_inputs : num_inputs + num_hiddens]
                grad_c[i, j - 1] += grad_cell * forget_left
            if i > 0:
                grad_h[i - 1, j] += grad_y[:, num_inputs + num_hiddens :]
                grad_c[i - 1, j] += grad_cell * forget_up
    return grad_w, grad_b, grad_x


# ---------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--inputs", type=int, default=12)
    parser.add_argument("--hiddens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    n, size, num_inputs, num_hiddens = (args.images, args.size, args.inputs,
                                        args.hiddens)
    k_in = num_inputs + 2 * num_hiddens
    sites = n * size * size
    forward_flops = 2.0 * 5 * num_hiddens * k_in * sites
    print(f"spatial LSTM: {n} images, {size}x{size} grid, num_inputs={num_inputs}, "
          f"num_hiddens={num_hiddens}, K_in={k_in}, standard, tanh")
    blas_threads = max((info["num_threads"] for info in threadpool_info()
                        if info["user_api"] == "blas"), default=1)
    print("load average at start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"ride: {numba.get_num_threads()} worker threads, each doing BLAS (limited "
          f"to 1 thread) and gates on its rows; numpy reference and matmul rate: "
          f"BLAS with {blas_threads} threads")
    print(f"{'dtype':8s} {'pass':10s} {'time ms':>9s} {'Msites/s':>9s} "
          f"{'GFLOP/s':>8s} {'% matmul':>9s} {'vs numpy':>9s}")

    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        weights = rng.uniform(-0.08, 0.08, (5, num_hiddens, k_in)).astype(dtype)
        biases = np.zeros((5, num_hiddens), dtype)
        inputs = rng.normal(size=(n, size, size, num_inputs)).astype(dtype)
        grad_hidden = rng.normal(size=(n, size, size, num_hiddens)).astype(dtype)
        peak = matmul_rate(dtype)

        def forward():
            return slstm_forward(weights, biases, inputs)

        def forward_backward():
            hidden, cache = slstm_forward(weights, biases, inputs)
            return slstm_backward(weights, cache, grad_hidden)

        def numpy_forward_only():
            return numpy_forward(weights, biases, inputs)

        def numpy_forward_backward():
            h, c, records = numpy_forward(weights, biases, inputs)
            return numpy_backward(weights, h, c, records, grad_hidden)

        # Compile (or load from the numba cache) and check agreement once.
        hidden, _ = forward()
        reference = numpy_forward(weights, biases, inputs)[0][1:, 1:]
        error = np.max(np.abs(hidden - reference.transpose(2, 0, 1, 3)))
        forward_backward()

        rows = [
            ("forward", forward, numpy_forward_only, forward_flops),
            ("fwd+bwd", forward_backward, numpy_forward_backward, 3 * forward_flops),
        ]
        for name, fast, slow, flops in rows:
            elapsed = best_time(fast, args.repeats)
            baseline = best_time(slow, max(1, args.repeats // 2))
            rate = flops / elapsed
            print(f"{np.dtype(dtype).name:8s} {name:10s} {1e3 * elapsed:9.1f} "
                  f"{sites / elapsed / 1e6:9.3f} {rate / 1e9:8.1f} "
                  f"{100 * rate / peak:8.1f}% {baseline / elapsed:8.1f}x")
        print(f"{np.dtype(dtype).name:8s} matmul rate {peak / 1e9:.1f} GFLOP/s "
              f"(2000x2000); max |h - numpy h| = {error:.1e}")
    print("load average at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
