"""Tests of the spatial LSTM layer against slow, readable references."""

import pickle

import numba
import numpy as np
import pytest

from ride import slstm
from ride._threads import single_threaded_blas
from ride.slstm import SpatialLSTM, slstm_backward, slstm_forward

GRIDS = [(1, 1), (1, 7), (7, 1), (5, 9)]
VARIANTS = [(False, "tanh"), (False, "relu"), (True, "tanh"), (True, "relu")]


# ---------------------------------------------------------------------------
# Reference implementation: plain loops over the sites in raster order.
# ---------------------------------------------------------------------------


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _phi(a, nonlinearity):
    return np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)


def _dphi_from_output(value, nonlinearity):
    """phi' expressed through phi's output (both tanh and ReLU allow this)."""
    return 1.0 - value**2 if nonlinearity == "tanh" else (value > 0.0) * 1.0


def reference_forward(weights, biases, inputs, extended, nonlinearity):
    """Grid pass site by site; also returns the per-site records for backprop.

    The state arrays carry one extra zero row on top and one extra zero column
    on the left, so that the neighbours of border sites read zero.
    """
    num_images, num_rows, num_cols, _ = inputs.shape
    num_hiddens = weights.shape[1]
    h = np.zeros((num_images, num_rows + 1, num_cols + 1, num_hiddens))
    c = np.zeros_like(h)
    records = {}
    for i in range(num_rows):
        for j in range(num_cols):
            h_left, h_up = h[:, i + 1, j], h[:, i, j + 1]
            c_left, c_up = c[:, i + 1, j], c[:, i, j + 1]
            parts = [inputs[:, i, j], h_left, h_up]
            if extended:
                parts += [c_left, c_up]
            y = np.concatenate(parts, axis=1)
            pre = [y @ weights[gate].T + biases[gate] for gate in range(5)]
            g = _phi(pre[0], nonlinearity)
            gate_in, forget_up, forget_left, gate_out = map(_sigmoid, pre[1:])
            cell = forget_up * c_up + forget_left * c_left + gate_in * g
            c[:, i + 1, j + 1] = cell
            h[:, i + 1, j + 1] = _phi(gate_out * cell, nonlinearity)
            records[i, j] = (y, g, gate_in, forget_up, forget_left, gate_out,
                             c_up.copy(), c_left.copy())
    return h[:, 1:, 1:], c[:, 1:, 1:], records


def reference_backward(weights, biases, inputs, extended, nonlinearity, grad_hidden):
    """Backpropagation through the grid in reverse raster order."""
    hidden, cells, records = reference_forward(
        weights, biases, inputs, extended, nonlinearity
    )
    num_images, num_rows, num_cols, num_inputs = inputs.shape
    num_hiddens = weights.shape[1]
    grad_h = grad_hidden.astype(np.float64).copy()
    grad_c = np.zeros_like(grad_h)
    grad_weights = np.zeros_like(weights)
    grad_biases = np.zeros_like(biases)
    grad_inputs = np.zeros_like(inputs)
    for i in reversed(range(num_rows)):
        for j in reversed(range(num_cols)):
            y, g, gate_in, forget_up, forget_left, gate_out = records[i, j][:6]
            c_up, c_left = records[i, j][6:]
            cell = cells[:, i, j]
            grad_u = grad_h[:, i, j] * _dphi_from_output(hidden[:, i, j], nonlinearity)
            grad_cell = grad_c[:, i, j] + grad_u * gate_out
            grad_pre = [
                grad_cell * gate_in * _dphi_from_output(g, nonlinearity),
                grad_cell * g * gate_in * (1 - gate_in),
                grad_cell * c_up * forget_up * (1 - forget_up),
                grad_cell * c_left * forget_left * (1 - forget_left),
                grad_u * cell * gate_out * (1 - gate_out),
            ]
            grad_y = np.zeros_like(y)
            for gate in range(5):
                grad_weights[gate] += grad_pre[gate].T @ y
                grad_biases[gate] += grad_pre[gate].sum(axis=0)
                grad_y += grad_pre[gate] @ weights[gate]
            grad_inputs[:, i, j] = grad_y[:, :num_inputs]
            state = grad_y[:, num_inputs:]
            if j > 0:
                grad_h[:, i, j - 1] += state[:, :num_hiddens]
                grad_c[:, i, j - 1] += grad_cell * forget_left
                if extended:
                    grad_c[:, i, j - 1] += state[:, 2 * num_hiddens : 3 * num_hiddens]
            if i > 0:
                grad_h[:, i - 1, j] += state[:, num_hiddens : 2 * num_hiddens]
                grad_c[:, i - 1, j] += grad_cell * forget_up
                if extended:
                    grad_c[:, i - 1, j] += state[:, 3 * num_hiddens :]
    return grad_weights, grad_biases, grad_inputs


