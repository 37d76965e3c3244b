"""Mixture of conditional Gaussian scale mixtures (MCGSM).

The MCGSM of Theis, Hosseini & Bethge (2012) is the conditional density that
RIDE places on top of its spatial LSTMs.  This module implements the
factorized variant with data in rows: inputs ``X`` of shape
``(n_samples, dim_in)`` and outputs ``Y`` of shape ``(n_samples, dim_out)``.
"""

import math
import numbers
import time
import warnings

import numpy as np
from scipy import optimize

from . import _mcgsm_kernels as kernels
from ._threads import run_blocks, single_threaded_blas
from ._validation import (
    ConvergenceWarning,
    check_array,
    check_pair,
    check_positive_int,
    check_random_state,
)

__all__ = ["MCGSM"]

#: Rows per work item; small enough that a chunk's temporaries stay in cache.
CHUNK_SIZE = 2048

_LOG_2PI = math.log(2.0 * math.pi)

#: Parameter groups in packing order, with the flag that trains them.
PARAMETER_GROUPS = (
    "priors",
    "scales",
    "weights",
    "features",
    "cholesky_factors",
    "predictors",
    "linear_features",
    "means",
)


class _NonFiniteObjective(Exception):
    """Raised inside the L-BFGS objective to abort on a NaN or inf value."""


class _EarlyStop(Exception):
    """Raised by the L-BFGS callback to stop the optimisation."""


