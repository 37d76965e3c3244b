"""Spatial LSTM layer: a two-dimensional LSTM that scans an image grid.

Each site ``(i, j)`` of an ``R x Q`` grid reads its input vector and the hidden
and memory states of its left neighbour ``(i, j - 1)`` and of its upper
neighbour ``(i - 1, j)``.  States outside the grid are zero.  The update follows
Theis & Bethge (2015), section 2, with the hidden output ``h = phi(o * c)``.

The scan is organised along anti-diagonals: every site with the same ``i + j``
depends only on the previous anti-diagonal, so the sites of one anti-diagonal
and all images form one batched matrix product.  Rows of every work array are
stored in that order, so that each anti-diagonal is a contiguous block:

    row(n, i, j) = site_row[i, j] + n

where ``site_row`` enumerates the sites diagonal by diagonal (increasing ``i``
within a diagonal) and ``n`` is the image index.

Layout of the per-site vectors (``H = num_hiddens``, ``C = num_inputs``):

* pre-activations and gates, ``5 H`` values: ``[g, i, f_up, f_left, o]``;
* concatenated input ``y``, ``K_in + 1`` values:
  ``[x, h_left, h_up, 1]`` or, extended, ``[x, h_left, h_up, c_left, c_up, 1]``;
  the trailing one multiplies the biases, so that they ride along in the
  matrix products of both passes.
"""

import numbers

import numpy as np

from ride._numba import jit, jit_contract, jit_vectorised
from ride._threads import run_blocks, single_threaded_blas

__all__ = ["SpatialLSTM", "slstm_forward", "slstm_backward", "slstm_step"]

_NUM_GATES = 5
_INIT_SCALE = 0.08
_NONLINEARITIES = {"tanh": False, "relu": True}  # value: "is it a ReLU?"
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Constants of the exponential below: the natural log of 2 split in a part whose
# products with small integers are exact and a correction (Cody and Waite), and
# 1.5 * 2**52, which rounds a double to the nearest integer when added.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_ROUND_MAGIC = 6755399441055744.0
_EXP_MAX = 709.0
_EXP_MIN = -708.0
# tanh(20) rounds to 1.0 in double precision, so larger arguments are clipped.
_TANH_CLIP = 20.0
_SIGN_BIT = np.int64(-(2**63))


# ---------------------------------------------------------------------------
# Elementwise kernels.
#
# libm's exp and tanh are scalar calls that LLVM cannot vectorise, and they
# dominated the scan.  The two helpers below evaluate exp(r) - 1 on the reduced
# argument with a polynomial (pure arithmetic, so it vectorises) and build the
# factor 2**n from its bit pattern in a second loop.  Both are accurate to a few
# units in the last place and propagate NaN.
# TODO: float32 arrays are evaluated in double precision here; a float32
# polynomial (degree 7, twice the SIMD lanes) would roughly halve the gate cost,
# which dominates the float32 forward pass.
# ---------------------------------------------------------------------------


@jit_contract
def _reduced_expm1(v):
    """Range reduction and polynomial for ``exp(v) = 2**n * (1 + p)``.

    Parameters
    ----------
    v : float64
        Argument, already clipped to ``[-708, 709]``.

    Returns
    -------
    n : float64
        Integer-valued exponent, ``round(v / ln 2)``.
    p : float64
        ``exp(r) - 1`` for ``r = v - n ln 2``, ``|r| <= ln(2) / 2``.

    Notes
    -----
    Taylor series to degree 13; the truncation error is below 2e-17 relative
    on the reduced interval.
    """
    n = (v * _LOG2E + _ROUND_MAGIC) - _ROUND_MAGIC
    r = (v - n * _LN2_HI) - n * _LN2_LO
    q = 1.0 / 6227020800.0
    q = q * r + 1.0 / 479001600.0
    q = q * r + 1.0 / 39916800.0
    q = q * r + 1.0 / 3628800.0
    q = q * r + 1.0 / 362880.0
    q = q * r + 1.0 / 40320.0
    q = q * r + 1.0 / 5040.0
    q = q * r + 1.0 / 720.0
    q = q * r + 1.0 / 120.0
    q = q * r + 1.0 / 24.0
    q = q * r + 1.0 / 6.0
    q = q * r + 0.5
    q = q * r + 1.0
    return n, q * r


@jit_vectorised
def _sigmoid_inplace(values, bits):
    """Replace ``values`` by the logistic sigmoid ``1 / (1 + exp(-values))``.

    Parameters
    ----------
    values : ndarray of shape (m,), float32 or float64, C-contiguous
        Pre-activations, overwritten with the sigmoid.
    bits : ndarray of shape (m,), int64
        Scratch space.
    """
    for k in range(values.shape[0]):
        v = -np.float64(values[k])
        # Written so that NaN passes through the clipping unchanged.
        v = _EXP_MIN if v < _EXP_MIN else v
        v = _EXP_MAX if v > _EXP_MAX else v
        n, p = _reduced_expm1(v)
        values[k] = p
        bits[k] = (np.int64(n) + 1023) << 52
    scale = bits.view(np.float64)
    for k in range(values.shape[0]):
        s = scale[k]
        values[k] = 1.0 / (1.0 + (s * values[k] + s))


