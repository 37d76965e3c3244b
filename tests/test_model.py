"""Tests of the RIDE estimator."""

import math
import pickle

import numpy as np
import pytest

import ride
from ride import RIDE
from ride.datasets import dead_leaves
from ride.mcgsm import MCGSM, PARAMETER_GROUPS


def small_model(**kwargs):
    params = dict(num_hiddens=6, num_components=3, num_scales=2, num_features=4,
                  nb_size=3, num_epochs=1, batch_size=8, finetune_iter=5,
                  random_state=0)
    params.update(kwargs)
    return RIDE(**params)


@pytest.fixture(scope="module")
def grey_model():
    images = dead_leaves(24, 9, random_state=1)
    return small_model().fit(images), images


@pytest.fixture(scope="module")
def colour_model():
    rng = np.random.default_rng(2)
    base = dead_leaves(16, 8, random_state=2)
    images = np.stack([base, 0.5 * base + 0.1 * rng.random(base.shape),
                       rng.random(base.shape)], axis=-1)
    return small_model(nb_size=3).fit(images), images


def perturbed(model, seed=0, scale=0.3):
    """Copy of a fitted model with random non-trivial parameters everywhere."""
    model = pickle.loads(pickle.dumps(model))
    rng = np.random.default_rng(seed)
    for layer in model.layers_:
        layer.weights = layer.weights + scale * rng.standard_normal(layer.weights.shape)
        layer.biases = scale * rng.standard_normal(layer.biases.shape)
    m = model.mcgsm_
    m.weights = rng.standard_normal(m.weights.shape)
    m.features = rng.standard_normal(m.features.shape) * 0.5
    m.means = rng.standard_normal(m.means.shape) * 0.1
    m.priors = rng.standard_normal(m.priors.shape)
    return model


# --------------------------------------------------------------- basics


def test_fit_returns_self_and_scores_the_documented_pixels(grey_model):
    model, images = grey_model
    ll = model.loglikelihood(images)
    assert ll.shape == (24, 8, 7)  # nb_size 3: 1 top row, 1 left, 1 right column
    rows, cols = model.scored_region
    assert images[:, rows, cols].shape == ll.shape
    assert np.all(np.isfinite(ll))
    assert model.n_channels_ == 1


def test_evaluate_score_and_score_samples_units(grey_model, colour_model):
    for model, images in (grey_model, colour_model):
        ll = model.loglikelihood(images)
        C = model.n_channels_
        assert model.evaluate(images) == pytest.approx(-ll.mean() / math.log(2) / C,
                                                       rel=1e-12)
        assert model.score(images) == pytest.approx(-model.evaluate(images))
        np.testing.assert_allclose(model.score_samples(images), ll.sum(axis=(1, 2)))


def test_loglikelihood_matches_an_independent_pipeline(colour_model):
    """Recompute the log-likelihood from the parts: extract, whiten, LSTM, MCGSM."""
    model, images = colour_model
    model = perturbed(model)
    from ride.neighborhoods import extract

    x, y = extract(images, model.input_mask_, model.output_mask_)
    pre = model.preconditioner_
    xw, yw = pre.transform(x.reshape(-1, x.shape[-1]), y.reshape(-1, 3))
    hidden = model.layers_[0].forward(xw.reshape(x.shape))
    expected = model.mcgsm_.loglikelihood(hidden.reshape(-1, 6), yw)
    expected += np.linalg.slogdet(pre.whiten_out_)[1]
    np.testing.assert_allclose(model.loglikelihood(images).ravel(), expected,
                               rtol=1e-12)


def test_get_set_params_and_repr():
    model = RIDE(num_hiddens=8, verbose=1)
    params = model.get_params()
    assert params["num_hiddens"] == 8 and params["nb_size"] == 5
    assert model.set_params(num_layers=2) is model and model.num_layers == 2
    assert repr(model) == "RIDE(num_hiddens=8, num_layers=2, verbose=1)"
    with pytest.raises(ValueError, match="Invalid parameter 'hidden'"):
        model.set_params(hidden=3)