def _random_layer(num_inputs, num_hiddens, extended, nonlinearity, seed, scale=0.5):
    """A layer with weights large enough to make the gates nonlinear."""
    rng = np.random.default_rng(seed)
    layer = SpatialLSTM(num_inputs, num_hiddens, extended=extended,
                        nonlinearity=nonlinearity, random_state=seed)
    layer.weights = rng.uniform(-scale, scale, size=layer.weights.shape)
    layer.biases = rng.normal(scale=0.5, size=layer.biases.shape)
    return layer


def _assert_close(actual, expected, rtol):
    """Compare relative to the largest magnitude, which is what matters here."""
    scale = max(np.max(np.abs(expected)), 1e-300)
    assert actual.shape == expected.shape
    assert actual.dtype == np.float64
    error = np.max(np.abs(actual - expected)) / scale
    assert error <= rtol, f"relative error {error:.3g} exceeds {rtol:.3g}"


# ---------------------------------------------------------------------------
# Agreement with the reference.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("extended,nonlinearity", VARIANTS)
@pytest.mark.parametrize("grid", GRIDS)
def test_forward_matches_reference(grid, extended, nonlinearity):
    layer = _random_layer(3, 4, extended, nonlinearity, seed=1)
    inputs = np.random.default_rng(2).normal(size=(3, *grid, 3))
    hidden = layer.forward(inputs)
    expected, _, _ = reference_forward(layer.weights, layer.biases, inputs,
                                       extended, nonlinearity)
    _assert_close(hidden, expected, 1e-12)


@pytest.mark.parametrize("extended,nonlinearity", VARIANTS)
@pytest.mark.parametrize("grid", GRIDS)
def test_backward_matches_reference(grid, extended, nonlinearity):
    layer = _random_layer(3, 4, extended, nonlinearity, seed=3)
    rng = np.random.default_rng(4)
    inputs = rng.normal(size=(3, *grid, 3))
    grad_hidden = rng.normal(size=(3, *grid, 4))
    layer.forward(inputs)
    grads = layer.backward(grad_hidden)
    expected = reference_backward(layer.weights, layer.biases, inputs, extended,
                                  nonlinearity, grad_hidden)
    for key, value in zip(("weights", "biases", "inputs"), expected):
        _assert_close(grads[key], value, 1e-12)


def test_boundary_states_are_zero():
    # A 1x1 grid sees only zero neighbours, so it equals the step with zeros.
    layer = _random_layer(2, 3, True, "tanh", seed=5)
    inputs = np.random.default_rng(6).normal(size=(4, 1, 1, 2))
    zeros = np.zeros((4, 3))
    h, _ = layer.step(inputs[:, 0, 0], zeros, zeros, zeros, zeros)
    np.testing.assert_allclose(layer.forward(inputs)[:, 0, 0], h, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------
# Finite differences.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("extended,nonlinearity", VARIANTS)
def test_gradients_match_finite_differences(extended, nonlinearity):
    rng = np.random.default_rng(7)
    layer = _random_layer(2, 3, extended, nonlinearity, seed=8)
    inputs = rng.normal(size=(2, 3, 4, 2))
    loss_weights = rng.normal(size=(2, 3, 4, 3))

    def loss(weights, biases, x):
        hidden, _ = slstm_forward(weights, biases, x, extended, nonlinearity)
        return np.sum(loss_weights * hidden)

    layer.forward(inputs)
    grads = layer.backward(loss_weights)
    arrays = {"weights": layer.weights, "biases": layer.biases, "inputs": inputs}
    eps = 1e-6
    for key, array in arrays.items():
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            shifted = {name: value.copy() for name, value in arrays.items()}
            shifted[key][index] += eps
            plus = loss(shifted["weights"], shifted["biases"], shifted["inputs"])
            shifted[key][index] -= 2 * eps
            minus = loss(shifted["weights"], shifted["biases"], shifted["inputs"])
            numeric[index] = (plus - minus) / (2 * eps)
        # ReLU kinks make a few differences unreliable only if an argument lies
        # within eps of zero, which these random draws avoid.
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=key)


