"""numba kernels of the MCGSM: the per-sample mixture over components and scales.

The public wrapper in :mod:`ride.mcgsm` does the matrix products (input
projections, feature energies) with BLAS and calls these serial kernels for the
parts that do not map onto a matrix product, one chunk of rows per thread.  The exponentials in between are left
to numpy, whose SIMD ``exp`` is several times faster than a scalar loop.

A forward pass is ``mixture_logits`` -> ``numpy.exp`` (in place) ->
``mixture_reduce``.
"""

import math

import numpy as np

from ._numba import jit_reduce

#: Shifted log-weights are clamped here before ``exp``: ``exp(-700)`` is still a
#: normal double (about 1e-304), so the clamp is invisible in a sum whose largest
#: term is 1, and it keeps numpy's SIMD ``exp`` off its slow underflow path.
LOG_WEIGHT_FLOOR = -700.0


@jit_reduce
def mixture_logits(
    stacked,
    weights_sq,
    outputs,
    priors,
    precisions,
    expert_const,
    means,
    cholesky_factors,
    gate_energy,
    gate,
    joint,
    max_gate,
    max_joint,
    sq_norm,
):
    """Gate and joint log-weights of every (component, scale) pair, max-shifted.

    With ``g[n, c]`` the quadratic-minus-linear gate energy, ``r = y - A_c x - m_c``
    and ``z = L_c^T r``, the gate log-weight of pair ``(c, s)`` is
    ``priors[c, s] - precisions[c, s] g / 2`` and the joint (gate times expert)
    log-weight adds ``expert_const[c, s] - precisions[c, s] |z|^2 / 2``.

    Parameters
    ----------
    stacked : ndarray of shape (N, F + K + K * D), float64
        ``x_n`` times ``[B, W^T, A^T]``: the feature responses ``b_f . x``, the
        linear gate terms ``w_c . x`` and the predictions ``A_c x``
        (component-major).
    weights_sq : ndarray of shape (K, F), float64
        Squared feature weights ``beta^2``.
    outputs : ndarray of shape (N, D), float64
    priors, precisions, expert_const : ndarray of shape (K, S), float64
        ``eta``, ``exp(alpha)`` and ``D alpha / 2 + log|det L_c| - D log(2 pi) / 2``.
    means : ndarray of shape (K, D), float64
    cholesky_factors : ndarray of shape (K, D, D), float64, lower triangular
    gate_energy : ndarray of shape (N, K), float64
        Output: ``g[n, c] = sum_f beta[c, f]^2 (b_f . x_n)^2 - 2 w_c . x_n``.
    gate, joint : ndarray of shape (N, K * S), float64
        Output: log-weights minus their row maximum (pair index ``c * S + s``),
        clamped below at ``LOG_WEIGHT_FLOOR``.
    max_gate, max_joint : ndarray of shape (N,), float64
        Output: the row maxima that were subtracted.
    sq_norm : ndarray of shape (N, K), float64
        Output: ``|z|^2`` per component.
    """
    num_samples = stacked.shape[0]
    num_components, num_features = weights_sq.shape
    num_scales = priors.shape[1]
    dim_out = outputs.shape[1]
    offset = num_features + num_components
    for n in range(num_samples):
        top_gate = -np.inf
        top_joint = -np.inf
        for c in range(num_components):
            g = 0.0
            for f in range(num_features):
                g += weights_sq[c, f] * stacked[n, f] * stacked[n, f]
            g -= 2.0 * stacked[n, num_features + c]
            gate_energy[n, c] = g
            q = 0.0
            for e in range(dim_out):
                acc = 0.0
                for d in range(e, dim_out):
                    r = outputs[n, d] - stacked[n, offset + c * dim_out + d] - means[c, d]
                    acc += cholesky_factors[c, d, e] * r
                q += acc * acc
            sq_norm[n, c] = q
            for s in range(num_scales):
                lam = precisions[c, s]
                a = priors[c, s] - 0.5 * lam * g
                b = a + expert_const[c, s] - 0.5 * lam * q
                gate[n, c * num_scales + s] = a
                joint[n, c * num_scales + s] = b
                top_gate = max(top_gate, a)
                top_joint = max(top_joint, b)
        # A row whose maximum is not finite (every pair at -inf, or +inf/NaN
        # from overflow) is shifted by 0 so the clamped weights stay finite, and
        # its true maximum is kept: the log-likelihood then comes out as -inf
        # (or NaN), never as a clamped finite number.
        shift_gate = top_gate if np.isfinite(top_gate) else 0.0
        shift_joint = top_joint if np.isfinite(top_joint) else 0.0
        for i in range(num_components * num_scales):
            gate[n, i] = max(gate[n, i] - shift_gate, LOG_WEIGHT_FLOOR)
            joint[n, i] = max(joint[n, i] - shift_joint, LOG_WEIGHT_FLOOR)
        max_gate[n] = top_gate
        max_joint[n] = top_joint