def test_unfitted_model_raises_clear_errors():
    model = RIDE()
    images = np.zeros((1, 8, 8))
    for call in (lambda: model.loglikelihood(images), lambda: model.evaluate(images),
                 lambda: model.sample(images), lambda: model.gradient(images),
                 lambda: model.hidden_states(images), lambda: model.score(images),
                 lambda: model.sample_images(1, 4, 4), lambda: model.save("x.h5")):
        with pytest.raises(ride.NotFittedError, match="not fitted"):
            call()


# ------------------------------------------------------------- causality


def test_causality(grey_model):
    model, images = grey_model
    model = perturbed(model, seed=3)
    image = images[:1].copy()
    rows, cols = model.scored_region
    base = model.loglikelihood(image)[0]
    H, W = image.shape[1:]
    pixel = (4, 3)
    changed = image.copy()
    changed[0, pixel[0], pixel[1]] += 0.5
    diff = np.abs(model.loglikelihood(changed)[0] - base) > 0
    # map grid sites back to image pixels and compare with raster order
    i_off, j_off = rows.start, cols.start
    for i in range(diff.shape[0]):
        for j in range(diff.shape[1]):
            p = (i + i_off, j + j_off)
            if p[0] * W + p[1] < pixel[0] * W + pixel[1]:
                assert not diff[i, j], f"pixel {p} depends on a later pixel"
    assert diff[pixel[0] - i_off, pixel[1] - j_off]  # its own density
    assert diff[pixel[0] - i_off + 1:, :].any()  # and later ones


# -------------------------------------------------------------- gradient


@pytest.mark.parametrize("which", ["grey", "colour"])
def test_gradient_matches_finite_differences(which, grey_model, colour_model):
    model, images = grey_model if which == "grey" else colour_model
    model = perturbed(model, seed=4)
    image = images[:2, :6, :7].copy()
    grad = model.gradient(image)
    assert grad.shape == image.shape
    eps = 1e-6
    numeric = np.zeros_like(image)
    for idx in np.ndindex(image.shape):
        old = image[idx]
        image[idx] = old + eps
        fp = model.score_samples(image).sum()
        image[idx] = old - eps
        fm = model.score_samples(image).sum()
        image[idx] = old
        numeric[idx] = (fp - fm) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)
    assert np.abs(numeric).max() > 1e-2


def test_hidden_states_shapes(grey_model):
    model, images = grey_model
    assert model.hidden_states(images[:2]).shape == (2, 8, 7, 6)
    with pytest.raises(ValueError, match="layer must be between 1 and 1"):
        model.hidden_states(images[:2], layer=2)


# --------------------------------------------------------------- sampling


def test_sampling_loglikelihood_agrees_with_loglikelihood(colour_model):
    model, images = colour_model
    samples, loglik = model.sample(images[:3], random_state=5, return_loglik=True)
    np.testing.assert_allclose(loglik, model.loglikelihood(samples), rtol=1e-10,
                               atol=1e-10)
    assert np.all(np.isfinite(samples))


def test_masked_sampling_and_bounds(grey_model):
    model, images = grey_model
    source = images[:4].copy()
    mask = np.zeros(source.shape[1:], dtype=bool)
    mask[3:6, 2:5] = True
    samples, loglik = model.sample(source, mask=mask, min_values=0.2, max_values=0.7,
                                   random_state=6, return_loglik=True)
    np.testing.assert_array_equal(samples[:, ~mask], source[:, ~mask])
    np.testing.assert_array_equal(source, images[:4])  # input untouched
    assert samples[:, mask].min() >= 0.2 and samples[:, mask].max() <= 0.7
    drawn = ~np.isnan(loglik)
    assert drawn.sum() == 4 * mask.sum()
    np.testing.assert_allclose(loglik[drawn], model.loglikelihood(samples)[drawn],
                               rtol=1e-10, atol=1e-10)


def test_sampling_is_reproducible(grey_model):
    model, images = grey_model
    a = model.sample(images[:2], random_state=7)
    b = model.sample(images[:2], random_state=7)
    np.testing.assert_array_equal(a, b)
    new = model.sample_images(2, 5, 6, random_state=8)
    assert new.shape == (2, 5, 6) and np.all(np.isfinite(new))


