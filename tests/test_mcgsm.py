"""Tests of ride.MCGSM against independent computations."""

import math
import pickle
import warnings

import numba
import numpy as np
import pytest
from scipy import integrate, stats

from ride import io
from ride._validation import ConvergenceWarning
from ride.mcgsm import MCGSM, PARAMETER_GROUPS


def random_model(dim_in=5, dim_out=1, K=3, S=2, F=4, seed=0):
    """A model with every parameter group away from its default value."""
    rng = np.random.default_rng(seed)
    model = MCGSM(dim_in, dim_out, K, S, F, random_state=seed)
    model.priors = rng.standard_normal((K, S))
    model.scales = rng.standard_normal((K, S)) * 0.5
    model.weights = rng.standard_normal((K, F))
    model.features = rng.standard_normal((dim_in, F)) * 0.5
    chol = np.tril(rng.standard_normal((K, dim_out, dim_out))) * 0.3
    chol += np.eye(dim_out) * rng.choice([-1.5, 1.5], size=(K, 1, dim_out))
    model.cholesky_factors = chol
    model.predictors = rng.standard_normal((K, dim_out, dim_in)) * 0.5
    model.linear_features = rng.standard_normal((K, dim_in)) * 0.3
    model.means = rng.standard_normal((K, dim_out))
    return model


def naive_loglikelihood(model, x, y):
    """Slow float64 twin: the density written out for one sample."""
    K, S, D = model.num_components, model.num_scales, model.dim_out
    gate = np.empty((K, S))
    joint = np.empty((K, S))
    for c in range(K):
        g = sum(
            model.weights[c, f] ** 2 * (model.features[:, f] @ x) ** 2
            for f in range(model.num_features)
        ) - 2 * model.linear_features[c] @ x
        L = model.cholesky_factors[c]
        r = y - model.predictors[c] @ x - model.means[c]
        for s in range(S):
            lam = math.exp(model.scales[c, s])
            precision = lam * L @ L.T
            log_normal = (
                0.5 * np.linalg.slogdet(precision)[1]
                - 0.5 * D * math.log(2 * math.pi)
                - 0.5 * r @ precision @ r
            )
            gate[c, s] = model.priors[c, s] - 0.5 * lam * g
            joint[c, s] = gate[c, s] + log_normal
    lse = lambda a: a.max() + math.log(np.exp(a - a.max()).sum())  # noqa: E731
    return lse(joint.ravel()) - lse(gate.ravel())


def mixture_cdf(model, x, y):
    """CDF of p(y | x) for dim_out = 1 at scalar y, from the mixture weights."""
    gate = model._gate_log_weights(x[None])[0]
    weights = np.exp(gate - gate.max())
    weights /= weights.sum()
    total = 0.0
    for c in range(model.num_components):
        mean = model.predictors[c, 0] @ x + model.means[c, 0]
        for s in range(model.num_scales):
            std = 1.0 / (abs(model.cholesky_factors[c, 0, 0]) * math.exp(
                0.5 * model.scales[c, s]
            ))
            total += weights[c, s] * stats.norm.cdf(y, mean, std)
    return total


# --------------------------------------------------------------- density


@pytest.mark.parametrize("dim_out", [1, 3])
def test_loglikelihood_matches_naive_twin(dim_out):
    model = random_model(dim_out=dim_out)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 5))
    Y = rng.standard_normal((30, dim_out))
    expected = [naive_loglikelihood(model, x, y) for x, y in zip(X, Y)]
    np.testing.assert_allclose(model.loglikelihood(X, Y), expected, rtol=1e-12,
                               atol=1e-12)


def test_density_integrates_to_one_1d():
    model = random_model(dim_out=1)
    rng = np.random.default_rng(2)
    for x in rng.standard_normal((3, 5)):
        density = lambda y: math.exp(  # noqa: E731
            model.loglikelihood(x[None], np.array([[y]]))[0]
        )
        total, err = integrate.quad(density, -np.inf, np.inf, limit=200)
        assert abs(total - 1.0) < 1e-7