@jit_vectorised
def _tanh_inplace(values, bits):
    """Replace ``values`` by their hyperbolic tangent.

    Parameters
    ----------
    values : ndarray of shape (m,), float32 or float64, C-contiguous
        Arguments, overwritten with ``tanh(values)``.
    bits : ndarray of shape (m,), int64
        Scratch space.

    Notes
    -----
    Uses ``tanh|x| = e / (e + 2)`` with ``e = exp(2|x|) - 1``, which has no
    cancellation near zero because ``e`` comes from the polynomial for
    ``exp(r) - 1``.  The sign of ``x`` travels in the sign bit of the scale.
    """
    for k in range(values.shape[0]):
        x = np.float64(values[k])
        a = -x if x < 0.0 else x
        a = _TANH_CLIP if a > _TANH_CLIP else a
        n, p = _reduced_expm1(2.0 * a)
        values[k] = p
        b = (np.int64(n) + 1023) << 52
        bits[k] = b | _SIGN_BIT if x < 0.0 else b
    scale = bits.view(np.float64)
    for k in range(values.shape[0]):
        s = scale[k]
        m = abs(s)
        e = m * values[k] + (m - 1.0)
        t = e / (e + 2.0)
        values[k] = -t if s < 0.0 else t


@jit
def _phi_inplace(values, bits, relu):
    """Apply the layer nonlinearity ``phi`` (tanh or ReLU) in place.

    Parameters
    ----------
    values : ndarray of shape (m,), float32 or float64, C-contiguous
    bits : ndarray of shape (m,), int64
        Scratch space for tanh.
    relu : bool
        ReLU if true, tanh otherwise.
    """
    if relu:
        for k in range(values.shape[0]):
            # Written so that NaN passes through.
            values[k] = 0.0 if values[k] < 0.0 else values[k]
    else:
        _tanh_inplace(values, bits)


# ---------------------------------------------------------------------------
# Per-site update, shared by the grid scan and the single-site step so that
# both perform exactly the same arithmetic.
# ---------------------------------------------------------------------------


@jit
def _site_forward(pre, c_up, c_left, c_out, h_out, bits, relu):
    """Gates, memory cell and hidden state of one site of one image.

    Parameters
    ----------
    pre : ndarray of shape (5 * H,)
        Pre-activations ``W y + b`` on entry; the gate values ``[g, i, f_up,
        f_left, o]`` on exit (kept for the backward pass).
    c_up, c_left : ndarray of shape (H,)
        Memory cells of the upper and left neighbours (zero outside the grid).
    c_out, h_out : ndarray of shape (H,)
        Receive the memory cell ``c`` and the hidden state ``h = phi(o * c)``.
    bits : ndarray of shape (5 * H,), int64
        Scratch space.
    relu : bool
        ReLU if true, tanh otherwise.

    Notes
    -----
    Theis & Bethge (2015), section 2, equations of the spatial LSTM, with the
    output nonlinearity applied to ``o * c`` as in the reference code.
    """
    num_hiddens = c_out.shape[0]
    _phi_inplace(pre[:num_hiddens], bits[:num_hiddens], relu)
    _sigmoid_inplace(pre[num_hiddens:], bits[num_hiddens:])

    g = pre[:num_hiddens]
    gate_in = pre[num_hiddens : 2 * num_hiddens]
    forget_up = pre[2 * num_hiddens : 3 * num_hiddens]
    forget_left = pre[3 * num_hiddens : 4 * num_hiddens]
    gate_out = pre[4 * num_hiddens :]
    for k in range(num_hiddens):
        cell = forget_up[k] * c_up[k] + forget_left[k] * c_left[k] + gate_in[k] * g[k]
        c_out[k] = cell
        h_out[k] = gate_out[k] * cell
    _phi_inplace(h_out, bits[:num_hiddens], relu)


@jit
def _site_backward(gates, cell, c_up, c_left, grad_h, grad_c, grad_pre, work, bits,
                   relu):
    """Backpropagate through one site of one image.

    Parameters
    ----------
    gates : ndarray of shape (5 * H,)
        Gate values ``[g, i, f_up, f_left, o]`` from the forward pass.
    cell, c_up, c_left : ndarray of shape (H,)
        Memory cell of the site and of its upper and left neighbours.
    grad_h : ndarray of shape (H,)
        Total gradient with respect to ``h`` (loss and successors).
    grad_c : ndarray of shape (H,)
        On entry the gradient with respect to ``c`` arriving from the
        successors; on exit the total gradient with respect to ``c``.
    grad_pre : ndarray of shape (5 * H,)
        Receives the gradient with respect to the pre-activations.
    work : ndarray of shape (H,)
        Scratch space (float).
    bits : ndarray of shape (H,), int64
        Scratch space.
    relu : bool

    Notes
    -----
    Follows the backward equations of the reference implementation; ``phi'``
    is recovered from the recomputed hidden state rather than stored.
    """
    num_hiddens = cell.shape[0]
    for k in range(num_hiddens):
        work[k] = gates[4 * num_hiddens + k] * cell[k]
    _phi_inplace(work, bits, relu)

    for k in range(num_hiddens):
        g = gates[k]
        gate_in = gates[num_hiddens + k]
        forget_up = gates[2 * num_hiddens + k]
        forget_left = gates[3 * num_hiddens + k]
        gate_out = gates[4 * num_hiddens + k]
        h = work[k]
        if relu:
            grad_u = grad_h[k] if h > 0.0 else 0.0
            dphi_g = 1.0 if g > 0.0 else 0.0
        else:
            grad_u = grad_h[k] * (1.0 - h * h)
            dphi_g = 1.0 - g * g
        grad_cell = grad_c[k] + grad_u * gate_out
        grad_c[k] = grad_cell
        grad_pre[k] = grad_cell * gate_in * dphi_g
        grad_pre[num_hiddens + k] = grad_cell * g * gate_in * (1.0 - gate_in)
        grad_pre[2 * num_hiddens + k] = (
            grad_cell * c_up[k] * forget_up * (1.0 - forget_up)
        )
        grad_pre[3 * num_hiddens + k] = (
            grad_cell * c_left[k] * forget_left * (1.0 - forget_left)
        )
        grad_pre[4 * num_hiddens + k] = (
            grad_u * cell[k] * gate_out * (1.0 - gate_out)
        )