def test_gradients_are_fresh_on_each_call():
    layer = _random_layer(2, 3, False, "tanh", seed=9)
    inputs = np.random.default_rng(10).normal(size=(2, 3, 3, 2))
    hidden = layer.forward(inputs)
    first = layer.backward(np.ones_like(hidden))
    second = layer.backward(np.ones_like(hidden))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_input_gradient_can_be_skipped():
    layer = _random_layer(2, 3, False, "tanh", seed=11)
    inputs = np.random.default_rng(12).normal(size=(2, 3, 3, 2))
    hidden, cache = slstm_forward(layer.weights, layer.biases, inputs)
    full = slstm_backward(layer.weights, cache, np.ones_like(hidden))
    partial = slstm_backward(layer.weights, cache, np.ones_like(hidden),
                             input_gradient=False)
    assert partial[2] is None
    np.testing.assert_array_equal(full[0], partial[0])
    np.testing.assert_array_equal(full[1], partial[1])


# ---------------------------------------------------------------------------
# Site-by-site stepping, stacking and float32.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("extended,nonlinearity", VARIANTS)
def test_step_reproduces_grid_pass(extended, nonlinearity):
    layer = _random_layer(2, 5, extended, nonlinearity, seed=13)
    inputs = np.random.default_rng(14).normal(size=(5, 4, 5, 2))
    hidden = layer.forward(inputs)
    num_images, num_rows, num_cols, _ = inputs.shape
    h = np.zeros((num_images, num_rows + 1, num_cols + 2, 5))
    c = np.zeros_like(h)
    for i in range(num_rows):
        for j in range(num_cols):
            h[:, i + 1, j + 1], c[:, i + 1, j + 1] = layer.step(
                inputs[:, i, j], h[:, i + 1, j], c[:, i + 1, j], h[:, i, j + 1],
                c[:, i, j + 1]
            )
    _assert_close(h[:, 1:, 1:-1], hidden, 1e-13)


def test_stacked_layers_compose():
    rng = np.random.default_rng(15)
    lower = _random_layer(3, 4, False, "tanh", seed=16)
    upper = _random_layer(4, 2, False, "tanh", seed=17)
    inputs = rng.normal(size=(2, 3, 4, 3))
    loss_weights = rng.normal(size=(2, 3, 4, 2))

    top = upper.forward(lower.forward(inputs))
    grad_lower = upper.backward(loss_weights)["inputs"]
    grad_inputs = lower.backward(grad_lower)["inputs"]

    eps = 1e-6
    shifted = inputs.copy()
    shifted[1, 2, 1, 0] += eps
    plus = np.sum(loss_weights * upper.forward(lower.forward(shifted)))
    shifted[1, 2, 1, 0] -= 2 * eps
    minus = np.sum(loss_weights * upper.forward(lower.forward(shifted)))
    assert top.shape == (2, 3, 4, 2)
    np.testing.assert_allclose(grad_inputs[1, 2, 1, 0], (plus - minus) / (2 * eps),
                               rtol=1e-6, atol=1e-9)


def test_float32_path():
    layer = _random_layer(3, 4, True, "tanh", seed=18)
    inputs = np.random.default_rng(19).normal(size=(2, 4, 5, 3))
    expected = layer.forward(inputs)
    expected_grads = layer.backward(np.ones_like(expected))
    layer.weights = layer.weights.astype(np.float32)
    layer.biases = layer.biases.astype(np.float32)
    hidden = layer.forward(inputs.astype(np.float32))
    grads = layer.backward(np.ones(hidden.shape, np.float32))
    assert hidden.dtype == np.float32
    np.testing.assert_allclose(hidden, expected, atol=1e-5)
    for key in grads:
        assert grads[key].dtype == np.float32
        scale = np.max(np.abs(expected_grads[key]))
        np.testing.assert_allclose(grads[key], expected_grads[key], atol=1e-4 * scale)


def test_mixed_precision_computes_in_float64():
    layer = _random_layer(3, 4, False, "tanh", seed=20)
    inputs = np.random.default_rng(21).normal(size=(2, 3, 3, 3))
    hidden = layer.forward(inputs.astype(np.float32))
    assert hidden.dtype == np.float64
    np.testing.assert_array_equal(
        hidden, layer.forward(inputs.astype(np.float32).astype(np.float64))
    )


def test_extreme_preactivations_saturate_without_nan():
    layer = _random_layer(2, 3, False, "tanh", seed=22)
    layer.biases = np.array([[800.0], [-800.0], [30.0], [-30.0], [1e3]]) * np.ones(3)
    inputs = np.random.default_rng(23).normal(size=(1, 3, 3, 2))
    # The reference's exp overflows to inf there, which is harmless.
    with np.errstate(over="ignore"):
        hidden, _, _ = reference_forward(layer.weights, layer.biases, inputs, False,
                                         "tanh")
    np.testing.assert_allclose(layer.forward(inputs), hidden, rtol=1e-13,
                               atol=1e-300)