@jit_reduce
def mixture_reduce(
    gate,
    joint,
    max_gate,
    max_joint,
    gate_energy,
    stacked,
    outputs,
    precisions,
    means,
    cholesky_factors,
    sq_norm,
    want_gradient,
    loglik,
    grad_gate,
    grad_proj,
    part_priors,
    part_scales,
    part_cholesky,
):
    """Log-likelihoods from exponentiated log-weights and, optionally, gradients.

    Parameters
    ----------
    gate, joint : ndarray of shape (N, K * S), float64
        ``exp`` of the shifted log-weights from :func:`mixture_logits`.
    max_gate, max_joint : ndarray of shape (N,), float64
        The shifts.
    gate_energy : ndarray of shape (N, K), float64
        From :func:`mixture_logits`.
    stacked, outputs, precisions, means, cholesky_factors
        As for :func:`mixture_logits`.
    sq_norm : ndarray of shape (N, K), float64
    want_gradient : bool
        Fill the gradient outputs below; when False they are not touched.
    loglik : ndarray of shape (N,), float64
        Output: ``log p(y_n | x_n)`` in nats.
    grad_gate : ndarray of shape (N, K), float64
        Output: ``t0[n, c] = sum_s precisions[c, s] (P_out - P_in)[c, s]``, which
        is ``-2 d loglik[n] / d g[n, c]``.
    grad_proj : ndarray of shape (N, K * D), float64
        Output: ``d loglik[n] / d (A_c x_n) = t7 L_c z`` with
        ``t7 = sum_s precisions P_out``.
    part_priors, part_scales : ndarray of shape (K, S), float64
        Output (added to): sums over the rows of ``d loglik / d priors`` and
        ``d loglik / d scales``.
    part_cholesky : ndarray of shape (K, D, D), float64
        Output (added to): sum over the rows of ``d loglik / d L_c`` (lower
        triangle).

    Notes
    -----
    ``P_in`` and ``P_out`` are the posteriors over pairs given ``x`` alone and
    given ``x`` and ``y`` (Theis, Hosseini & Bethge, 2012).
    """
    num_samples, num_components = gate_energy.shape
    num_scales = precisions.shape[1]
    dim_out = outputs.shape[1]
    offset = stacked.shape[1] - num_components * dim_out
    num_pairs = num_components * num_scales
    residual = np.empty(dim_out)
    white = np.empty(dim_out)
    for n in range(num_samples):
        sum_gate = 0.0
        sum_joint = 0.0
        for i in range(num_pairs):
            sum_gate += gate[n, i]
            sum_joint += joint[n, i]
        loglik[n] = (max_joint[n] + math.log(sum_joint)) - (
            max_gate[n] + math.log(sum_gate)
        )
        if not want_gradient:
            continue
        inv_gate = 1.0 / sum_gate
        inv_joint = 1.0 / sum_joint
        for c in range(num_components):
            t0 = 0.0
            t7 = 0.0
            p_comp = 0.0
            g = gate_energy[n, c]
            q = sq_norm[n, c]
            for s in range(num_scales):
                lam = precisions[c, s]
                p_in = gate[n, c * num_scales + s] * inv_gate
                p_out = joint[n, c * num_scales + s] * inv_joint
                t0 += lam * (p_out - p_in)
                t7 += lam * p_out
                p_comp += p_out
                part_priors[c, s] += p_out - p_in
                part_scales[c, s] += p_out * (
                    0.5 * dim_out - 0.5 * lam * q
                ) + 0.5 * lam * g * (p_in - p_out)
            grad_gate[n, c] = t0
            for d in range(dim_out):
                residual[d] = (
                    outputs[n, d] - stacked[n, offset + c * dim_out + d] - means[c, d]
                )
            for e in range(dim_out):
                acc = 0.0
                for d in range(e, dim_out):
                    acc += cholesky_factors[c, d, e] * residual[d]
                white[e] = acc
            # d loglik / d r = -t7 L z ;  d loglik / d L = -t7 r z^T + P_c diag(1/L)
            for d in range(dim_out):
                acc = 0.0
                for e in range(d + 1):
                    acc += cholesky_factors[c, d, e] * white[e]
                    part_cholesky[c, d, e] -= t7 * residual[d] * white[e]
                grad_proj[n, c * dim_out + d] = t7 * acc
                part_cholesky[c, d, d] += p_comp / cholesky_factors[c, d, d]