# ---------------------------------------------------------------------------
# Grid kernels.  Each call handles a block of rows of one anti-diagonal; the
# Python driver does the block's matrix product just before (forward) or just
# after (backward) in the same thread.
# ---------------------------------------------------------------------------


@jit
def _scatter_inputs(inputs, y, site_row):
    """Copy the inputs into the first columns of the concatenated vectors.

    Parameters
    ----------
    inputs : ndarray of shape (N, R, Q, C)
    y : ndarray of shape (N * R * Q, K_in + 1)
        Rows in diagonal order; columns ``[0, C)`` are written.
    site_row : ndarray of shape (R, Q), int64
        Row of image 0 at each site.
    """
    num_images, num_rows, num_cols, num_inputs = inputs.shape
    for i in range(num_rows):
        for j in range(num_cols):
            base = site_row[i, j]
            for n in range(num_images):
                for k in range(num_inputs):
                    y[base + n, k] = inputs[n, i, j, k]


@jit
def _store_input_gradient(diag, first_i, start, stop, grad_y, grad_inputs):
    """Copy the input part of one anti-diagonal's ``y`` gradient into grid order.

    Parameters
    ----------
    diag, first_i : int
        The anti-diagonal ``i + j`` and its smallest row index ``i``.
    start, stop : int
        Range of local rows (``site * N + image``) to copy.
    grad_y : ndarray of shape (M, K_in)
        Gradient with respect to the concatenated vectors (local rows).
    grad_inputs : ndarray of shape (N, R, Q, C)
        Receives columns ``[0, C)`` at the sites of these rows.
    """
    num_images, _, _, num_inputs = grad_inputs.shape
    for local in range(start, stop):
        s = local // num_images
        n = local - s * num_images
        i = first_i + s
        for k in range(num_inputs):
            grad_inputs[n, i, diag - i, k] = grad_y[local, k]


@jit
def _forward_rows(diag, first_i, start, stop, gates, cells, y, hidden, site_row,
                  zeros, num_inputs, extended, relu):
    """Finish the forward pass of rows ``[start, stop)`` of one anti-diagonal.

    Parameters
    ----------
    diag, first_i : int
        The anti-diagonal ``i + j`` and its smallest row index ``i``.
    start, stop : int
        Range of local rows (``site * N + image``) handled by this call.
    gates : ndarray of shape (T, 5 * H)
        On entry the rows of this diagonal hold ``W y + b``; they are
        overwritten with the gate values.
    cells : ndarray of shape (T, H)
        Memory cells; rows of this diagonal are written.
    y : ndarray of shape (T, K_in + 1)
        Concatenated vectors; the state slots of the successors are written.
    hidden : ndarray of shape (N, R, Q, H)
        Hidden states, written at the sites of this diagonal.
    site_row : ndarray of shape (R, Q), int64
    zeros : ndarray of shape (H,)
        Stands in for the states outside the grid.
    num_inputs : int
    extended, relu : bool

    Notes
    -----
    Different calls touch disjoint rows, so they may run concurrently.
    """
    num_images, num_rows, num_cols, num_hiddens = hidden.shape
    bits = np.empty(gates.shape[1], dtype=np.int64)
    for local in range(start, stop):
        s = local // num_images
        n = local - s * num_images
        i = first_i + s
        j = diag - i
        row = site_row[i, j] + n
        c_up = cells[site_row[i - 1, j] + n] if i > 0 else zeros
        c_left = cells[site_row[i, j - 1] + n] if j > 0 else zeros
        h = hidden[n, i, j]
        _site_forward(gates[row], c_up, c_left, cells[row], h, bits, relu)

        # Push the new states into the concatenated vectors of the successors.
        if j + 1 < num_cols:
            target = y[site_row[i, j + 1] + n]
            for k in range(num_hiddens):
                target[num_inputs + k] = h[k]
            if extended:
                for k in range(num_hiddens):
                    target[num_inputs + 2 * num_hiddens + k] = cells[row, k]
        if i + 1 < num_rows:
            target = y[site_row[i + 1, j] + n]
            for k in range(num_hiddens):
                target[num_inputs + num_hiddens + k] = h[k]
            if extended:
                for k in range(num_hiddens):
                    target[num_inputs + 3 * num_hiddens + k] = cells[row, k]