# ---------------------------------------------------------------------------
# Batching, threads, determinism and initialisation.
# ---------------------------------------------------------------------------


def test_results_do_not_depend_on_batching():
    layer = _random_layer(3, 4, True, "tanh", seed=24)
    rng = np.random.default_rng(25)
    inputs = rng.normal(size=(7, 4, 6, 3))
    grad_hidden = rng.normal(size=(7, 4, 6, 4))
    hidden = layer.forward(inputs)
    grads = layer.backward(grad_hidden)

    parts, total = [], {"weights": 0.0, "biases": 0.0}
    for chunk in (slice(0, 1), slice(1, 4), slice(4, 7)):
        parts.append(layer.forward(inputs[chunk]))
        partial = layer.backward(grad_hidden[chunk])
        total["weights"] = total["weights"] + partial["weights"]
        total["biases"] = total["biases"] + partial["biases"]
        np.testing.assert_allclose(partial["inputs"], grads["inputs"][chunk],
                                   rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.concatenate(parts), hidden, rtol=1e-12, atol=1e-15)
    for key in total:
        _assert_close(total[key], grads[key], 1e-12)


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_results_do_not_depend_on_thread_count(dtype, nonlinearity):
    # Enough images that the longest diagonals (4 sites) are cut into several
    # blocks, so that two threads really share the work of one diagonal.
    assert 80 * 4 > 2 * slstm._BLOCK_ROWS
    layer = _random_layer(3, 4, False, nonlinearity, seed=26)
    layer.weights = layer.weights.astype(dtype)
    layer.biases = layer.biases.astype(dtype)
    rng = np.random.default_rng(27)
    inputs = rng.normal(size=(80, 5, 4, 3)).astype(dtype)
    grad_hidden = rng.normal(size=(80, 5, 4, 4)).astype(dtype)
    previous = numba.get_num_threads()
    results = []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            hidden = layer.forward(inputs)
            results.append((hidden, layer.backward(grad_hidden)))
    finally:
        numba.set_num_threads(previous)
    (h1, g1), (h2, g2) = results
    np.testing.assert_array_equal(h1, h2)
    for key in g1:
        np.testing.assert_array_equal(g1[key], g2[key])


def test_weight_gradient_chunks_do_not_depend_on_thread_count(monkeypatch):
    monkeypatch.setattr(slstm, "_REDUCTION_ROWS", 7)
    rng = np.random.default_rng(28)
    grad_pre = rng.normal(size=(50, 6))
    y = rng.normal(size=(50, 4))
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = slstm._weight_gradient(grad_pre, y)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        multi = slstm._weight_gradient(grad_pre, y)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(single, multi)
    np.testing.assert_allclose(single, grad_pre.T @ y, rtol=1e-12)


def test_nested_single_threaded_blas_is_harmless():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [info["num_threads"] for info in threadpool_info()
                if info["user_api"] == "blas"]

    layer = _random_layer(3, 4, True, "tanh", seed=29)
    rng = np.random.default_rng(30)
    inputs = rng.normal(size=(40, 4, 5, 3))
    grad_hidden = rng.normal(size=(40, 4, 5, 4))
    before = blas_threads()
    hidden = layer.forward(inputs)
    grads = layer.backward(grad_hidden)
    assert blas_threads() == before
    with single_threaded_blas():
        nested_hidden = layer.forward(inputs)
        nested_grads = layer.backward(grad_hidden)
        assert all(count == 1 for count in blas_threads())
    assert blas_threads() == before
    np.testing.assert_array_equal(hidden, nested_hidden)
    for key in grads:
        np.testing.assert_array_equal(grads[key], nested_grads[key])


def test_fixed_seed_is_deterministic():
    first = SpatialLSTM(3, 4, random_state=42)
    second = SpatialLSTM(3, 4, random_state=np.random.default_rng(42))
    np.testing.assert_array_equal(first.weights, second.weights)
    assert not np.array_equal(first.weights, SpatialLSTM(3, 4, random_state=43).weights)


@pytest.mark.parametrize("extended", [False, True])
def test_initialisation(extended):
    layer = SpatialLSTM(6, 20, extended=extended, random_state=0)
    k_in = 6 + (4 if extended else 2) * 20
    assert layer.weights.shape == (5, 20, k_in)
    assert layer.biases.shape == (5, 20)
    assert layer.weights.dtype == np.float64
    assert np.all(np.abs(layer.weights) <= 0.08)
    np.testing.assert_array_equal(layer.biases, 0.0)
    # Uniform(-a, a) has mean 0 and variance a**2 / 3.
    assert abs(layer.weights.mean()) < 0.005
    np.testing.assert_allclose(layer.weights.var(), 0.08**2 / 3, rtol=0.05)