def test_density_integrates_to_one_2d_importance_sampling():
    model = random_model(dim_out=2, seed=3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(5)
    # Proposal: a broad Gaussian around the component means.
    centre = np.mean([model.predictors[c] @ x + model.means[c] for c in range(3)], 0)
    scale = 6.0
    n = 400_000
    y = centre + scale * rng.standard_normal((n, 2))
    log_q = stats.multivariate_normal(centre, scale**2 * np.eye(2)).logpdf(y)
    log_p = model.loglikelihood(np.tile(x, (n, 1)), y)
    ratio = np.exp(log_p - log_q)
    estimate = ratio.mean()
    stderr = ratio.std() / math.sqrt(n)
    assert abs(estimate - 1.0) < max(5 * stderr, 1e-3)
    assert stderr < 0.01


def test_labelled_loglikelihood_marginalises_for_dim_out_3():
    # sum_c p(c|x) p(y|x,c) = p(y|x); catches the L r vs L^T r bug of the original
    model = random_model(dim_out=3, seed=4)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20, 5))
    Y = rng.standard_normal((20, 3))
    prior = model.prior(X)
    per_label = np.stack(
        [model.loglikelihood(X, Y, labels=np.full(20, c)) for c in range(3)], axis=1
    )
    mixed = np.log(np.sum(prior * np.exp(per_label), axis=1))
    np.testing.assert_allclose(mixed, model.loglikelihood(X, Y), rtol=1e-10)


def test_posterior_is_bayes_rule():
    model = random_model(dim_out=2, seed=5)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((10, 5))
    Y = rng.standard_normal((10, 2))
    prior = model.prior(X)
    likelihood = np.exp(
        np.stack([model.loglikelihood(X, Y, labels=np.full(10, c)) for c in range(3)],
                 axis=1)
    )
    expected = prior * likelihood / np.sum(prior * likelihood, axis=1, keepdims=True)
    np.testing.assert_allclose(model.posterior(X, Y), expected, rtol=1e-10)
    np.testing.assert_allclose(model.prior(X).sum(1), 1.0)


def test_evaluate_units():
    model = random_model(dim_out=3)
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((50, 5)), rng.standard_normal((50, 3))
    expected = -np.mean(model.loglikelihood(X, Y)) / math.log(2) / 3
    assert model.evaluate(X, Y) == pytest.approx(expected, rel=1e-14)