@jit
def _backward_rows(diag, first_i, start, stop, next_offset, gates, cells,
                   grad_hidden, grad_y_next, state_column, grad_c_next, grad_c,
                   grad_pre, site_row, zeros, extended, relu):
    """Backpropagate through rows ``[start, stop)`` of one anti-diagonal.

    Parameters
    ----------
    diag, first_i : int
        The anti-diagonal ``i + j`` and its smallest row index ``i``.
    start, stop : int
        Range of local rows (``site * N + image``) handled by this call.
    next_offset : int
        First row of diagonal ``diag + 1``; local rows count from there.
    gates : ndarray of shape (T, 5 * H)
    cells : ndarray of shape (T, H)
    grad_hidden : ndarray of shape (N, R, Q, H)
        Gradient of the loss with respect to the hidden states.
    grad_y_next : ndarray of shape (M, W)
        Gradient with respect to the concatenated vectors of diagonal
        ``diag + 1`` (local rows).
    state_column : int
        Column of ``grad_y_next`` where the state part (``h_left``) starts.
    grad_c_next : ndarray of shape (M, H)
        Total memory-cell gradient of diagonal ``diag + 1`` (local rows).
    grad_c : ndarray of shape (M, H)
        Receives the total memory-cell gradient of this diagonal.
    grad_pre : ndarray of shape (T, 5 * H)
        Receives the pre-activation gradients of this diagonal.
    site_row : ndarray of shape (R, Q), int64
    zeros : ndarray of shape (H,)
    extended, relu : bool

    Notes
    -----
    Each row pulls the gradients its two successors sent back, so different
    calls write disjoint rows and may run concurrently.
    """
    num_images, num_rows, num_cols, num_hiddens = grad_hidden.shape
    work = np.empty(num_hiddens, dtype=grad_pre.dtype)
    grad_h = np.empty(num_hiddens, dtype=grad_pre.dtype)
    bits = np.empty(num_hiddens, dtype=np.int64)
    cell_column = state_column + 2 * num_hiddens
    for local in range(start, stop):
        s = local // num_images
        n = local - s * num_images
        i = first_i + s
        j = diag - i
        row = site_row[i, j] + n
        incoming_c = grad_c[local]
        for k in range(num_hiddens):
            grad_h[k] = grad_hidden[n, i, j, k]
            incoming_c[k] = 0.0

        if j + 1 < num_cols:
            succ = site_row[i, j + 1] + n
            loc = succ - next_offset
            forget_left = gates[succ, 3 * num_hiddens : 4 * num_hiddens]
            for k in range(num_hiddens):
                grad_h[k] += grad_y_next[loc, state_column + k]
                incoming_c[k] += grad_c_next[loc, k] * forget_left[k]
            if extended:
                for k in range(num_hiddens):
                    incoming_c[k] += grad_y_next[loc, cell_column + k]
        if i + 1 < num_rows:
            succ = site_row[i + 1, j] + n
            loc = succ - next_offset
            forget_up = gates[succ, 2 * num_hiddens : 3 * num_hiddens]
            for k in range(num_hiddens):
                grad_h[k] += grad_y_next[loc, state_column + num_hiddens + k]
                incoming_c[k] += grad_c_next[loc, k] * forget_up[k]
            if extended:
                for k in range(num_hiddens):
                    incoming_c[k] += grad_y_next[loc, cell_column + num_hiddens + k]

        c_up = cells[site_row[i - 1, j] + n] if i > 0 else zeros
        c_left = cells[site_row[i, j - 1] + n] if j > 0 else zeros
        _site_backward(gates[row], cells[row], c_up, c_left, grad_h, incoming_c,
                       grad_pre[row], work, bits, relu)


@jit
def _step_rows(pre, c_up, c_left, c_out, h_out, relu):
    """One site for a batch of independent inputs (used for sampling).

    Parameters
    ----------
    pre : ndarray of shape (n, 5 * H)
        ``W y + b``; overwritten with the gates.
    c_up, c_left : ndarray of shape (n, H)
    c_out, h_out : ndarray of shape (n, H)
        Receive the memory cells and hidden states.
    relu : bool
    """
    bits = np.empty(pre.shape[1], dtype=np.int64)
    for r in range(pre.shape[0]):
        _site_forward(pre[r], c_up[r], c_left[r], c_out[r], h_out[r], bits, relu)


# ---------------------------------------------------------------------------
# Validation helpers.
# ---------------------------------------------------------------------------


def _check_nonlinearity(nonlinearity):
    if not isinstance(nonlinearity, str) or nonlinearity.lower() not in (
        _NONLINEARITIES
    ):
        raise ValueError(
            f"nonlinearity must be one of {sorted(_NONLINEARITIES)}, "
            f"got {nonlinearity!r}."
        )
    return nonlinearity.lower()


def _check_float_array(array, name, ndim):
    """Return ``array`` as an ndarray after checking dtype, rank and finiteness."""
    array = np.asarray(array)
    if array.dtype not in _FLOAT_DTYPES:
        if array.dtype.kind in "biuf":
            hint = f"; convert it with {name}.astype(np.float64)"
        else:
            hint = ""
        raise TypeError(
            f"{name} must have a float32 or float64 dtype, got {array.dtype}{hint}."
        )
    if array.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-d array, got an array of shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} contains NaN or inf at {int(np.sum(~np.isfinite(array)))} "
            "position(s); remove or replace them before calling."
        )
    return array