def test_inpaint_changes_only_the_hole_and_raises_likelihood(grey_model):
    model, images = grey_model
    source = images[:2].copy()
    mask = np.zeros(source.shape[1:], dtype=bool)
    mask[3:6, 3:6] = True
    filled = model.inpaint(source, mask, num_iter=5, min_values=0, max_values=1,
                           random_state=9)
    np.testing.assert_array_equal(filled[:, ~mask], source[:, ~mask])
    assert filled[:, mask].min() >= 0 and filled[:, mask].max() <= 1
    assert np.all(np.isfinite(filled))
    noise = source.copy()
    noise[:, mask] = np.random.default_rng(0).random((2, mask.sum()))
    assert np.all(model.score_samples(filled) > model.score_samples(noise))


# --------------------------------------------------------------- training


def test_training_lowers_the_loss():
    images = dead_leaves(40, 10, random_state=10)
    model = small_model(num_epochs=3, finetune_iter=0, learning_rate=0.3,
                        batch_size=10)
    model.fit(images)
    history = model.loss_history_
    assert len(history) == 12
    assert np.mean(history[-4:]) < np.mean(history[:4])
    # fine-tuning after an epoch helps too
    model.set_params(warm_start=True, finetune_iter=30, num_epochs=1)
    before = model.evaluate(images)
    model.fit(images)
    assert model.evaluate(images) < before
    assert model.n_epochs_ == 4


def test_adam_lowers_the_loss():
    images = dead_leaves(40, 10, random_state=11)
    model = small_model(method="adam", num_epochs=3, finetune_iter=0,
                        learning_rate=0.01, batch_size=10)
    model.fit(images)
    assert np.mean(model.loss_history_[-4:]) < np.mean(model.loss_history_[:4])


def test_warm_start_add_layer_trains_only_the_top():
    images = dead_leaves(16, 9, random_state=12)
    model = small_model(finetune_iter=0).fit(images)
    bottom = model.layers_[0].weights.copy()
    model.add_layer()
    assert len(model.layers_) == 2 and model.num_layers == 2
    top = model.layers_[1].weights.copy()
    model.set_params(warm_start=True, train_top_layer=True).fit(images)
    np.testing.assert_array_equal(model.layers_[0].weights, bottom)
    assert not np.array_equal(model.layers_[1].weights, top)
    with pytest.raises(ValueError, match="cannot change num_hiddens"):
        model.set_params(num_hiddens=7).fit(images)


def test_same_random_state_same_model():
    images = dead_leaves(10, 8, random_state=13)
    a = small_model(random_state=3).fit(images)
    b = small_model(random_state=3).fit(images)
    np.testing.assert_array_equal(a.loglikelihood(images), b.loglikelihood(images))


def test_nan_loss_keeps_last_good_parameters():
    images = dead_leaves(16, 8, random_state=14)
    model = small_model(finetune_iter=0, learning_rate=1e12, momentum=0.0,
                        batch_size=4)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        model.fit(images)
    for layer in model.layers_:
        assert np.all(np.isfinite(layer.weights))
    for name in PARAMETER_GROUPS:
        assert np.all(np.isfinite(model.mcgsm_._params[name]))
    # the restored parameters are the last ones that gave a finite loss
    assert np.isfinite(model.evaluate(images))


def test_lstm_beats_mcgsm_on_structured_images():
    """On held-out pixels, RIDE beats an MCGSM on the same neighbourhood."""
    from ride.neighborhoods import extract
    from ride.preconditioner import WhiteningPreconditioner

    rng = np.random.default_rng(15)
    # Long-range structure: smooth random waves, invisible in a 3x3 neighbourhood
    def waves(n):
        y, x = np.mgrid[:12, :12]
        freq = rng.uniform(0.3, 0.6, size=(n, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
        return np.sin(freq * x + phase) * np.cos(0.2 * y) + 0.05 * rng.standard_normal(
            (n, 12, 12))

    train, test = waves(300), waves(60)
    model = small_model(num_hiddens=12, num_epochs=4, finetune_iter=100,
                        learning_rate=0.3, batch_size=20)
    model.fit(train)

    inputs, outputs = extract(train[..., None], model.input_mask_, model.output_mask_)
    x, y = inputs.reshape(-1, inputs.shape[-1]), outputs.reshape(-1, 1)
    pre = WhiteningPreconditioner().fit(x, y)
    mcgsm = MCGSM(x.shape[1], 1, 3, 2, 4, random_state=0)
    mcgsm.fit(*pre.transform(x, y), max_iter=300)
    test_in, test_out = extract(test[..., None], model.input_mask_, model.output_mask_)
    baseline = mcgsm.evaluate(test_in.reshape(-1, x.shape[1]),
                              test_out.reshape(-1, 1), pre)
    assert model.evaluate(test) < baseline


# ------------------------------------------------------------ persistence


def test_save_load_and_pickle_round_trips(colour_model, tmp_path):
    model, images = colour_model
    expected = model.loglikelihood(images)
    path = tmp_path / "ride.h5"
    model.save(path)
    loaded = ride.load(path)
    assert isinstance(loaded, RIDE)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.loglikelihood(images), expected)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.loglikelihood(images), expected)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="truncated|corrupt|incomplete"):
        ride.load(truncated)