def test_thread_count_and_chunking_do_not_change_results(monkeypatch):
    model = random_model(dim_in=6, dim_out=2, K=4, S=3, F=5)
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((3000, 6)), rng.standard_normal((3000, 2))
    reference = model._forward_backward(X, Y)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = model._forward_backward(X, Y)
    finally:
        numba.set_num_threads(before)
    monkeypatch.setattr("ride.mcgsm.CHUNK_SIZE", 700)
    chunked = model._forward_backward(X, Y)
    for other in (single, chunked):
        np.testing.assert_array_equal(other[0], reference[0])
        np.testing.assert_array_equal(other[2], reference[2])
        for name in PARAMETER_GROUPS:
            np.testing.assert_allclose(other[1][name], reference[1][name],
                                       rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------- gradients


def numerical_gradient(f, array, eps=1e-6, lower_only=False):
    grad = np.zeros_like(array)
    for idx in np.ndindex(array.shape):
        if lower_only and idx[-2] < idx[-1]:
            continue
        old = array[idx]
        array[idx] = old + eps
        fp = f()
        array[idx] = old - eps
        fm = f()
        array[idx] = old
        grad[idx] = (fp - fm) / (2 * eps)
    return grad


@pytest.mark.parametrize("dim_out", [1, 3])
def test_parameter_gradients_match_finite_differences(dim_out):
    model = random_model(dim_out=dim_out, seed=10 + dim_out)
    rng = np.random.default_rng(11)
    X, Y = rng.standard_normal((40, 5)), rng.standard_normal((40, dim_out))
    grads = model.parameter_gradient(X, Y)
    for name in PARAMETER_GROUPS:
        param = model._params[name]
        numeric = numerical_gradient(
            lambda: np.mean(model.loglikelihood(X, Y)),
            param,
            lower_only=(name == "cholesky_factors"),
        )
        np.testing.assert_allclose(
            grads[name], numeric, atol=1e-7, rtol=1e-6, err_msg=name
        )
        assert np.abs(numeric).max() > 1e-3, f"{name}: gradient test is vacuous"


@pytest.mark.parametrize("dim_out", [1, 3])
def test_data_gradients_match_finite_differences(dim_out):
    model = random_model(dim_out=dim_out, seed=20 + dim_out)
    rng = np.random.default_rng(12)
    X, Y = rng.standard_normal((15, 5)), rng.standard_normal((15, dim_out))
    grad_X, grad_Y, loglik = model.data_gradient(X, Y)
    np.testing.assert_allclose(loglik, model.loglikelihood(X, Y), rtol=1e-14)
    total = lambda: model.loglikelihood(X, Y).sum()  # noqa: E731
    np.testing.assert_allclose(grad_X, numerical_gradient(total, X), atol=1e-7)
    np.testing.assert_allclose(grad_Y, numerical_gradient(total, Y), atol=1e-7)


def test_pack_unpack_round_trip():
    model = random_model(dim_out=3)
    for groups in ([], ["priors"], ["cholesky_factors"], list(PARAMETER_GROUPS)):
        index = model._trainable_index(groups)
        before = model.get_parameters()
        vector = model._pack(model._params, index)
        model._unpack(vector + 1.0, index)
        model._unpack(vector, index)
        for name in PARAMETER_GROUPS:
            np.testing.assert_array_equal(model._params[name], before[name])
    # L[0, 0] is never a free parameter; the upper triangle never is either
    index = model._trainable_index(["cholesky_factors"])
    assert index["cholesky_factors"].size == 3 * (3 * 4 // 2 - 1)
    model._unpack(np.zeros(index["cholesky_factors"].size), index)
    np.testing.assert_array_equal(model.cholesky_factors[:, 0, 0],
                                  random_model(dim_out=3).cholesky_factors[:, 0, 0])


# --------------------------------------------------------------- sampling


def test_samples_follow_the_density_ks():
    model = random_model(dim_out=1, seed=30)
    x = np.random.default_rng(30).standard_normal(5)
    samples = model.sample(np.tile(x, (4000, 1)), random_state=1)[:, 0]
    result = stats.kstest(samples, lambda y: np.array([mixture_cdf(model, x, v)
                                                      for v in np.atleast_1d(y)]))
    assert result.pvalue > 1e-3


def test_samples_given_labels_have_component_moments():
    model = random_model(dim_out=2, seed=31)
    x = np.random.default_rng(31).standard_normal(5)
    n = 20000
    samples = model.sample(np.tile(x, (n, 1)), labels=np.full(n, 1), random_state=2)
    mean = model.predictors[1] @ x + model.means[1]
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.05)


def test_sample_is_finite_for_extreme_priors_and_scales():
    model = random_model(dim_out=2, seed=32)
    rng = np.random.default_rng(32)
    model.priors = rng.choice([-50.0, 50.0], size=model.priors.shape)
    model.scales = rng.choice([-50.0, 50.0], size=model.scales.shape)
    X = rng.standard_normal((500, 5)) * 10
    samples = model.sample(X, random_state=0)
    assert np.all(np.isfinite(samples))
    # every row's draw uses a pair that the max-shifted softmax can pick
    assert np.all(np.isfinite(model.prior(X)))


def test_sample_reproducible_from_random_state():
    model = random_model()
    X = np.random.default_rng(0).standard_normal((10, 5))
    np.testing.assert_array_equal(model.sample(X, random_state=3),
                                  model.sample(X, random_state=3))
    a = MCGSM(4, 2, random_state=7)
    b = MCGSM(4, 2, random_state=7)
    for name in PARAMETER_GROUPS:
        np.testing.assert_array_equal(a._params[name], b._params[name])


# --------------------------------------------------------------- training


def test_fit_recovers_a_known_model():
    truth = random_model(dim_in=4, dim_out=1, K=2, S=2, F=3, seed=40)
    truth.linear_features = np.zeros((2, 4))
    truth.means = np.zeros((2, 1))
    truth.cholesky_factors = np.abs(truth.cholesky_factors)
    rng = np.random.default_rng(40)
    X = rng.standard_normal((12000, 4))
    Y = truth.sample(X, random_state=41)
    X_test = rng.standard_normal((20000, 4))
    Y_test = truth.sample(X_test, random_state=42)
    model = MCGSM(4, 1, 2, 2, 3, random_state=0).initialize(X, Y)
    model.fit(X, Y, max_iter=400)
    gap = model.evaluate(X_test, Y_test) - truth.evaluate(X_test, Y_test)
    assert gap < 0.02, f"held-out gap {gap:.4f} bit/dim"
    assert model.objective_history_[-1] < model.objective_history_[0]


def test_max_iter_zero_changes_nothing():
    model = random_model()
    before = model.get_parameters()
    rng = np.random.default_rng(50)
    X, Y = rng.standard_normal((100, 5)), rng.standard_normal((100, 1))
    model.fit(X, Y, X[:20], Y[:20], max_iter=0)
    for name in PARAMETER_GROUPS:
        np.testing.assert_array_equal(model._params[name], before[name])
    assert model.n_iter_ == 0


def test_early_stopping_keeps_best_validation_parameters():
    # few samples and many parameters: the validation score gets worse
    rng = np.random.default_rng(51)
    X, Y = rng.standard_normal((60, 6)), rng.standard_normal((60, 1))
    Xv, Yv = rng.standard_normal((500, 6)), rng.standard_normal((500, 1))
    model = MCGSM(6, 1, 4, 3, random_state=1)
    start = model.evaluate(Xv, Yv)
    model.fit(X, Y, Xv, Yv, max_iter=300, val_iter=2, val_look_ahead=5,
              train_means=True, train_linear_features=True)
    scores = [v for _, v in model.validation_history_]
    assert scores[0] == pytest.approx(start)
    final = model.evaluate(Xv, Yv)
    assert final == pytest.approx(min(scores), rel=1e-12)
    assert final <= start
    assert model.converged_


def test_max_iter_warns_and_records_history():
    rng = np.random.default_rng(52)
    X, Y = rng.standard_normal((200, 3)), rng.standard_normal((200, 1))
    model = MCGSM(3, 1, 2, 2, random_state=0)
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        model.fit(X, Y, max_iter=3)
    assert model.n_iter_ == 3
    assert not model.converged_
    assert len(model.objective_history_) == 4


def test_fit_only_trains_selected_groups():
    rng = np.random.default_rng(53)
    X, Y = rng.standard_normal((200, 3)), rng.standard_normal((200, 1))
    model = MCGSM(3, 1, 2, 2, random_state=0)
    before = model.get_parameters()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, Y, max_iter=5, train_priors=False, train_features=False)
    after = model.get_parameters()
    np.testing.assert_array_equal(after["priors"], before["priors"])
    np.testing.assert_array_equal(after["features"], before["features"])
    np.testing.assert_array_equal(after["means"], before["means"])
    assert not np.array_equal(after["scales"], before["scales"])


