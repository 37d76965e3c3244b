"""Conditional whitening of input/output pairs.

RIDE whitens the causal neighbourhoods ``x`` and, given them, the pixels
``y`` before modelling them.  The transform is affine, so the density of the
raw pixels is the density of the whitened ones plus a constant log-Jacobian.
"""

import numbers

import numpy as np

from ._validation import NotFittedError, check_pair

__all__ = ["WhiteningPreconditioner"]


class WhiteningPreconditioner:
    """Affine map that whitens ``x`` and then ``y`` given ``x``.

    With means ``m_x, m_y`` and the biased covariance ``C`` of ``[x, y]``::

        x' = W_x (x - m_x)                       W_x = C_xx^(-1/2)
        y' = W_y (y - m_y - P x')                P = C_yx W_x,
                                                 W_y = (C_yy - P P^T)^(-1/2)

    so that ``[x', y']`` has identity covariance on the fitting data.

    Parameters
    ----------
    eigenvalue_floor : float or None, default=None
        Handling of (near-)singular covariances, which occur with constant
        pixels or duplicate inputs.  ``None`` raises a ``ValueError`` when an
        eigenvalue of ``C_xx`` or of the residual covariance is at most
        ``1e-12`` times the largest one.  A positive value instead raises every
        eigenvalue to at least ``eigenvalue_floor`` times the largest one.

    Attributes
    ----------
    mean_in_ : ndarray of shape (dim_in,)
    mean_out_ : ndarray of shape (dim_out,)
    whiten_in_ : ndarray of shape (dim_in, dim_in)
        ``W_x``; ``unwhiten_in_`` is its inverse.
    whiten_out_ : ndarray of shape (dim_out, dim_out)
        ``W_y``; ``unwhiten_out_`` is its inverse.
    predictor_ : ndarray of shape (dim_out, dim_in)
        ``P``.
    log_jacobian_ : float
        ``log |det W_y|`` in nats: ``log p(y|x) = log p'(y'|x') + log_jacobian_``.

    Notes
    -----
    Rows are data points, as everywhere in ``ride``.  See
    Theis & Bethge (2015), section 3.
    """

    _STATE = (
        "mean_in_",
        "mean_out_",
        "whiten_in_",
        "unwhiten_in_",
        "whiten_out_",
        "unwhiten_out_",
        "predictor_",
    )

    def __init__(self, eigenvalue_floor=None):
        self.eigenvalue_floor = eigenvalue_floor

    def __repr__(self):
        return f"WhiteningPreconditioner(eigenvalue_floor={self.eigenvalue_floor})"

    def fit(self, X, Y):
        """Estimate the whitening from inputs ``X (N, n)`` and outputs ``Y (N, D)``.

        Returns
        -------
        self
        """
        X, Y = check_pair(X, Y)
        if X.shape[0] < 2:
            raise ValueError(
                f"Fitting a whitening needs at least 2 samples, got {X.shape[0]}."
            )
        if X.shape[1] == 0 or Y.shape[1] == 0:
            raise ValueError(
                f"X and Y need at least one column each, got shapes {X.shape} and "
                f"{Y.shape}."
            )
        floor = self.eigenvalue_floor
        if floor is not None and not (
            isinstance(floor, numbers.Real) and 0 < floor < 1
        ):
            raise ValueError(
                f"eigenvalue_floor must be None or a float in (0, 1), got {floor!r}."
            )
        N = X.shape[0]
        mean_in = X.mean(axis=0)
        mean_out = Y.mean(axis=0)
        Xc = X - mean_in
        Yc = Y - mean_out
        cov_xx = Xc.T @ Xc / N
        cov_yx = Yc.T @ Xc / N
        cov_yy = Yc.T @ Yc / N

        whiten_in, unwhiten_in = _inverse_sqrt(cov_xx, floor, "input")
        predictor = cov_yx @ whiten_in
        residual = cov_yy - predictor @ predictor.T
        # Judged against the output variance: with one output the residual has a
        # single eigenvalue, which is "singular" only relative to cov_yy.
        whiten_out, unwhiten_out = _inverse_sqrt(
            residual, floor, "residual output", scale=np.max(np.diag(cov_yy))
        )

        self.mean_in_ = mean_in
        self.mean_out_ = mean_out
        self.whiten_in_ = whiten_in
        self.unwhiten_in_ = unwhiten_in
        self.whiten_out_ = whiten_out
        self.unwhiten_out_ = unwhiten_out
        self.predictor_ = predictor
        self._set_log_jacobian()
        return self

    def _set_log_jacobian(self):
        self.log_jacobian_ = float(np.linalg.slogdet(self.whiten_out_)[1])

    @property
    def dim_in(self):
        self._check_fitted()
        return self.mean_in_.shape[0]

    @property
    def dim_out(self):
        self._check_fitted()
        return self.mean_out_.shape[0]

    def _check_fitted(self):
        if not hasattr(self, "mean_in_"):
            raise NotFittedError(
                "This WhiteningPreconditioner is not fitted yet; call fit(X, Y) first."
            )

    def _check(self, X, Y, names=("X", "Y")):
        self._check_fitted()
        checked = check_pair(X, Y, self.dim_in, self.dim_out, names)
        return (checked, None) if Y is None else checked

    def transform(self, X, Y=None):
        """Whiten: return ``X'`` (and ``Y'`` if ``Y`` is given), same shapes."""
        X, Y = self._check(X, Y)
        Xw = (X - self.mean_in_) @ self.whiten_in_.T
        if Y is None:
            return Xw
        Yw = (Y - self.mean_out_ - Xw @ self.predictor_.T) @ self.whiten_out_.T
        return Xw, Yw

    def inverse_transform(self, X, Y=None):
        """Undo :meth:`transform`: map ``X'`` (and ``Y'``) back to raw space."""
        X, Y = self._check(X, Y, names=("X'", "Y'"))
        Xr = X @ self.unwhiten_in_.T + self.mean_in_
        if Y is None:
            return Xr
        Yr = Y @ self.unwhiten_out_.T + X @ self.predictor_.T + self.mean_out_
        return Xr, Yr

    def logjacobian(self, X=None):
        """Log-Jacobian ``log |det dy'/dy|`` in nats.

        Returns the scalar when ``X`` is None, otherwise an array of shape
        ``(n_samples,)`` filled with it (it does not depend on the data).
        """
        self._check_fitted()
        if X is None:
            return self.log_jacobian_
        X, _ = self._check(X, None)
        return np.full(X.shape[0], self.log_jacobian_)

    def adjust_gradient(self, grad_X, grad_Y):
        """Map gradients with respect to ``(X', Y')`` to gradients w.r.t. ``(X, Y)``.

        For a scalar ``f(X', Y')``, returns ``(df/dX, df/dY)`` of the composed
        function ``f(transform(X, Y))``; shapes as the inputs.
        """
        grad_X, grad_Y = self._check(grad_X, grad_Y, names=("grad_X", "grad_Y"))
        gY = grad_Y @ self.whiten_out_
        gX = (grad_X - gY @ self.predictor_) @ self.whiten_in_
        return gX, gY

    # ------------------------------------------------------------ persistence

    def _to_hdf5(self, group):
        self._check_fitted()
        group.attrs["class"] = "WhiteningPreconditioner"
        if self.eigenvalue_floor is not None:
            group.attrs["eigenvalue_floor"] = self.eigenvalue_floor
        for name in self._STATE:
            group.create_dataset(name, data=getattr(self, name))

    @classmethod
    def _from_hdf5(cls, group):
        floor = group.attrs.get("eigenvalue_floor")
        pre = cls(None if floor is None else float(floor))
        try:
            for name in cls._STATE:
                setattr(pre, name, np.asarray(group[name][()], dtype=np.float64))
        except KeyError as error:
            raise ValueError(
                f"HDF5 group {group.name!r} is not a complete whitening ({error})."
            ) from None
        n, D = pre.mean_in_.shape[0], pre.mean_out_.shape[0]
        shapes = {"whiten_in_": (n, n), "unwhiten_in_": (n, n), "whiten_out_": (D, D),
                  "unwhiten_out_": (D, D), "predictor_": (D, n)}
        for name, shape in shapes.items():
            value = getattr(pre, name)
            if value.shape != shape or not np.all(np.isfinite(value)):
                raise ValueError(
                    f"HDF5 group {group.name!r}: {name} has shape {value.shape} or "
                    f"non-finite values; expected finite values of shape {shape}."
                )
        pre._set_log_jacobian()
        return pre