class MCGSM:
    """Mixture of conditional Gaussian scale mixtures, ``p(y | x)``.

    The density is a mixture over ``K`` components and ``S`` scales.  A gate
    ``p(c, s | x)`` chooses a pair; given the pair, ``y`` is Gaussian with mean
    ``A_c x + m_c`` and precision ``exp(alpha[c, s]) L_c L_c^T``.

    Parameters
    ----------
    dim_in : int
        Size ``n`` of the input vector ``x`` (at least 1).
    dim_out : int, default=1
        Size ``D`` of the output vector ``y``.
    num_components : int, default=8
        Number of mixture components ``K``.
    num_scales : int, default=4
        Number of scales ``S`` per component.
    num_features : int or None, default=None
        Number of shared feature directions ``F``; ``None`` means ``dim_in``.
    random_state : None, int or numpy.random.Generator
        Seeds the random initialisation, ``initialize`` and ``sample``.
    verbose : int, default=0
        0 prints nothing; 1 prints a line at every validation check of
        ``fit`` and a summary; 2 prints every L-BFGS iteration.

    Attributes
    ----------
    priors : ndarray of shape (K, S)
        Unnormalised log mixture weights ``eta``.
    scales : ndarray of shape (K, S)
        Log precision multipliers ``alpha``.
    weights : ndarray of shape (K, F)
        Feature weights ``beta`` (they enter squared).
    features : ndarray of shape (n, F)
        Shared feature directions ``B`` (one per column).
    cholesky_factors : ndarray of shape (K, D, D)
        Lower-triangular ``L_c``; the precision of component ``c`` is
        ``exp(alpha) L_c L_c^T``.  ``L_c[0, 0]`` is never changed by ``fit``
        (it is redundant with ``scales``), and defaults to 1.
    predictors : ndarray of shape (K, D, n)
        Linear predictors ``A_c``.
    linear_features : ndarray of shape (K, n)
        Linear gate terms ``w_c``.
    means : ndarray of shape (K, D)
        Output offsets ``m_c``.
    n_iter_ : int
        L-BFGS iterations run by the last ``fit``.
    best_iteration_ : int
        The iteration whose parameters ``fit`` kept: ``n_iter_``, or with
        validation data the best-validating iteration (0 = the start).
    converged_ : bool
        Whether the last ``fit`` stopped on a convergence criterion (objective
        change, gradient or early stopping) rather than ``max_iter``.
    objective_history_ : list of float
        Training objective after each iteration of the last ``fit``, in bits
        per output dimension; entry 0 is the starting value.
    validation_history_ : list of (int, float)
        ``(iteration, validation objective in bits per output dimension)``.

    Notes
    -----
    With ``g_c(x) = sum_f beta[c,f]^2 (b_f . x)^2 - 2 w_c . x`` the gate is
    ``G[c,s] = eta[c,s] - exp(alpha[c,s]) g_c(x) / 2`` and the expert is a
    Gaussian with log-density
    ``E[c,s] = D alpha/2 + log|det L_c| - D log(2 pi)/2
    - exp(alpha) |L_c^T (y - A_c x - m_c)|^2 / 2``, so that
    ``log p(y|x) = logsumexp(G + E) - logsumexp(G)``
    (Theis et al., 2012, eq. 4; Theis & Bethge, 2015, section 2.2).

    Examples
    --------
    >>> import numpy as np
    >>> from ride import MCGSM
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 4)); Y = X[:, :1] + 0.1 * rng.standard_normal((500, 1))
    >>> model = MCGSM(4, 1, num_components=2, num_scales=2, random_state=0)
    >>> model.fit(X, Y, max_iter=50).evaluate(X, Y) < 0  # bits per dimension
    True
    """

    def __init__(
        self,
        dim_in,
        dim_out=1,
        num_components=8,
        num_scales=4,
        num_features=None,
        random_state=None,
        verbose=0,
    ):
        self.dim_in = check_positive_int(dim_in, "dim_in")
        self.dim_out = check_positive_int(dim_out, "dim_out")
        self.num_components = check_positive_int(num_components, "num_components")
        self.num_scales = check_positive_int(num_scales, "num_scales")
        if num_features is None:
            num_features = dim_in
        self.num_features = check_positive_int(num_features, "num_features")
        self.random_state = random_state
        self.verbose = verbose
        self._rng = check_random_state(random_state)
        self._init_parameters()
        self.n_iter_ = 0
        self.converged_ = False
        self.objective_history_ = []
        self.validation_history_ = []

    # ------------------------------------------------------------------ params

    def _shapes(self):
        K, S, F = self.num_components, self.num_scales, self.num_features
        n, D = self.dim_in, self.dim_out
        return {
            "priors": (K, S),
            "scales": (K, S),
            "weights": (K, F),
            "features": (n, F),
            "cholesky_factors": (K, D, D),
            "predictors": (K, D, n),
            "linear_features": (K, n),
            "means": (K, D),
        }

    def _init_parameters(self):
        """Random initialisation of the original toolkit (cmt)."""
        rng = self._rng
        K, S, F = self.num_components, self.num_scales, self.num_features
        n, D = self.dim_in, self.dim_out
        self._params = {}
        self.priors = np.zeros((K, S))
        self.scales = rng.uniform(-1.0, 1.0, size=(K, S))
        self.weights = np.abs(rng.uniform(-1.0, 1.0, size=(K, F))) / 100.0 + 0.01
        self.features = rng.standard_normal((n, F)) / 100.0
        self.cholesky_factors = np.tile(np.eye(D), (K, 1, 1))
        self.predictors = rng.standard_normal((K, D, n)) / 10.0
        self.linear_features = np.zeros((K, n))
        self.means = np.zeros((K, D))

    def get_parameters(self):
        """Return a dict of copies of all parameter arrays, keyed by name."""
        return {name: self._params[name].copy() for name in PARAMETER_GROUPS}

    def set_parameters(self, parameters):
        """Set parameters from a dict (missing keys are left unchanged)."""
        unknown = set(parameters) - set(PARAMETER_GROUPS)
        if unknown:
            raise ValueError(
                f"Unknown MCGSM parameter(s) {sorted(unknown)}; expected some of "
                f"{list(PARAMETER_GROUPS)}."
            )
        # Validate everything first so that a bad entry changes nothing.
        current = dict(self._params)
        try:
            for name, value in parameters.items():
                self._set_param(name, value)
        except (TypeError, ValueError):
            self._params = current
            raise

    def _set_param(self, name, value):
        shape = self._shapes()[name]
        value = check_array(value, name, ndim=len(shape), allow_float32=False, copy=True)
        if value.shape != shape:
            raise ValueError(
                f"{name} must have shape {shape} for this MCGSM, got {value.shape}."
            )
        if name == "cholesky_factors":
            if np.any(np.triu(value, 1) != 0):
                raise ValueError(
                    "cholesky_factors must be lower triangular (entries above the "
                    "diagonal must be zero)."
                )
            diagonal = np.diagonal(value, axis1=1, axis2=2)
            if np.any(diagonal == 0):
                raise ValueError(
                    "cholesky_factors must have nonzero diagonals (a zero gives a "
                    "singular precision matrix)."
                )
        self._params[name] = value

    def _make_property(name):  # noqa: N805  (used at class creation only)
        def getter(self):
            return self._params[name]

        def setter(self, value):
            self._set_param(name, value)

        return property(getter, setter, doc=f"The ``{name}`` parameter array.")

    priors = _make_property("priors")
    scales = _make_property("scales")
    weights = _make_property("weights")
    features = _make_property("features")
    cholesky_factors = _make_property("cholesky_factors")
    predictors = _make_property("predictors")
    linear_features = _make_property("linear_features")
    means = _make_property("means")
    del _make_property

    def __repr__(self):
        return (
            f"MCGSM(dim_in={self.dim_in}, dim_out={self.dim_out}, "
            f"num_components={self.num_components}, num_scales={self.num_scales}, "
            f"num_features={self.num_features})"
        )

    # -------------------------------------------------------------- validation

    def _check_data(self, X, Y=None, names=("X", "Y")):
        return check_pair(X, Y, self.dim_in, self.dim_out, names)

    # ------------------------------------------------------------------- core

    def _gate_energy(self, X):
        """``g[n, c]`` and the feature responses ``X B``; both (N, K) / (N, F)."""
        responses = X @ self.features
        energy = (responses * responses) @ (self.weights**2).T
        energy -= 2.0 * (X @ self.linear_features.T)
        return energy, responses

    def _expert_constant(self):
        """``D alpha / 2 + log|det L_c| - D log(2 pi) / 2``, shape (K, S)."""
        D = self.dim_out
        diagonal = np.diagonal(self.cholesky_factors, axis1=1, axis2=2)
        logdet = np.sum(np.log(np.abs(diagonal)), axis=1)
        return 0.5 * D * self.scales + logdet[:, None] - 0.5 * D * _LOG_2PI

    def _forward_backward(self, X, Y, parameter_gradient=True, data_gradient=True):
        """Log-likelihoods and gradients of their **sum**, on validated arrays.

        Parameters
        ----------
        X : ndarray of shape (N, n), float64, C-contiguous
        Y : ndarray of shape (N, D), float64, C-contiguous
        parameter_gradient : bool
            Return the gradient of ``sum_n log p(y_n | x_n)`` for every group.
        data_gradient : bool
            Return the per-sample gradients with respect to ``X`` and ``Y``.

        Returns
        -------
        loglik : ndarray of shape (N,)
            ``log p(y_n | x_n)`` in nats.
        grads : dict or None
            Parameter gradients of the summed log-likelihood (nats), shaped
            like the parameters; ``cholesky_factors`` is lower triangular.
        grad_X : ndarray of shape (N, n) or None
        grad_Y : ndarray of shape (N, D) or None
        """
        with single_threaded_blas():
            return self._forward_backward_impl(
                X, Y, parameter_gradient, data_gradient
            )

    def _forward_backward_impl(self, X, Y, parameter_gradient, data_gradient):
        N = X.shape[0]
        K, S, D, F = self.num_components, self.num_scales, self.dim_out, self.num_features
        want = parameter_gradient or data_gradient
        loglik = np.empty(N)
        grad_X = np.empty((N, self.dim_in)) if data_gradient else None
        grad_Y = np.empty((N, D)) if data_gradient else None
        partial_grads = {}

        precisions = np.exp(self.scales)
        expert_const = self._expert_constant()
        weights_sq = self.weights**2
        predictors_flat = self.predictors.reshape(K * D, self.dim_in)
        stacked_map = np.concatenate(
            [self.features, self.linear_features.T, predictors_flat.T], axis=1
        )

        def chunk(start, stop):
            # One thread's share: BLAS products (single-threaded), the serial
            # kernels and numpy's exp all release the GIL.
            x, y = X[start:stop], Y[start:stop]
            m = stop - start
            stacked = x @ stacked_map
            energy = np.empty((m, K))
            gate = np.empty((m, K * S))
            joint = np.empty((m, K * S))
            max_gate = np.empty(m)
            max_joint = np.empty(m)
            sq_norm = np.empty((m, K))
            kernels.mixture_logits(
                stacked, weights_sq, y, self.priors, precisions, expert_const,
                self.means, self.cholesky_factors, energy, gate, joint, max_gate,
                max_joint, sq_norm,
            )
            np.exp(gate, out=gate)
            np.exp(joint, out=joint)
            grad_gate = np.empty((m if want else 0, K))
            grad_proj = np.empty((m if want else 0, K * D))
            part_priors = np.zeros((K, S))
            part_scales = np.zeros((K, S))
            part_chol = np.zeros((K, D, D))
            kernels.mixture_reduce(
                gate, joint, max_gate, max_joint, energy, stacked, y, precisions,
                self.means, self.cholesky_factors, sq_norm, want, loglik[start:stop],
                grad_gate, grad_proj, part_priors, part_scales, part_chol,
            )
            if not want:
                return

            responses = stacked[:, :F]
            # d loglik / d (X B) = -(X B) * (t0 @ beta^2)
            grad_responses = -responses * (grad_gate @ weights_sq)
            if parameter_gradient:
                partial_grads[start] = {
                    "priors": part_priors,
                    "scales": part_scales,
                    "weights": -self.weights * (grad_gate.T @ (responses * responses)),
                    "features": x.T @ grad_responses,
                    "cholesky_factors": part_chol,
                    "predictors": (grad_proj.T @ x).reshape(K, D, -1),
                    "linear_features": grad_gate.T @ x,
                    "means": grad_proj.sum(axis=0).reshape(K, D),
                }
            if data_gradient:
                gx = grad_proj @ predictors_flat
                gx += grad_gate @ self.linear_features
                gx += grad_responses @ self.features.T
                grad_X[start:stop] = gx
                grad_Y[start:stop] = -grad_proj.reshape(m, K, D).sum(axis=1)

        run_blocks(chunk, N, CHUNK_SIZE)

        if not parameter_gradient:
            return loglik, None, grad_X, grad_Y
        # Partial sums are added in row order, whatever thread computed them.
        grads = {name: np.zeros(self._params[name].shape) for name in PARAMETER_GROUPS}
        for start in sorted(partial_grads):
            for name, value in partial_grads[start].items():
                grads[name] += value
        grads["cholesky_factors"] = np.tril(grads["cholesky_factors"])
        return loglik, grads, grad_X, grad_Y

    def _gate_log_weights(self, X):
        """Unnormalised ``log p(c, s | x)``, shape (N, K, S)."""
        energy, _ = self._gate_energy(X)
        return self.priors[None] - 0.5 * np.exp(self.scales)[None] * energy[:, :, None]

    def _joint_log_weights(self, X, Y):
        """Gate plus expert log-weights ``G + E``, shape (N, K, S)."""
        gate = self._gate_log_weights(X)
        residual = self._residuals(X, Y)
        # z = L_c^T r for every sample and component: (N, K, D)
        white = np.einsum("nkd,kde->nke", residual, self.cholesky_factors)
        sq_norm = np.sum(white * white, axis=2)
        expert = self._expert_constant()[None] - 0.5 * np.exp(self.scales)[
            None
        ] * sq_norm[:, :, None]
        return gate + expert

    def _residuals(self, X, Y):
        """``y - A_c x - m_c`` for every component, shape (N, K, D)."""
        projections = np.einsum("kdi,ni->nkd", self.predictors, X)
        return Y[:, None, :] - projections - self.means[None]

    # ------------------------------------------------------------- evaluation

    def loglikelihood(self, X, Y, labels=None):
        """Conditional log-density ``log p(y | x)`` of every sample.

        Parameters
        ----------
        X : ndarray of shape (n_samples, dim_in)
        Y : ndarray of shape (n_samples, dim_out)
        labels : array-like of int, shape (n_samples,), optional
            If given, return ``log p(y | x, c = label)``, with the gate
            normalised over the scales of that component.

        Returns
        -------
        ndarray of shape (n_samples,)
            Log-likelihoods in nats (joint over the ``dim_out`` outputs).
        """
        X, Y = self._check_data(X, Y)
        if labels is None:
            return self._forward_backward(X, Y, False, False)[0]
        labels = self._check_labels(labels, X.shape[0])
        rows = np.arange(X.shape[0])
        gate = self._gate_log_weights(X)[rows, labels]
        joint = self._joint_log_weights(X, Y)[rows, labels]
        return _logsumexp(joint, axis=1) - _logsumexp(gate, axis=1)

    def _check_labels(self, labels, num_samples):
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers, got dtype {labels.dtype}.")
        if labels.shape != (num_samples,):
            raise ValueError(
                f"labels must have shape ({num_samples},), got {labels.shape}."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_components):
            raise ValueError(
                f"labels must lie in [0, {self.num_components}), got values from "
                f"{labels.min()} to {labels.max()}."
            )
        return labels

    def evaluate(self, X, Y, preconditioner=None):
        """Average negative log-likelihood in bits per output dimension.

        Parameters
        ----------
        X : ndarray of shape (n_samples, dim_in)
        Y : ndarray of shape (n_samples, dim_out)
        preconditioner : WhiteningPreconditioner, optional
            If given, the model is taken to live in the preconditioner's
            whitened space: data are transformed before evaluation and its
            log-Jacobian is added, so the result refers to the raw ``Y``.

        Returns
        -------
        float
            ``-mean(log p(y | x)) / (ln 2 * dim_out)``, in bits per dimension.
        """
        if np.shape(X)[0] == 0:
            raise ValueError("evaluate needs at least one sample, got 0 rows.")
        if preconditioner is None:
            loglik = self.loglikelihood(X, Y)
        else:
            Xw, Yw = preconditioner.transform(X, Y)
            loglik = self.loglikelihood(Xw, Yw) + preconditioner.logjacobian()
        return float(-np.mean(loglik) / (math.log(2.0) * self.dim_out))

    def prior(self, X):
        """Posterior over components given ``x`` alone, ``p(c | x)``.

        Returns
        -------
        ndarray of shape (n_samples, num_components)
            Rows sum to one.
        """
        X = self._check_data(X)
        K, S = self.num_components, self.num_scales
        return _softmax(self._gate_log_weights(X).reshape(X.shape[0], K * S)).reshape(
            X.shape[0], self.num_components, self.num_scales
        ).sum(axis=2)

    def posterior(self, X, Y):
        """Posterior over components given ``x`` and ``y``, ``p(c | x, y)``.

        Returns
        -------
        ndarray of shape (n_samples, num_components)
            Rows sum to one.
        """
        X, Y = self._check_data(X, Y)
        joint = self._joint_log_weights(X, Y).reshape(
            X.shape[0], self.num_components * self.num_scales
        )
        return _softmax(joint).reshape(
            X.shape[0], self.num_components, self.num_scales
        ).sum(axis=2)

    def parameter_gradient(self, X, Y):
        """Gradient of the average log-likelihood (nats per sample).

        Returns
        -------
        dict of ndarray
            One array per parameter group, shaped like the parameter, holding
            ``d mean_n log p(y_n | x_n) / d theta``.  The gradient for
            ``cholesky_factors`` is lower triangular.
        """
        X, Y = self._check_data(X, Y)
        _, grads, _, _ = self._forward_backward(X, Y, True, False)
        for value in grads.values():
            value /= max(X.shape[0], 1)
        return grads

    def data_gradient(self, X, Y):
        """Per-sample gradients of ``log p(y_n | x_n)`` with respect to the data.

        Returns
        -------
        grad_X : ndarray of shape (n_samples, dim_in)
        grad_Y : ndarray of shape (n_samples, dim_out)
        loglik : ndarray of shape (n_samples,)
            The log-likelihoods in nats.
        """
        X, Y = self._check_data(X, Y)
        loglik, _, grad_X, grad_Y = self._forward_backward(X, Y, False, True)
        return grad_X, grad_Y, loglik

    # --------------------------------------------------------------- sampling

    def sample(self, X, labels=None, random_state=None):
        """Draw ``y ~ p(y | x)`` for every row of ``X``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, dim_in)
        labels : array-like of int, shape (n_samples,), optional
            Sample from the given component (the scale is still drawn from
            the gate restricted to that component).
        random_state : None, int or numpy.random.Generator
            Source of randomness; ``None`` uses the model's own generator.

        Returns
        -------
        ndarray of shape (n_samples, dim_out)
        """
        X = self._check_data(X)
        rng = self._rng if random_state is None else check_random_state(random_state)
        N, K, S, D = X.shape[0], self.num_components, self.num_scales, self.dim_out
        gate = self._gate_log_weights(X)
        if labels is None:
            pairs = _sample_categorical(gate.reshape(N, K * S), rng)
            components, scale_index = np.divmod(pairs, S)
        else:
            components = self._check_labels(labels, N)
            scale_index = _sample_categorical(gate[np.arange(N), components], rng)
        noise = rng.standard_normal((N, D))
        # v ~ N(0, (L L^T)^-1) by solving L_c^T v = z for every row at once
        factors = self.cholesky_factors[components]
        if D == 1:
            v = noise / factors[:, 0]
        else:
            v = np.linalg.solve(np.swapaxes(factors, 1, 2), noise[:, :, None])[:, :, 0]
        std = np.exp(-0.5 * self.scales[components, scale_index])[:, None]
        mean = np.einsum("ndi,ni->nd", self.predictors[components], X)
        samples = v * std + mean + self.means[components]
        return samples

    def sample_prior(self, X, random_state=None):
        """Draw component labels from ``p(c | x)``; returns ints, shape (n_samples,)."""
        rng = self._rng if random_state is None else check_random_state(random_state)
        X = self._check_data(X)
        gate = self._gate_log_weights(X).reshape(X.shape[0], -1)
        return _sample_categorical(gate, rng) // self.num_scales

    def sample_posterior(self, X, Y, random_state=None):
        """Draw component labels from ``p(c | x, y)``; ints, shape (n_samples,)."""
        rng = self._rng if random_state is None else check_random_state(random_state)
        X, Y = self._check_data(X, Y)
        joint = self._joint_log_weights(X, Y).reshape(X.shape[0], -1)
        return _sample_categorical(joint, rng) // self.num_scales

    # ---------------------------------------------------------- initialising

    def initialize(self, X, Y):
        """Data-dependent initialisation.

        Sets the predictors near the least-squares regression of ``Y`` on
        ``X``, the Cholesky factors to the precision of its residual, and the
        features to random directions in the whitened input space.  Requires
        at least ``dim_in + 1`` samples and a nonsingular input covariance.

        Returns
        -------
        self
        """
        X, Y = self._check_data(X, Y)
        if X.shape[0] <= self.dim_in:
            raise ValueError(
                f"initialize needs more samples than dim_in={self.dim_in}, got "
                f"{X.shape[0]}."
            )
        rng = self._rng
        K, S, F = self.num_components, self.num_scales, self.num_features
        n, D = self.dim_in, self.dim_out
        N = X.shape[0]
        cov_xx = X.T @ X / N
        cov_xy = X.T @ Y / N
        eigval, eigvec = np.linalg.eigh(cov_xx)
        if eigval[0] <= 1e-12 * max(eigval[-1], 1e-300):
            raise ValueError(
                "initialize: the input covariance (X^T X / N) is singular; remove "
                "constant or duplicate input columns."
            )
        whitening = (eigvec / np.sqrt(eigval)) @ eigvec.T
        regression = np.linalg.solve(cov_xx, cov_xy).T  # (D, n)
        residual = Y - X @ regression.T
        try:
            precision = np.linalg.inv(np.atleast_2d(residual.T @ residual / N))
            chol = np.linalg.cholesky(precision)
        except np.linalg.LinAlgError:
            raise ValueError(
                "initialize: the residual covariance of Y given X is singular "
                "(duplicate output columns, or Y an exact linear function of X)."
            ) from None

        self.scales = rng.standard_normal((K, S)) / 20.0
        self.weights = np.abs(rng.uniform(-1.0, 1.0, size=(K, F))) / 100.0 + 0.01
        self.features = whitening.T @ rng.standard_normal((n, F)) / 100.0
        self.linear_features = np.zeros((K, n))
        self.means = np.zeros((K, D))
        self.predictors = regression[None] + rng.standard_normal((K, D, n)) / 10.0
        self.cholesky_factors = np.tile(chol, (K, 1, 1))
        return self

    # -------------------------------------------------------------- training

    def _trainable_index(self, groups):
        """For each trained group, the flat indices of its free entries."""
        index = {}
        D = self.dim_out
        for name in groups:
            size = int(np.prod(self._params[name].shape))
            if name == "cholesky_factors":
                rows, cols = np.tril_indices(D)
                keep = (rows > 0) | (cols > 0)  # L[0, 0] is fixed
                per = rows[keep] * D + cols[keep]
                index[name] = (
                    np.arange(self.num_components)[:, None] * D * D + per[None]
                ).ravel()
            else:
                index[name] = np.arange(size)
        return index

    def _pack(self, arrays, index):
        """Concatenate the free entries of ``arrays`` (a dict) into one vector."""
        return np.concatenate(
            [arrays[name].ravel()[idx] for name, idx in index.items()]
            or [np.empty(0)]
        )

    def _unpack(self, vector, index):
        """Write a packed vector back into the model's parameters (in place)."""
        offset = 0
        for name, idx in index.items():
            flat = self._params[name].reshape(-1)
            flat[idx] = vector[offset : offset + idx.size]
            offset += idx.size

    def fit(
        self,
        X,
        Y,
        X_valid=None,
        Y_valid=None,
        max_iter=1000,
        *,
        train_priors=True,
        train_scales=True,
        train_weights=True,
        train_features=True,
        train_cholesky_factors=True,
        train_predictors=True,
        train_linear_features=False,
        train_means=False,
        threshold=1e-9,
        num_grad=20,
        val_iter=5,
        val_look_ahead=20,
        callback=None,
    ):
        """Maximise the log-likelihood with L-BFGS, starting from the current
        parameters.

        The objective is the average negative log-likelihood in bits per
        output dimension, ``-mean log p(y|x) / (ln 2 * dim_out)``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, dim_in)
        Y : ndarray of shape (n_samples, dim_out)
        X_valid, Y_valid : ndarray, optional
            Validation data for early stopping.  The validation objective is
            computed for the starting parameters and every ``val_iter``
            iterations; the parameters with the best validation score seen are
            kept, and training stops after ``val_look_ahead`` checks without
            improvement (``<= 0`` disables stopping, not the selection).
        max_iter : int, default=1000
            Maximum number of L-BFGS iterations; 0 changes nothing.
        train_priors, ..., train_means : bool
            Which parameter groups are optimised.  The linear features and the
            means are off by default, as in the original implementation.
        threshold : float, default=1e-9
            Stop when the objective decreases by less than this between two
            iterations (bits per dimension).
        num_grad : int, default=20
            Number of L-BFGS correction pairs.
        val_iter, val_look_ahead : int
            See ``X_valid``.
        callback : callable, optional
            ``callback(iteration, model)``, called after every iteration;
            returning ``False`` stops training.

        Returns
        -------
        self

        Warns
        -----
        ConvergenceWarning
            When ``max_iter`` iterations were run without convergence.
        """
        X, Y = self._check_data(X, Y)
        validate = X_valid is not None or Y_valid is not None
        if validate:
            if X_valid is None or Y_valid is None:
                raise ValueError("Pass both X_valid and Y_valid, or neither.")
            X_valid, Y_valid = self._check_data(
                X_valid, Y_valid, names=("X_valid", "Y_valid")
            )
        max_iter = check_positive_int(max_iter, "max_iter", minimum=0)
        check_positive_int(num_grad, "num_grad")
        check_positive_int(val_iter, "val_iter")
        if isinstance(val_look_ahead, bool) or not isinstance(
            val_look_ahead, numbers.Integral
        ):
            raise TypeError(f"val_look_ahead must be an integer, got {val_look_ahead!r}.")
        if not (isinstance(threshold, numbers.Real) and threshold >= 0):
            raise ValueError(f"threshold must be a float >= 0, got {threshold!r}.")
        flags = {
            "priors": train_priors,
            "scales": train_scales,
            "weights": train_weights,
            "features": train_features,
            "cholesky_factors": train_cholesky_factors,
            "predictors": train_predictors,
            "linear_features": train_linear_features,
            "means": train_means,
        }
        index = self._trainable_index([g for g in PARAMETER_GROUPS if flags[g]])
        index = {name: idx for name, idx in index.items() if idx.size}

        self.n_iter_ = 0
        self.best_iteration_ = 0
        self.converged_ = False
        self.objective_history_ = []
        self.validation_history_ = []
        if X.shape[0] == 0 or not index:
            self.converged_ = True
            return self

        scale = 1.0 / (X.shape[0] * math.log(2.0) * self.dim_out)

        def objective(vector):
            self._unpack(vector, index)
            loglik, grads, _, _ = self._forward_backward(X, Y, True, False)
            value = -float(np.sum(loglik)) * scale
            if not np.isfinite(value):
                raise _NonFiniteObjective(value)
            return value, -self._pack(grads, index) * scale

        x0 = self._pack(self._params, index)
        state = {
            "best_x": x0.copy(),
            "best_valid": np.inf,
            "best_iteration": 0,
            "bad_checks": 0,
            "last_x": x0.copy(),
            "last_f": None,
            "reason": None,
        }
        start_time = time.perf_counter()

        def check_validation(iteration):
            value = self.evaluate(X_valid, Y_valid)
            self.validation_history_.append((iteration, value))
            if value < state["best_valid"]:
                state["best_valid"] = value
                state["best_x"] = self._pack(self._params, index)
                state["best_iteration"] = iteration
                state["bad_checks"] = 0
            else:
                state["bad_checks"] += 1
            if self.verbose >= 1:
                print(
                    f"[MCGSM] iter {iteration:5d}  train {state['last_f']:.5f}  "
                    f"valid {value:.5f} bit/dim  "
                    f"({time.perf_counter() - start_time:.1f} s)"
                )
            return value

        try:
            with np.errstate(over="ignore", invalid="ignore"):
                f0, _ = objective(x0)
        except _NonFiniteObjective as error:
            self._unpack(x0, index)
            raise ValueError(
                f"MCGSM.fit: the objective at the starting parameters is "
                f"{error.args[0]}; the parameters or the data are too extreme "
                "(whiten the data, or re-initialise the model)."
            ) from None
        state["last_f"] = f0
        self.objective_history_.append(f0)
        if validate:
            check_validation(0)
        if max_iter == 0:
            self._unpack(x0, index)
            return self

        def on_iteration(intermediate_result):
            x, f = intermediate_result.x, float(intermediate_result.fun)
            self.n_iter_ += 1
            k = self.n_iter_
            previous = state["last_f"]
            state["last_x"] = x.copy()
            state["last_f"] = f
            self.objective_history_.append(f)
            self._unpack(x, index)
            if self.verbose >= 2:
                print(f"[MCGSM] iter {k:5d}  objective {f:.6f} bit/dim")
            if validate and val_iter > 0 and k % val_iter == 0:
                check_validation(k)
                if 0 < val_look_ahead <= state["bad_checks"]:
                    state["reason"] = "validation"
                    raise _EarlyStop
            if callback is not None and callback(k, self) is False:
                state["reason"] = "callback"
                raise _EarlyStop
            if previous - f < threshold:
                state["reason"] = "threshold"
                raise _EarlyStop

        failed = None
        try:
            result = optimize.minimize(
                objective,
                x0,
                jac=True,
                method="L-BFGS-B",
                callback=on_iteration,
                options={
                    "maxiter": max_iter,
                    "maxcor": num_grad,
                    "maxfun": max(15000, 20 * max_iter),
                    "ftol": 0.0,
                    "gtol": 1e-9,
                },
            )
            final_x = result.x
            if state["reason"] is None:
                state["reason"] = (
                    "max_iter" if self.n_iter_ >= max_iter else "scipy: " + str(
                        result.message
                    )
                )
        except _EarlyStop:
            final_x = state["last_x"]
        except _NonFiniteObjective as error:
            failed = error.args[0]
            final_x = state["last_x"]
            state["reason"] = "nonfinite"
        self._unpack(final_x, index)

        if failed is not None:
            warnings.warn(
                f"MCGSM.fit: the objective became {failed} after "
                f"{self.n_iter_} iterations; restored the parameters of the last "
                "good iteration. Consider whitening the data "
                "(WhiteningPreconditioner) or lowering max_iter.",
                RuntimeWarning,
                stacklevel=2,
            )
        self.best_iteration_ = self.n_iter_
        if validate:
            final_valid = self.evaluate(X_valid, Y_valid)
            if state["best_valid"] <= final_valid:
                self._unpack(state["best_x"], index)
                self.best_iteration_ = state["best_iteration"]
            elif self.verbose >= 1:
                print(f"[MCGSM] final parameters validate at {final_valid:.5f} bit/dim")
        self.converged_ = state["reason"] not in ("max_iter", "nonfinite")
        if state["reason"] == "max_iter":
            warnings.warn(
                f"MCGSM.fit stopped after max_iter={max_iter} L-BFGS iterations "
                "without converging; increase max_iter or pass validation data "
                "for early stopping.",
                ConvergenceWarning,
                stacklevel=2,
            )
        if self.verbose >= 1:
            print(
                f"[MCGSM] done: {self.n_iter_} iterations, objective "
                f"{self.objective_history_[-1]:.5f} bit/dim, stop: "
                f"{state['reason']} ({time.perf_counter() - start_time:.1f} s)"
            )
        return self

    # ------------------------------------------------------------- persistence

    def _to_hdf5(self, group):
        """Write hyperparameters and parameters into an open h5py group."""
        group.attrs["class"] = "MCGSM"
        for key in ("dim_in", "dim_out", "num_components", "num_scales", "num_features"):
            group.attrs[key] = getattr(self, key)
        for name in PARAMETER_GROUPS:
            group.create_dataset(name, data=self._params[name])

    @classmethod
    def _from_hdf5(cls, group):
        """Rebuild an MCGSM from a group written by ``_to_hdf5``."""
        try:
            model = cls(
                int(group.attrs["dim_in"]),
                int(group.attrs["dim_out"]),
                int(group.attrs["num_components"]),
                int(group.attrs["num_scales"]),
                int(group.attrs["num_features"]),
            )
            model.set_parameters({name: group[name][()] for name in PARAMETER_GROUPS})
        except KeyError as error:
            raise ValueError(
                f"HDF5 group {group.name!r} is not a complete ride MCGSM "
                f"(missing {error})."
            ) from None
        return model

    def save(self, path):
        """Save to an HDF5 file (written to a temporary file, then renamed)."""
        from .io import save

        save(self, path)


def _logsumexp(a, axis):
    """Max-shifted log-sum-exp along ``axis``."""
    peak = np.max(a, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    out = np.log(np.sum(np.exp(a - peak), axis=axis)) + np.squeeze(peak, axis=axis)
    return out


def _softmax(logits):
    """Row-wise max-shifted softmax of a 2-D array."""
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    weights = np.exp(shifted)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights


def _sample_categorical(logits, rng):
    """Draw one index per row of unnormalised log-probabilities by inverse CDF."""
    cdf = np.cumsum(_softmax(logits), axis=1)
    u = rng.random(logits.shape[0]) * cdf[:, -1]
    index = (cdf < u[:, None]).sum(axis=1)
    return np.minimum(index, logits.shape[1] - 1)