def test_nan_objective_restores_last_good_parameters():
    rng = np.random.default_rng(54)
    X, Y = rng.standard_normal((100, 3)), rng.standard_normal((100, 1))
    model = MCGSM(3, 1, 2, 2, random_state=0)
    before = model.get_parameters()
    calls = {"n": 0}
    original = model._forward_backward

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = original(*args, **kwargs)
        if calls["n"] > 1:
            out[0][:] = np.nan
        return out

    model._forward_backward = poisoned
    with pytest.warns(RuntimeWarning, match="restored"):
        model.fit(X, Y, max_iter=10)
    del model._forward_backward
    assert not model.converged_
    for name, value in before.items():
        np.testing.assert_array_equal(model._params[name], value)


# ------------------------------------------------------------ persistence


def test_pickle_and_hdf5_round_trips(tmp_path):
    model = random_model(dim_out=2)
    rng = np.random.default_rng(60)
    X, Y = rng.standard_normal((20, 5)), rng.standard_normal((20, 2))
    expected = model.loglikelihood(X, Y)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.loglikelihood(X, Y), expected)
    path = tmp_path / "model.h5"
    model.save(path)
    loaded = io.load(path)
    assert isinstance(loaded, MCGSM)
    np.testing.assert_array_equal(loaded.loglikelihood(X, Y), expected)
    assert not list(tmp_path.glob("*.tmp"))