def _compute_dtype(*arrays):
    """float32 if every array is float32, float64 otherwise."""
    if all(a.dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _check_weights(weights, extended):
    """Validate a weight array; return it with ``num_inputs`` and ``num_hiddens``."""
    weights = _check_float_array(weights, "weights", 3)
    num_hiddens = weights.shape[1]
    num_inputs = weights.shape[2] - (4 if extended else 2) * num_hiddens
    if weights.shape[0] != _NUM_GATES or num_hiddens < 1 or num_inputs < 0:
        k_in = "C + 4 H" if extended else "C + 2 H"
        raise ValueError(
            f"weights must have shape (5, H, {k_in}) with extended={extended}, got "
            f"{weights.shape}."
        )
    return weights, num_inputs, num_hiddens


def _check_parameters(weights, biases, extended):
    """Validate weights and biases; return them with the layer sizes."""
    weights, num_inputs, num_hiddens = _check_weights(weights, extended)
    biases = _check_float_array(biases, "biases", 2)
    if biases.shape != (_NUM_GATES, num_hiddens):
        raise ValueError(
            f"biases must have shape {(_NUM_GATES, num_hiddens)} to match weights "
            f"of shape {weights.shape}, got {biases.shape}."
        )
    return weights, biases, num_inputs, num_hiddens


# Work is spread over plain Python threads running the nogil kernels above
# rather than over numba's prange: numba's OpenMP workers spin after each
# parallel region, and threads of a ThreadPoolExecutor sleep while idle.  The
# scans run with BLAS limited to one thread and let each worker thread do the
# matrix product of its own rows (np.dot releases the GIL) before their gates;
# multithreaded BLAS between the kernels left its threads spinning on the cores
# the kernels needed.
#
# Each anti-diagonal is cut into blocks whose boundaries depend only on its
# number of rows, never on the number of threads, so every row sees the same
# arithmetic however many threads run.  A block's gates are computed right
# after its product, while the pre-activations are still in the cache.
_BLOCK_ROWS = 128
# Row chunks of the final weight-gradient product (summed in a fixed order).
_REDUCTION_ROWS = 4096


def _weight_gradient(grad_pre, y):
    """``grad_pre.T @ y`` as a sum of fixed row chunks computed in parallel.

    Parameters
    ----------
    grad_pre : ndarray of shape (T, 5 * H)
    y : ndarray of shape (T, K_in + 1)

    Returns
    -------
    ndarray of shape (5 * H, K_in + 1)
        The partial products are added in chunk order, so the result does not
        depend on the number of threads.
    """
    total = grad_pre.shape[0]
    partials = {}

    def product(start, stop):
        partials[start] = np.dot(grad_pre[start:stop].T, y[start:stop])

    run_blocks(product, total, _REDUCTION_ROWS)
    starts = sorted(partials)
    result = partials[starts[0]]
    for start in starts[1:]:
        result += partials[start]
    return result


class _Diagonals:
    """Row bookkeeping of an ``R x Q`` grid traversed by anti-diagonals."""

    def __init__(self, num_images, num_rows, num_cols):
        self.num_images = num_images
        self.num_diagonals = num_rows + num_cols - 1
        diags = np.arange(self.num_diagonals)
        self.first_i = np.maximum(0, diags - num_cols + 1)
        last_i = np.minimum(diags, num_rows - 1)
        self.num_sites = last_i - self.first_i + 1
        self.offset = np.concatenate([[0], np.cumsum(self.num_sites)]) * num_images
        self.max_rows = int(self.num_sites.max()) * num_images
        site_row = np.empty((num_rows, num_cols), dtype=np.int64)
        for d in range(self.num_diagonals):
            i = np.arange(self.first_i[d], last_i[d] + 1)
            site_row[i, d - i] = self.offset[d] + (i - self.first_i[d]) * num_images
        self.site_row = site_row


class _ForwardCache:
    """What :func:`slstm_backward` needs from :func:`slstm_forward`.

    Treat as opaque.  Holds the concatenated vectors ``y``, the gate values and
    the memory cells of every site, in diagonal row order.
    """

    __slots__ = ("shape", "dtype", "extended", "relu", "layout", "y", "gates",
                 "cells")

    def __init__(self, shape, dtype, extended, relu, layout, y, gates, cells):
        self.shape = shape
        self.dtype = dtype
        self.extended = extended
        self.relu = relu
        self.layout = layout
        self.y = y
        self.gates = gates
        self.cells = cells


# ---------------------------------------------------------------------------
# Functional interface.
# ---------------------------------------------------------------------------


def _check_call(weights, biases, inputs, extended, nonlinearity, ndim):
    """Validate the arguments shared by the forward pass and the single step.

    Returns ``(relu, extended, weights, biases, inputs, num_inputs,
    num_hiddens)`` with ``inputs`` an ``ndim``-D float array whose last axis
    has ``num_inputs`` entries.
    """
    relu = _NONLINEARITIES[_check_nonlinearity(nonlinearity)]
    extended = bool(extended)
    weights, biases, num_inputs, num_hiddens = _check_parameters(
        weights, biases, extended
    )
    inputs = _check_float_array(inputs, "inputs", ndim)
    if inputs.shape[-1] != num_inputs:
        raise ValueError(
            f"inputs have {inputs.shape[-1]} channels (last axis of shape "
            f"{inputs.shape}) but the layer expects num_inputs={num_inputs}."
        )
    return relu, extended, weights, biases, inputs, num_inputs, num_hiddens


def slstm_forward(weights, biases, inputs, extended=False, nonlinearity="tanh"):
    """Run a spatial LSTM layer over whole grids.

    Parameters
    ----------
    weights : ndarray of shape (5, H, K_in), float32 or float64
        Gate weights in the order ``g, i, f_up, f_left, o``; columns read
        ``[x, h_left, h_up]`` (``[x, h_left, h_up, c_left, c_up]`` if
        extended).
    biases : ndarray of shape (5, H)
    inputs : ndarray of shape (N, R, Q, C), float32 or float64
    extended : bool, default=False
        Whether the gates also read the neighbours' memory cells.
    nonlinearity : {'tanh', 'relu'}, default='tanh'

    Returns
    -------
    hidden : ndarray of shape (N, R, Q, H)
        Hidden states; float32 if the weights, biases and inputs are all
        float32, float64 otherwise.
    cache : object
        Opaque record for :func:`slstm_backward`.

    Notes
    -----
    Theis & Bethge (2015), section 2.  States outside the grid are zero.
    """
    relu, extended, weights, biases, inputs, num_inputs, num_hiddens = _check_call(
        weights, biases, inputs, extended, nonlinearity, ndim=4
    )
    if 0 in inputs.shape[:3]:
        raise ValueError(
            f"inputs must hold at least one image of at least 1x1 sites, got shape "
            f"{inputs.shape}."
        )

    dtype = _compute_dtype(weights, biases, inputs)
    num_images, num_rows, num_cols, _ = inputs.shape
    num_gates = _NUM_GATES * num_hiddens
    w_aug = np.concatenate(
        [weights.reshape(num_gates, -1), biases.reshape(num_gates, 1)], axis=1
    ).astype(dtype, copy=False)
    inputs = np.ascontiguousarray(inputs, dtype=dtype)
    layout = _Diagonals(num_images, num_rows, num_cols)
    total = num_images * num_rows * num_cols

    # Zero-filled so that the state slots of boundary sites read zero.
    y = np.zeros((total, w_aug.shape[1]), dtype=dtype)
    y[:, -1] = 1.0
    gates = np.empty((total, num_gates), dtype=dtype)
    cells = np.empty((total, num_hiddens), dtype=dtype)
    hidden = np.empty((num_images, num_rows, num_cols, num_hiddens), dtype=dtype)
    zeros = np.zeros(num_hiddens, dtype=dtype)
    _scatter_inputs(inputs, y, layout.site_row)

    w_t = w_aug.T
    site_row = layout.site_row
    with single_threaded_blas():
        for d in range(layout.num_diagonals):
            offset = int(layout.offset[d])
            first_i = int(layout.first_i[d])

            def advance(start, stop, d=d, first_i=first_i, offset=offset):
                rows = slice(offset + start, offset + stop)
                np.dot(y[rows], w_t, out=gates[rows])
                _forward_rows(d, first_i, start, stop, gates, cells, y, hidden,
                              site_row, zeros, num_inputs, extended, relu)

            run_blocks(advance, int(layout.offset[d + 1]) - offset, _BLOCK_ROWS)

    cache = _ForwardCache(inputs.shape, dtype, extended, relu, layout, y, gates,
                          cells)
    return hidden, cache


def slstm_backward(weights, cache, grad_hidden, extended=False, nonlinearity="tanh",
                   input_gradient=True):
    """Backpropagate through a spatial LSTM layer (reverse raster order).

    Parameters
    ----------
    weights : ndarray of shape (5, H, K_in)
        The weights used in the forward pass.
    cache : object
        Second return value of :func:`slstm_forward`.
    grad_hidden : ndarray of shape (N, R, Q, H)
        Gradient of a scalar loss with respect to the hidden states.
    extended : bool, default=False
    nonlinearity : {'tanh', 'relu'}, default='tanh'
        Must match the forward pass.
    input_gradient : bool, default=True
        Whether to compute the gradient with respect to the inputs.  Skipping it
        narrows the per-diagonal matrix products (useful for the lowest layer).

    Returns
    -------
    grad_weights : ndarray of shape (5, H, K_in)
    grad_biases : ndarray of shape (5, H)
    grad_inputs : ndarray of shape (N, R, Q, C) or None
        Gradients summed over all sites and images, in the compute dtype of the
        forward pass.

    Notes
    -----
    The anti-diagonals are processed from the last to the first, which is a
    valid reverse topological order of the raster scan of Theis & Bethge
    (2015), section 2.
    """
    if not isinstance(cache, _ForwardCache):
        raise ValueError(
            "cache must be the second value returned by slstm_forward, got "
            f"{type(cache).__name__}."
        )
    relu = _NONLINEARITIES[_check_nonlinearity(nonlinearity)]
    if bool(extended) != cache.extended or relu != cache.relu:
        raise ValueError(
            f"extended={extended!r} and nonlinearity={nonlinearity!r} do not match "
            "the forward pass that produced the cache."
        )
    weights, num_inputs, num_hiddens = _check_weights(weights, cache.extended)
    num_images, num_rows, num_cols, cache_inputs = cache.shape
    if num_inputs != cache_inputs or cache.gates.shape[1] != 5 * num_hiddens:
        raise ValueError(
            f"weights of shape {weights.shape} do not match the forward pass "
            f"(num_inputs={cache_inputs}, num_hiddens={cache.cells.shape[1]})."
        )
    grad_hidden = _check_float_array(grad_hidden, "grad_hidden", 4)
    expected = (num_images, num_rows, num_cols, num_hiddens)
    if grad_hidden.shape != expected:
        raise ValueError(
            f"grad_hidden must have the shape of the hidden states {expected}, got "
            f"{grad_hidden.shape}."
        )

    dtype = cache.dtype
    layout = cache.layout
    extended = cache.extended
    num_gates = _NUM_GATES * num_hiddens
    w_flat = np.ascontiguousarray(weights.reshape(num_gates, -1), dtype=dtype)
    # Without the input gradient only the state columns of y need a gradient.
    first_column = 0 if input_gradient else num_inputs
    w_back = w_flat[:, first_column:]
    state_column = num_inputs - first_column
    grad_hidden = np.ascontiguousarray(grad_hidden, dtype=dtype)
    total = cache.gates.shape[0]
    max_rows = layout.max_rows

    grad_pre = np.empty((total, num_gates), dtype=dtype)
    grad_y = [np.zeros((max_rows, w_back.shape[1]), dtype=dtype) for _ in range(2)]
    grad_c = [np.zeros((max_rows, num_hiddens), dtype=dtype) for _ in range(2)]
    zeros = np.zeros(num_hiddens, dtype=dtype)
    gates, cells, site_row = cache.gates, cache.cells, layout.site_row
    grad_inputs = np.empty(cache.shape, dtype=dtype) if input_gradient else None

    with single_threaded_blas():
        for d in range(layout.num_diagonals - 1, -1, -1):
            cur, nxt = d % 2, (d + 1) % 2
            offset = int(layout.offset[d])
            first_i, next_offset = int(layout.first_i[d]), int(layout.offset[d + 1])
            # The first diagonal has no predecessor to send a state gradient to.
            product = d > 0 or input_gradient

            def pull(start, stop, d=d, first_i=first_i, offset=offset,
                     next_offset=next_offset, cur=cur, nxt=nxt, product=product):
                _backward_rows(d, first_i, start, stop, next_offset, gates, cells,
                               grad_hidden, grad_y[nxt], state_column, grad_c[nxt],
                               grad_c[cur], grad_pre, site_row, zeros, extended,
                               relu)
                if product:
                    np.dot(grad_pre[offset + start : offset + stop], w_back,
                           out=grad_y[cur][start:stop])
                if input_gradient:
                    _store_input_gradient(d, first_i, start, stop, grad_y[cur],
                                          grad_inputs)

            run_blocks(pull, next_offset - offset, _BLOCK_ROWS)

        # The trailing column of ones in y turns the last column into the biases.
        grad_augmented = _weight_gradient(grad_pre, cache.y)
    grad_weights = np.ascontiguousarray(grad_augmented[:, :-1]).reshape(weights.shape)
    grad_biases = grad_augmented[:, -1].reshape(_NUM_GATES, num_hiddens)
    return grad_weights, grad_biases, grad_inputs


def slstm_step(weights, biases, inputs, h_left, c_left, h_up, c_up, extended=False,
               nonlinearity="tanh"):
    """Advance a spatial LSTM by one site for a batch of independent inputs.

    Parameters
    ----------
    weights : ndarray of shape (5, H, K_in)
    biases : ndarray of shape (5, H)
    inputs : ndarray of shape (n, C)
    h_left, c_left : ndarray of shape (n, H)
        States of the left neighbour (zeros outside the grid).
    h_up, c_up : ndarray of shape (n, H)
        States of the upper neighbour (zeros outside the grid).
    extended : bool, default=False
    nonlinearity : {'tanh', 'relu'}, default='tanh'

    Returns
    -------
    h, c : ndarray of shape (n, H)
        Hidden state and memory cell of the site.

    Notes
    -----
    Performs the same per-site arithmetic as :func:`slstm_forward`, so stepping
    a grid in raster order reproduces the grid pass (up to the rounding of the
    matrix product, which BLAS may block differently).
    """
    relu, extended, weights, biases, inputs, num_inputs, num_hiddens = _check_call(
        weights, biases, inputs, extended, nonlinearity, ndim=2
    )
    batch = inputs.shape[0]
    states = {}
    for name, value in (("h_left", h_left), ("c_left", c_left), ("h_up", h_up),
                        ("c_up", c_up)):
        value = _check_float_array(value, name, 2)
        if value.shape != (batch, num_hiddens):
            raise ValueError(
                f"{name} must have shape {(batch, num_hiddens)} to match inputs, "
                f"got {value.shape}."
            )
        states[name] = value

    dtype = _compute_dtype(weights, biases, inputs, *states.values())
    parts = [inputs, states["h_left"], states["h_up"]]
    if extended:
        parts += [states["c_left"], states["c_up"]]
    parts.append(np.ones((batch, 1)))
    # Same augmented product as the grid pass, so that both round alike.
    y = np.concatenate([p.astype(dtype, copy=False) for p in parts], axis=1)
    num_gates = _NUM_GATES * num_hiddens
    w_aug = np.concatenate(
        [weights.reshape(num_gates, -1), biases.reshape(num_gates, 1)], axis=1
    ).astype(dtype, copy=False)
    pre = np.ascontiguousarray(np.dot(y, w_aug.T))
    h = np.empty((batch, num_hiddens), dtype=dtype)
    c = np.empty((batch, num_hiddens), dtype=dtype)
    _step_rows(pre, np.ascontiguousarray(states["c_up"], dtype=dtype),
               np.ascontiguousarray(states["c_left"], dtype=dtype), c, h, relu)
    return h, c


# ---------------------------------------------------------------------------
# Layer object.
# ---------------------------------------------------------------------------


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
        value < 1
    ):
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


