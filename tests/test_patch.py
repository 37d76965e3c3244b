"""Tests of PatchRIDE and the BSDS300 protocol."""

import math

import numpy as np
import pytest

from ride.datasets import bsds300_from_patches, bsds300_to_patches, dead_leaves
from ride.patch import PatchRIDE


def small_patch_model(**kwargs):
    params = dict(num_hiddens=5, num_components=2, num_scales=2, num_features=3,
                  nb_size=3, batch_size=10, finetune_iter=5, random_state=0)
    params.update(kwargs)
    return PatchRIDE(**params)


def assert_matches_finite_differences(model, x, grad, indices, eps=1e-6):
    """Central differences of the total log-likelihood at the given pixels."""
    for idx in indices:
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric = (model.loglikelihood(up).sum() - model.loglikelihood(down).sum()) / (
            2 * eps)
        assert grad[idx] == pytest.approx(numeric, rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def bsds_model():
    patches = bsds300_to_patches(
        bsds300_from_patches(dead_leaves(40, 8, random_state=0) * 2)
    )
    return small_patch_model(bsds300=True).fit(patches), patches


def test_every_patch_pixel_is_scored():
    patches = dead_leaves(20, 6, random_state=1)
    model = small_patch_model().fit(patches)
    padded, _, _ = model._pad(patches)
    per_site = super(PatchRIDE, model).loglikelihood(padded)
    assert per_site.shape == (20, 6, 6)
    np.testing.assert_allclose(model.loglikelihood(patches), per_site.sum(axis=(1, 2)))
    assert model.evaluate(patches) == pytest.approx(
        -per_site.mean() / math.log(2), rel=1e-12)


def test_bsds300_ignores_the_bottom_right_pixel_everywhere(bsds_model):
    model, patches = bsds_model
    changed = patches.copy()
    changed[:, 7, 7] += 5.0
    # the left-out pixel influences nothing: it is last in raster order
    np.testing.assert_array_equal(model.loglikelihood(changed),
                                  model.loglikelihood(patches))
    padded, _, _ = model._pad(patches)
    per_site = super(PatchRIDE, model).loglikelihood(padded)
    expected = per_site.reshape(len(patches), -1)[:, :63].sum(axis=1)
    np.testing.assert_allclose(model.loglikelihood(patches), expected, rtol=1e-12)
    assert model.evaluate_nats_per_patch(patches) == pytest.approx(-expected.mean())
    assert model.evaluate(patches) == pytest.approx(
        -expected.mean() / 63 / math.log(2), rel=1e-12)
    # training never sees the left-out site
    keep = model._scored_sites((2, 8, 8))
    assert keep.sum() == 2 * 63 and not keep[63] and not keep[127]


def test_bsds300_samples_sum_to_zero(bsds_model):
    model, _ = bsds_model
    samples = model.sample_patches(4, random_state=1)
    assert samples.shape == (4, 8, 8)
    np.testing.assert_allclose(samples.reshape(4, -1).sum(axis=1), 0, atol=1e-12)


def test_patch_gradient_matches_finite_differences():
    patches = dead_leaves(10, 4, random_state=2)
    model = small_patch_model().fit(patches)
    x = patches[:2].copy()
    grad = model.gradient(x)
    assert grad.shape == x.shape
    assert_matches_finite_differences(model, x, grad, [(0, 0, 0), (1, 2, 3), (0, 3, 3)])


def test_bad_patches():
    model = small_patch_model(bsds300=True)
    with pytest.raises(ValueError, match="8x8"):
        model.fit(np.zeros((3, 6, 6)))
    with pytest.raises(TypeError, match="float"):
        model.fit(np.zeros((3, 8, 8), dtype=np.int32))


def test_patch_model_save_load_round_trip(bsds_model, tmp_path):
    import ride

    model, patches = bsds_model
    model.save(tmp_path / "patch.h5")
    loaded = ride.load(tmp_path / "patch.h5")
    assert isinstance(loaded, PatchRIDE) and loaded.bsds300
    np.testing.assert_array_equal(loaded.loglikelihood(patches),
                                  model.loglikelihood(patches))


def test_bsds300_gradient_ignores_the_left_out_pixel(bsds_model):
    model, patches = bsds_model
    x = patches[:1].copy()
    grad = model.gradient(x)
    assert grad[0, 7, 7] == 0.0
    assert_matches_finite_differences(model, x, grad, [(0, 7, 6), (0, 3, 3), (0, 6, 7)])


def test_sample_images_draws_patches(bsds_model):
    model, _ = bsds_model
    samples = model.sample_images(3, 8, 8, random_state=2)
    assert samples.shape == (3, 8, 8) and np.all(np.isfinite(samples))
    np.testing.assert_array_equal(samples, model.sample_patches(3, random_state=2))
    with pytest.raises(ValueError, match="8x8"):
        model.sample_images(1, 6, 6)