# -------------------------------------------------------------- bad input


def test_bad_input_raises_and_leaves_the_model_unchanged(grey_model, colour_model):
    model, images = grey_model
    state = pickle.dumps(model)
    cases = [
        (np.zeros((2, 1, 2)), ValueError, r"\(2, 1, 2, 1\).*smaller than the masks of shape \(2, 3\)"),
        (np.full((2, 6, 6), np.nan), ValueError, "NaN"),
        (np.zeros((6, 6)), ValueError, r"n_images, height, width"),
        (np.zeros((1, 6, 6, 2)), ValueError, "2 channel"),
        ([np.zeros((6, 6)), np.zeros((7, 6))], ValueError, "same shape"),
        (np.zeros((2, 6, 6), dtype=np.uint8), TypeError, "astype"),
    ]
    for bad, error, match in cases:
        for call in (model.loglikelihood, model.sample, model.gradient):
            with pytest.raises(error, match=match):
                call(bad)
    with pytest.raises(ValueError, match="2 channel"):
        model.set_params(warm_start=True).fit(np.zeros((1, 6, 6, 2)))
    model.set_params(warm_start=False)
    with pytest.raises(ValueError, match="mask must have shape"):
        model.sample(images[:1], mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        model.sample(images[:1], mask=np.ones(images.shape[1:]))
    with pytest.raises(ValueError, match="never predicts"):
        model.sample(images[:1], mask=np.ones(images.shape[1:], dtype=bool))
    with pytest.raises(ValueError, match="nonlinearity"):
        small_model(nonlinearity="sigmoid").fit(images)
    with pytest.raises(ValueError, match="odd"):
        small_model(nb_size=4).fit(images)
    assert pickle.dumps(model) == state


def test_constant_images_give_a_clear_error():
    with pytest.raises(ValueError, match="Cannot whiten.*constant"):
        small_model().fit(np.ones((4, 6, 6)))


def test_hyperparameter_types_and_inpaint_arguments_are_checked(grey_model):
    model, images = grey_model
    images = images[:1]
    for bad in (dict(precondition="no"), dict(extended="yes"), dict(verbose="loud"),
                dict(random_state="seed")):
        with pytest.raises(TypeError):
            small_model(**bad).fit(images)
    state = pickle.dumps(model)
    mask = np.zeros(images.shape[1:], dtype=bool)
    mask[3:5, 3:5] = True
    for kwargs, match in ((dict(min_values=1, max_values=0), "exceed"),
                          (dict(num_iter=-1), "num_iter"),
                          (dict(num_candidates=0), "num_candidates"),
                          (dict(step_size=np.nan), "step_size")):
        with pytest.raises(ValueError, match=match):
            model.inpaint(images, mask, **kwargs)
    with pytest.raises(ValueError, match="layer"):
        model.hidden_states(images, layer=True)
    assert pickle.dumps(model) == state


def test_verbose_output(capsys):
    images = dead_leaves(8, 8, random_state=16)
    small_model(verbose=0).fit(images)
    assert capsys.readouterr().out == ""
    small_model(verbose=1).fit(images)
    out = capsys.readouterr().out
    assert "[RIDE] epoch 1: loss" in out and "bit/pixel/channel" in out
    assert "[RIDE] fine-tuning MCGSM" in out