class SpatialLSTM:
    """A spatial LSTM layer over ``R x Q`` grids of input vectors.

    Parameters
    ----------
    num_inputs : int
        Length ``C`` of the input vector at each site.
    num_hiddens : int
        Number ``H`` of hidden units (and memory cells).
    extended : bool, default=False
        If true, the gates also read the memory cells of the left and upper
        neighbours.
    nonlinearity : {'tanh', 'relu'}, default='tanh'
        The nonlinearity ``phi`` applied to the cell input and to ``o * c``.
    random_state : None, int or numpy.random.Generator, default=None
        Source of the initial weights.

    Attributes
    ----------
    weights : ndarray of shape (5, H, K_in)
        Gate weights for ``g, i, f_up, f_left, o``; ``K_in = C + 2 H``, or
        ``C + 4 H`` if extended.  Initialised iid Uniform(-0.08, 0.08).
        Assigning a float32 array (together with float32 biases and inputs)
        selects single-precision computation.
    biases : ndarray of shape (5, H)
        Gate biases, initialised to zero.
    num_inputs, num_hiddens : int
    extended : bool
    nonlinearity : str

    Notes
    -----
    Theis & Bethge (2015), section 2.  Unlike the usual LSTM, the hidden state
    is ``phi(o * c)`` rather than ``o * phi(c)``, as in the authors' code.

    Examples
    --------
    >>> import numpy as np
    >>> from ride.slstm import SpatialLSTM
    >>> layer = SpatialLSTM(3, 4, random_state=0)
    >>> hidden = layer.forward(np.ones((2, 5, 6, 3)))
    >>> hidden.shape
    (2, 5, 6, 4)
    >>> grads = layer.backward(np.ones_like(hidden))
    >>> grads["weights"].shape
    (5, 4, 11)
    """

    def __init__(self, num_inputs, num_hiddens, extended=False, nonlinearity="tanh",
                 random_state=None):
        self.num_inputs = _check_count(num_inputs, "num_inputs")
        self.num_hiddens = _check_count(num_hiddens, "num_hiddens")
        self.extended = bool(extended)
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        rng = np.random.default_rng(random_state)
        self._weights = rng.uniform(
            -_INIT_SCALE, _INIT_SCALE, size=self._weights_shape
        )
        self._biases = np.zeros((_NUM_GATES, self.num_hiddens))
        self._cache = None

    @property
    def _weights_shape(self):
        k_in = self.num_inputs + (4 if self.extended else 2) * self.num_hiddens
        return (_NUM_GATES, self.num_hiddens, k_in)

    @property
    def weights(self):
        """ndarray of shape (5, H, K_in): gate weights (g, i, f_up, f_left, o)."""
        return self._weights

    @weights.setter
    def weights(self, value):
        self._weights = self._validated_parameter(value, "weights",
                                                  self._weights_shape)

    @property
    def biases(self):
        """ndarray of shape (5, H): gate biases (g, i, f_up, f_left, o)."""
        return self._biases

    @biases.setter
    def biases(self, value):
        self._biases = self._validated_parameter(
            value, "biases", (_NUM_GATES, self.num_hiddens)
        )

    @staticmethod
    def _validated_parameter(value, name, shape):
        value = _check_float_array(value, name, len(shape))
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {value.shape}.")
        return np.array(value, order="C", copy=True)

    def forward(self, inputs):
        """Compute the hidden states of whole grids.

        Parameters
        ----------
        inputs : array-like of shape (N, R, Q, num_inputs), float32 or float64

        Returns
        -------
        hidden : ndarray of shape (N, R, Q, num_hiddens)
            float32 only if inputs, weights and biases are all float32.
        """
        inputs = _check_float_array(inputs, "inputs", 4)
        hidden, self._cache = slstm_forward(self._weights, self._biases, inputs,
                                            self.extended, self.nonlinearity)
        return hidden

    def backward(self, grad_hidden):
        """Gradients of a scalar loss given its gradient wrt the hidden states.

        Parameters
        ----------
        grad_hidden : array-like of shape (N, R, Q, num_hiddens)
            Gradient with respect to the hidden states of the last call to
            :meth:`forward`.

        Returns
        -------
        dict
            ``'weights'`` of shape (5, H, K_in), ``'biases'`` of shape (5, H)
            and ``'inputs'`` of shape (N, R, Q, num_inputs); summed over sites
            and images, freshly computed on each call.
        """
        if self._cache is None:
            raise ValueError(
                "backward was called before forward; call forward(inputs) first "
                "(the forward state is not kept through pickling)."
            )
        grad_weights, grad_biases, grad_inputs = slstm_backward(
            self._weights, self._cache, grad_hidden, self.extended, self.nonlinearity
        )
        return {"weights": grad_weights, "biases": grad_biases,
                "inputs": grad_inputs}

    def step(self, inputs, h_left, c_left, h_up, c_up):
        """Advance by one site for a batch of independent inputs.

        Parameters
        ----------
        inputs : array-like of shape (n, num_inputs)
        h_left, c_left, h_up, c_up : array-like of shape (n, num_hiddens)
            Neighbour states; zeros outside the grid.

        Returns
        -------
        h, c : ndarray of shape (n, num_hiddens)
        """
        return slstm_step(self._weights, self._biases, inputs, h_left, c_left, h_up,
                          c_up, self.extended, self.nonlinearity)

    def __repr__(self):
        return (
            f"SpatialLSTM(num_inputs={self.num_inputs}, "
            f"num_hiddens={self.num_hiddens}, extended={self.extended}, "
            f"nonlinearity={self.nonlinearity!r})"
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