def test_load_rejects_foreign_and_truncated_files(tmp_path):
    import h5py

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not a saved ride model"):
        io.load(foreign)
    good = tmp_path / "good.h5"
    random_model().save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated|corrupt|incomplete"):
        io.load(truncated)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        io.load(text)


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.h5"
    model = random_model()
    model.save(path)
    original = path.read_bytes()

    def explode(group):
        group.create_dataset("partial", data=np.zeros(3))
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "_to_hdf5", explode)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"]


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "X, Y, error, match",
    [
        (np.zeros((5, 4)), np.zeros((5, 1)), ValueError, "5 columns"),
        (np.zeros((5, 5)), np.zeros((4, 1)), ValueError, "same number of rows"),
        (np.zeros((5, 5)), np.zeros((5, 2)), ValueError, "1 columns"),
        (np.zeros(5), np.zeros((1, 1)), ValueError, "2-D"),
        (np.zeros((1, 5, 1)), np.zeros((1, 1)), ValueError, "2-D"),
        (np.zeros((5, 5), dtype=int), np.zeros((5, 1)), TypeError, "integer"),
        (np.zeros((5, 5), dtype=complex), np.zeros((5, 1)), TypeError, "complex"),
        (np.full((5, 5), np.nan), np.zeros((5, 1)), ValueError, "NaN"),
        (np.zeros((5, 5)), np.full((5, 1), np.inf), ValueError, "infinite"),
    ],
)
def test_bad_input_raises(X, Y, error, match):
    model = MCGSM(5, 1, 2, 2)
    for method in (model.loglikelihood, model.evaluate, model.fit,
                   model.parameter_gradient, model.data_gradient):
        with pytest.raises(error, match=match):
            method(X, Y)


def test_bad_validation_set_and_parameters():
    model = MCGSM(5, 1, 2, 2)
    X, Y = np.zeros((5, 5)), np.zeros((5, 1))
    with pytest.raises(ValueError, match="X_valid must have 5 columns"):
        model.fit(X, Y, np.zeros((5, 4)), Y)
    with pytest.raises(ValueError, match="both"):
        model.fit(X, Y, X_valid=X)
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        model.priors = np.zeros((3, 2))
    with pytest.raises(ValueError, match="lower triangular"):
        MCGSM(2, 2, 1, 1).cholesky_factors = np.ones((1, 2, 2))
    with pytest.raises(ValueError, match="dim_in must be at least 1"):
        MCGSM(0)
    with pytest.raises(ValueError, match="labels must lie"):
        model.loglikelihood(X, Y, labels=np.full(5, 2))


def test_caller_arrays_are_not_modified():
    model = random_model()
    rng = np.random.default_rng(70)
    X, Y = rng.standard_normal((30, 5)), rng.standard_normal((30, 1))
    X0, Y0 = X.copy(), Y.copy()
    model.loglikelihood(X, Y)
    model.data_gradient(X, Y)
    model.sample(X)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)
    new_priors = np.zeros((3, 2))
    model.priors = new_priors
    model.priors[0, 0] = 5.0
    assert new_priors[0, 0] == 0.0


# ------------------------------------------------- regressions (adversarial)


def test_overflowing_residual_gives_minus_infinity_not_a_clamped_value():
    model = MCGSM(3, 1, 2, 2, random_state=0)
    X = np.random.default_rng(0).standard_normal((3, 3))
    Y = np.array([[1e150], [1e155], [1e160]])
    loglik = model.loglikelihood(X, Y)
    assert loglik[0] < -1e290
    assert np.all(np.isneginf(loglik[1:]))


def test_fit_rejects_bad_options_and_nonfinite_start():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((50, 3)), rng.standard_normal((50, 1))
    model = MCGSM(3, 1, 2, 2, random_state=0)
    with pytest.raises(ValueError, match="num_grad"):
        model.fit(X, Y, num_grad=0)
    model.scales = np.full((2, 2), 800.0)
    before = model.get_parameters()
    with pytest.raises(ValueError, match="starting parameters"):
        model.fit(X, Y)
    for name, value in before.items():
        np.testing.assert_array_equal(model._params[name], value)


def test_set_parameters_is_all_or_nothing():
    model = MCGSM(3, 1, 2, 2, random_state=0)
    before = model.get_parameters()
    with pytest.raises(ValueError, match="scales must be a 2-D array"):
        model.set_parameters({"priors": np.ones((2, 2)), "scales": np.zeros((3,))})
    np.testing.assert_array_equal(model.priors, before["priors"])


def test_saved_files_follow_the_umask_and_symlinks(tmp_path):
    import os

    model = MCGSM(3)
    target = tmp_path / "model.h5"
    model.save(target)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink()
    with pytest.raises(TypeError, match="save expects"):
        io.save(42, tmp_path / "x.h5")