def _inverse_sqrt(cov, floor, what, scale=None):
    """Symmetric ``cov^(-1/2)`` and ``cov^(1/2)`` from an eigendecomposition.

    Eigenvalues are judged singular relative to ``scale`` (default: the largest
    eigenvalue of ``cov``).
    """
    if not np.all(np.isfinite(cov)):
        raise ValueError(
            f"The {what} covariance is not finite: the data are too large "
            "(rescale them)."
        )
    eigval, eigvec = np.linalg.eigh(cov)
    largest = eigval[-1] if scale is None else max(scale, eigval[-1])
    if not np.isfinite(largest) or largest <= 0:
        raise ValueError(
            f"The {what} covariance is zero (largest eigenvalue {largest:g}); the "
            "data are constant or too small to represent (rescale them)."
        )
    if floor is None:
        if eigval[0] <= 1e-12 * largest:
            raise ValueError(
                f"The {what} covariance is singular (eigenvalues from {eigval[0]:.3g} "
                f"to {eigval[-1]:.3g}, relative to a scale of {largest:.3g}), e.g. "
                "because of a constant pixel, duplicate inputs or outputs that are "
                "an exact function of the inputs. Remove the degenerate dimensions "
                "or pass eigenvalue_floor=1e-8 to clamp small eigenvalues."
            )
    else:
        eigval = np.maximum(eigval, floor * largest)
    root = np.sqrt(eigval)
    return (eigvec / root) @ eigvec.T, (eigvec * root) @ eigvec.T