# ---------------------------------------------------------------------------
# Object behaviour and input validation.
# ---------------------------------------------------------------------------


def test_repr_attributes_and_pickle():
    layer = _random_layer(3, 4, True, "relu", seed=28)
    inputs = np.random.default_rng(29).normal(size=(2, 3, 3, 3))
    hidden = layer.forward(inputs)
    assert repr(layer) == (
        "SpatialLSTM(num_inputs=3, num_hiddens=4, extended=True, nonlinearity='relu')"
    )
    clone = pickle.loads(pickle.dumps(layer))
    assert (clone.num_inputs, clone.num_hiddens, clone.extended,
            clone.nonlinearity) == (3, 4, True, "relu")
    np.testing.assert_array_equal(clone.weights, layer.weights)
    np.testing.assert_array_equal(clone.biases, layer.biases)
    with pytest.raises(ValueError, match="before forward"):
        clone.backward(np.ones_like(hidden))
    np.testing.assert_array_equal(clone.forward(inputs), hidden)


def test_parameter_setters_validate_shape():
    layer = SpatialLSTM(3, 4)
    with pytest.raises(ValueError, match=r"\(5, 4, 11\)"):
        layer.weights = np.zeros((5, 4, 10))
    with pytest.raises(ValueError, match=r"\(5, 4\)"):
        layer.biases = np.zeros((4, 5))
    with pytest.raises(TypeError, match="float"):
        layer.biases = np.zeros((5, 4), dtype=int)
    values = np.ones((5, 4))
    layer.biases = values
    values[0, 0] = 7.0
    assert layer.biases[0, 0] == 1.0


@pytest.mark.parametrize(
    "inputs,error,match",
    [
        (np.zeros((3, 3, 3)), ValueError, "4-d"),
        (np.zeros((1, 3, 3, 2)), ValueError, "num_inputs=3"),
        (np.zeros((1, 3, 3, 3), dtype=np.int64), TypeError, "astype"),
        (np.zeros((1, 3, 3, 3), dtype=bool), TypeError, "float"),
        (np.zeros((1, 3, 3, 3), dtype=complex), TypeError, "float"),
        (np.zeros((0, 3, 3, 3)), ValueError, "at least one"),
    ],
)
def test_bad_inputs_raise(inputs, error, match):
    with pytest.raises(error, match=match):
        SpatialLSTM(3, 4).forward(inputs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_inputs_raise(bad):
    inputs = np.zeros((1, 3, 3, 3))
    inputs[0, 1, 2, 0] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        SpatialLSTM(3, 4).forward(inputs)


def test_bad_gradient_and_order_raise():
    layer = SpatialLSTM(3, 4, random_state=0)
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.zeros((1, 2, 2, 4)))
    layer.forward(np.zeros((1, 2, 2, 3)))
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 4\)"):
        layer.backward(np.zeros((1, 2, 2, 3)))
    grad = np.zeros((1, 2, 2, 4))
    grad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        layer.backward(grad)


def test_bad_step_arguments_raise():
    layer = SpatialLSTM(3, 4, random_state=0)
    zeros = np.zeros((2, 4))
    with pytest.raises(ValueError, match="h_up"):
        layer.step(np.zeros((2, 3)), zeros, zeros, np.zeros((3, 4)), zeros)
    with pytest.raises(ValueError, match="inputs have 2 channels.*num_inputs=3"):
        layer.step(np.zeros((2, 2)), zeros, zeros, zeros, zeros)
    with pytest.raises(ValueError, match="nonlinearity"):
        SpatialLSTM(3, 4, nonlinearity="sigmoid")


def test_arguments_are_not_modified():
    layer = _random_layer(3, 4, True, "tanh", seed=30)
    rng = np.random.default_rng(31)
    inputs = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
    grad_hidden = rng.normal(size=(2, 3, 4, 4))
    weights, biases = layer.weights.copy(), layer.biases.copy()
    inputs_copy, grad_copy = inputs.copy(), grad_hidden.copy()
    layer.forward(inputs)
    layer.backward(grad_hidden)
    states = [rng.normal(size=(2, 4)) for _ in range(4)]
    states_copy = [s.copy() for s in states]
    layer.step(inputs[:, 0, 0], *states)
    np.testing.assert_array_equal(inputs, inputs_copy)
    np.testing.assert_array_equal(grad_hidden, grad_copy)
    np.testing.assert_array_equal(layer.weights, weights)
    np.testing.assert_array_equal(layer.biases, biases)
    for state, copy in zip(states, states_copy):
        np.testing.assert_array_equal(state, copy)
