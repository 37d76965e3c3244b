"""Tests of ride.WhiteningPreconditioner."""

import pickle

import numpy as np
import pytest

from ride import io
from ride._validation import NotFittedError
from ride.preconditioner import WhiteningPreconditioner


def correlated_data(n=2000, dim_in=4, dim_out=2, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim_in + dim_out, dim_in + dim_out))
    data = rng.standard_normal((n, dim_in + dim_out)) @ mixing + 3.0
    return data[:, :dim_in], data[:, dim_in:]


def test_whitened_data_have_identity_covariance():
    X, Y = correlated_data()
    Xw, Yw = WhiteningPreconditioner().fit(X, Y).transform(X, Y)
    joint = np.hstack([Xw, Yw])
    np.testing.assert_allclose(joint.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(joint.T @ joint / len(joint), np.eye(6), atol=1e-8)


def test_inverse_round_trips():
    X, Y = correlated_data()
    pre = WhiteningPreconditioner().fit(X, Y)
    Xr, Yr = pre.inverse_transform(*pre.transform(X, Y))
    np.testing.assert_allclose(Xr, X, atol=1e-10)
    np.testing.assert_allclose(Yr, Y, atol=1e-10)
    np.testing.assert_allclose(pre.inverse_transform(pre.transform(X)), X, atol=1e-10)


def test_log_jacobian_matches_slogdet_and_finite_differences():
    X, Y = correlated_data(dim_out=3)
    pre = WhiteningPreconditioner().fit(X, Y)
    assert pre.logjacobian() == pytest.approx(np.linalg.slogdet(pre.whiten_out_)[1])
    # Jacobian of y -> y' at a point, by central differences
    x, y = X[:1], Y[:1]
    eps = 1e-6
    jac = np.empty((3, 3))
    for d in range(3):
        step = np.zeros((1, 3))
        step[0, d] = eps
        jac[:, d] = (pre.transform(x, y + step)[1] - pre.transform(x, y - step)[1])[0]
    jac /= 2 * eps
    assert pre.logjacobian() == pytest.approx(np.linalg.slogdet(jac)[1], abs=1e-7)
    np.testing.assert_array_equal(pre.logjacobian(X[:5]), np.full(5, pre.log_jacobian_))


def test_adjusted_gradient_matches_finite_differences():
    X, Y = correlated_data(n=500)
    pre = WhiteningPreconditioner().fit(X, Y)
    rng = np.random.default_rng(1)
    x, y = X[:3].copy(), Y[:3].copy()
    A = rng.standard_normal(x.shape)
    B = rng.standard_normal(y.shape)

    def f(x, y):  # a nonlinear scalar function of the whitened data
        xw, yw = pre.transform(x, y)
        return np.sum(A * np.sin(xw)) + np.sum(B * yw**2)

    xw, yw = pre.transform(x, y)
    gx, gy = pre.adjust_gradient(A * np.cos(xw), 2 * B * yw)
    eps = 1e-6
    for arr, grad in ((x, gx), (y, gy)):
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            fp = f(x, y)
            arr[idx] = old - eps
            fm = f(x, y)
            arr[idx] = old
            numeric[idx] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


def test_singular_covariance_raises_or_is_floored():
    X, Y = correlated_data()
    X[:, 2] = 1.0  # a constant pixel
    with pytest.raises(ValueError, match="singular.*eigenvalue_floor"):
        WhiteningPreconditioner().fit(X, Y)
    X[:, 2] = X[:, 1]  # duplicate input
    with pytest.raises(ValueError, match="singular"):
        WhiteningPreconditioner().fit(X, Y)
    pre = WhiteningPreconditioner(eigenvalue_floor=1e-8).fit(X, Y)
    Xw, Yw = pre.transform(X, Y)
    assert np.all(np.isfinite(Xw)) and np.all(np.isfinite(Yw))
    assert np.isfinite(pre.logjacobian())
    with pytest.raises(ValueError, match="constant"):
        WhiteningPreconditioner().fit(np.ones((10, 2)), np.ones((10, 1)))


def test_round_trips_through_pickle_and_hdf5(tmp_path):
    X, Y = correlated_data()
    pre = WhiteningPreconditioner().fit(X, Y)
    for clone in (pickle.loads(pickle.dumps(pre)), None):
        if clone is None:
            io.save(pre, tmp_path / "pre.h5")
            clone = io.load(tmp_path / "pre.h5")
        for a, b in zip(clone.transform(X, Y), pre.transform(X, Y)):
            np.testing.assert_array_equal(a, b)
        assert clone.logjacobian() == pre.logjacobian()


def test_bad_input():
    X, Y = correlated_data(n=50)
    with pytest.raises(NotFittedError, match="fit"):
        WhiteningPreconditioner().transform(X)
    pre = WhiteningPreconditioner().fit(X, Y)
    with pytest.raises(ValueError, match="4 columns"):
        pre.transform(Y)
    with pytest.raises(ValueError, match="same number of rows"):
        pre.transform(X, Y[:3])
    with pytest.raises(TypeError, match="integer"):
        pre.transform(X.astype(int))
    with pytest.raises(ValueError, match="NaN"):
        WhiteningPreconditioner().fit(np.where(X > 1, np.nan, X), Y)
    X0 = X.copy()
    pre.transform(X, Y)
    np.testing.assert_array_equal(X, X0)


def test_outputs_that_are_a_function_of_the_inputs_are_singular_for_one_output():
    X = np.random.default_rng(0).standard_normal((300, 4))
    with pytest.raises(ValueError, match="residual output covariance is singular"):
        WhiteningPreconditioner().fit(X, X[:, :1])
