"""Tests for ride.datasets."""

import hashlib

import h5py
import numpy as np
import pytest
from scipy import stats
from scipy.integrate import quad

from ride import datasets
from ride.datasets import (
    available_images,
    bits_per_pixel,
    bits_per_pixel_8bit,
    bsds300_from_patches,
    bsds300_standin,
    bsds300_to_patches,
    dead_leaves,
    dequantize,
    extract_patches,
    load_bsds300,
    load_image,
    load_images,
    preprocess,
)

# Shapes and SHA-256 of the uint8 array bytes, as recorded in
# ride/data/PROVENANCE.md.  They guard the data file against silent changes.
EXPECTED_IMAGES = {
    "camera": ((512, 512),
               "5cb24482a53416f99052258be2b1ee38cd31c559a70c8a8b321cba231b332e21"),
    "astronaut": ((512, 512),
                  "0ac4179227f3abd7c40ed92625301a9e13f958e1275cf849cfa7bf033be80fab"),
    "chelsea": ((300, 451),
                "cd822d0a5b86379f987b3120f75a6e7c7be64e292b25a23bd858af5c9db1fed6"),
    "coffee": ((400, 600),
               "f87dcd6ab9044c7064750bff39285d404f75342f7edb430ca9eea41f6152d66b"),
    "brick": ((512, 512),
              "664a145c5253f0d66db1a12776785f0ea35a44cc7447ffc933f6d6118dc58643"),
    "grass": ((512, 512),
              "b18dae4c68bf850a7a7b28a29d1846c76be890665117b57fd125fe29c4d4ede6"),
    "gravel": ((512, 512),
               "3d51ad45f789cd8b98534b7af6bce774e499ead45421135afd757358c7230009"),
    "ascent": ((512, 512),
               "c7777d46c3f4e3119ddbec92ad28c09193202a7a4aab08622bc7e4b4a3ba88e6"),
}


# ---------------------------------------------------------------------------
# Embedded images


def test_available_images():
    assert available_images() == list(EXPECTED_IMAGES)
    assert "moon" not in available_images()


def test_embedded_images_shapes_and_checksums():
    images = load_images()
    assert list(images) == list(EXPECTED_IMAGES)
    for name, (shape, sha256) in EXPECTED_IMAGES.items():
        image = images[name]
        assert image.dtype == np.uint8, name
        assert image.shape == shape, name
        assert hashlib.sha256(image.tobytes()).hexdigest() == sha256, name
        # Real photographs use most of the 8-bit range.
        assert image.max() - image.min() > 100, name


def test_provenance_lists_every_checksum():
    from importlib.resources import files

    text = files("ride").joinpath("data", "PROVENANCE.md").read_text("utf-8")
    for name, (shape, sha256) in EXPECTED_IMAGES.items():
        assert f"| {name} |" in text and sha256 in text, name


def test_load_images_returns_fresh_writable_copies():
    first = load_image("camera")
    first[:] = 0
    second = load_image("camera")
    assert second.any() and second.flags.writeable


def test_load_images_selection_and_order():
    images = load_images(["gravel", "camera"])
    assert list(images) == ["gravel", "camera"]
    assert list(load_images("brick")) == ["brick"]


def test_load_images_unknown_name():
    with pytest.raises(ValueError, match=r"unknown image name\(s\) \['moon'\].*camera"):
        load_images(["camera", "moon"])
    with pytest.raises(ValueError, match="available images"):
        load_image("lena")


# ---------------------------------------------------------------------------
# Dead leaves


def test_dead_leaves_shape_range_and_coverage():
    images = dead_leaves(3, (24, 31), random_state=0)
    assert images.shape == (3, 24, 31) and images.dtype == np.float64
    # Uncovered pixels would be NaN: every pixel must belong to a disc.
    assert np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() < 1.0
    # Occlusion makes flat regions: far fewer grey levels than pixels.
    assert len(np.unique(images[0])) < images[0].size / 2


def test_dead_leaves_reproducible_and_seed_dependent():
    a = dead_leaves(2, 32, random_state=7)
    b = dead_leaves(2, 32, random_state=7)
    c = dead_leaves(2, 32, random_state=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])
    np.testing.assert_array_equal(
        dead_leaves(1, 16, random_state=np.random.default_rng(3)),
        dead_leaves(1, 16, random_state=3),
    )


def test_dead_leaves_grey_levels_uniform():
    # Pixel values are not independent, but the distinct disc values are
    # independent uniform draws.
    levels = np.unique(dead_leaves(4, 64, random_state=1))
    assert len(levels) > 200
    assert stats.kstest(levels, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("exponent", [3.0, 1.0, 2.5])
def test_radius_distribution_follows_power_law(exponent):
    rng = np.random.default_rng(0)
    r_min, r_max = 1.5, 40.0
    radii = datasets._sample_radii(rng, 20000, r_min, r_max, exponent)
    assert radii.min() >= r_min and radii.max() <= r_max
    cdf = lambda r: datasets._radius_cdf(r, r_min, r_max, exponent)  # noqa: E731
    assert stats.kstest(radii, cdf).pvalue > 1e-3
    # The CDF is that of a density proportional to r**-exponent.
    r = np.linspace(2.0, 30.0, 5)
    mass = [quad(lambda t: t**-exponent, r_min, x)[0] for x in np.append(r, r_max)]
    np.testing.assert_allclose(cdf(r), np.array(mass[:-1]) / mass[-1], rtol=1e-9)


def test_radius_distribution_exponent_three_closed_form():
    r_min, r_max = 1.0, 10.0
    expected = (1.0 - 4.0**-2) / (1.0 - 10.0**-2)
    assert np.isclose(datasets._radius_cdf(4.0, r_min, r_max, 3.0), expected)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(n_images=1, size=0), ValueError),
        (dict(n_images=1, size=8, r_min=0.0), ValueError),
        (dict(n_images=1, size=8, r_min=5.0, r_max=2.0), ValueError),
        (dict(n_images=1, size=8, exponent=-1.0), ValueError),
        (dict(n_images=1.5, size=8), TypeError),
        (dict(n_images=1, size="8"), TypeError),
    ],
)
def test_dead_leaves_bad_arguments(kwargs, error):
    with pytest.raises(error):
        dead_leaves(**kwargs)


# ---------------------------------------------------------------------------
# Patches, dequantisation, scaling


def test_extract_patches_grid_matches_slices():
    image = np.arange(10 * 12).reshape(10, 12)
    patches = extract_patches(image, (4, 5), stride=3)
    # Corners: rows 0, 3, 6; columns 0, 3, 6.
    assert patches.shape == (9, 4, 5) and patches.dtype == image.dtype
    np.testing.assert_array_equal(patches[4], image[3:7, 3:8])
    tiles = extract_patches(image, 4)
    assert tiles.shape == (2 * 3, 4, 4)
    np.testing.assert_array_equal(tiles[-1], image[4:8, 8:12])


def test_extract_patches_random_is_reproducible_and_valid():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 30)), rng.integers(0, 256, (9, 9))]
    before = [image.copy() for image in images]
    a = extract_patches(images, 8, num_patches=500, random_state=3)
    b = extract_patches(images, 8, num_patches=500, random_state=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (500, 8, 8)
    for image, old in zip(images, before):
        np.testing.assert_array_equal(image, old)
    # Every patch is a window of one of the images.
    windows = [np.lib.stride_tricks.sliding_window_view(im, (8, 8)).reshape(-1, 64)
               for im in images]
    known = {w.tobytes() for ws in windows for w in ws}
    assert all(p.tobytes() in known for p in a.reshape(500, 64))
    # Windows are equally likely: the small image has 4 of 13 * 23 + 4 windows.
    small = {w.tobytes() for w in windows[1]}
    share = np.mean([p.tobytes() in small for p in a.reshape(500, 64)])
    assert share < 0.05


def test_extract_patches_colour_and_batch():
    batch = np.random.default_rng(1).random((3, 10, 10, 3))
    patches = extract_patches(batch, 5, stride=5)
    assert patches.shape == (3 * 4, 5, 5, 3)
    np.testing.assert_array_equal(patches[5], batch[1, 0:5, 5:10])


def test_extract_patches_errors():
    image = np.zeros((6, 6))
    with pytest.raises(ValueError, match="not both"):
        extract_patches(image, 3, num_patches=2, stride=1)
    with pytest.raises(ValueError, match=r"smaller than the patch size \(8, 8\)"):
        extract_patches(image, 8)
    with pytest.raises(ValueError, match="positive"):
        extract_patches(image, 0)


def test_dequantize():
    image = load_image("camera")
    before = image.copy()
    noisy = dequantize(image, random_state=0)
    np.testing.assert_array_equal(image, before)
    assert noisy.dtype == np.float64 and noisy.shape == image.shape
    assert np.all(noisy >= image) and np.all(noisy < image.astype(np.float64) + 1)
    np.testing.assert_array_equal(noisy, dequantize(image, random_state=0))
    assert not np.array_equal(noisy, dequantize(image, random_state=1))
    # The noise is uniform on [0, 1).
    noise = (noisy - image).ravel()[:5000]
    assert stats.kstest(noise, "uniform").pvalue > 1e-3
    with pytest.raises(TypeError, match="integer"):
        dequantize(image.astype(np.float64))


def test_preprocess_scale_and_log():
    x = np.array([[1.5, 128.25], [255.9, 0.5]])
    before = x.copy()
    y, log_derivative = preprocess(x, scale=1 / 256, return_log_derivative=True)
    np.testing.assert_allclose(y, x / 256)
    np.testing.assert_allclose(log_derivative, np.log(1 / 256))
    z, log_derivative = preprocess(x, scale=1 / 256, log=True,
                                   return_log_derivative=True)
    np.testing.assert_allclose(z, np.log(x / 256))
    # Compare with a finite difference of the transform.
    eps = 1e-6
    numeric = np.log((preprocess(x + eps, log=True) - preprocess(x - eps, log=True))
                     / (2 * eps))
    np.testing.assert_allclose(log_derivative, numeric, rtol=1e-6)
    np.testing.assert_array_equal(x, before)
    with pytest.raises(ValueError, match="positive"):
        preprocess(np.array([0.0, 1.0]), log=True)
    with pytest.raises(ValueError, match="scale"):
        preprocess(x, scale=-1.0)


# ---------------------------------------------------------------------------
# Units


@pytest.mark.parametrize("scale", [1 / 256, 1 / 255, 1.0, 0.01])
def test_uniform_density_is_eight_bits(scale):
    # A uniform density on [0, 256) per pixel, written for the scaled data
    # y = scale * x, is uniform on [0, 256 * scale): log p(y) = -log(256 scale).
    num_pixels = 1000
    loglik = -num_pixels * np.log(256 * scale)
    assert np.isclose(bits_per_pixel_8bit(loglik, num_pixels, scale), 8.0,
                      rtol=0, atol=1e-12)


def test_bits_per_pixel_hand_computation():
    # A standard normal at y = 0 per pixel: log p = -0.5 log(2 pi) nats.
    loglik = -0.5 * np.log(2 * np.pi) * 10
    expected = 0.5 * np.log2(2 * np.pi) + 8.0
    assert np.isclose(bits_per_pixel_8bit(loglik, 10, 1 / 256), expected)
    assert np.isclose(bits_per_pixel(-np.log(2) * 6, 3), 2.0)
    np.testing.assert_allclose(bits_per_pixel(np.array([0.0, -np.log(4)]), 1),
                               [0.0, 2.0])
    with pytest.raises(ValueError, match="scale"):
        bits_per_pixel_8bit(0.0, 1, 0.0)


# ---------------------------------------------------------------------------
# BSDS300


def _write_bsds300(path, shapes):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as handle:
        for name, shape in shapes.items():
            handle.create_dataset(name, data=rng.standard_normal(shape))


def test_load_bsds300_round_trip(tmp_path):
    path = tmp_path / "BSDS300.hdf5"
    rng = np.random.default_rng(1)
    arrays = {name: rng.standard_normal((n, 63)).astype(np.float32)
              for name, n in [("train", 50), ("validation", 7), ("test", 11)]}
    with h5py.File(path, "w") as handle:
        for name, array in arrays.items():
            handle.create_dataset(name, data=array)
    data = load_bsds300(path)
    assert list(data) == ["train", "validation", "test"]
    for name, array in arrays.items():
        assert data[name].dtype == np.float32
        np.testing.assert_array_equal(data[name], array)


def test_load_bsds300_missing_dataset(tmp_path):
    path = tmp_path / "partial.hdf5"
    _write_bsds300(path, {"train": (5, 63), "valid": (2, 63), "test": (3, 63)})
    with pytest.raises(ValueError, match=r"\['validation'\].*found \['test', "
                                         r"'train', 'valid'\]"):
        load_bsds300(path)


@pytest.mark.parametrize("bad_shape", [(5, 64), (63, 5), (5,)])
def test_load_bsds300_wrong_width(tmp_path, bad_shape):
    path = tmp_path / "wide.hdf5"
    _write_bsds300(path, {"train": bad_shape, "validation": (2, 63),
                          "test": (3, 63)})
    with pytest.raises(ValueError, match=r"'train'.*expected \(n, 63\)"):
        load_bsds300(path)


def test_load_bsds300_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no BSDS300 file"):
        load_bsds300(tmp_path / "nothing.hdf5")


def test_bsds300_patch_conversion_round_trip():
    rng = np.random.default_rng(2)
    patches = rng.random((20, 8, 8))
    x63 = bsds300_from_patches(patches)
    assert x63.shape == (20, 63)
    rebuilt = bsds300_to_patches(x63)
    assert rebuilt.shape == (20, 8, 8)
    np.testing.assert_allclose(rebuilt.sum(axis=(1, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        rebuilt, patches - patches.mean(axis=(1, 2), keepdims=True), atol=1e-12
    )
    np.testing.assert_array_equal(rebuilt.reshape(20, 64)[:, :63], x63)
    with pytest.raises(ValueError, match=r"\(n, 63\)"):
        bsds300_to_patches(np.zeros((3, 64)))


def test_bsds300_standin_layout_and_reproducibility():
    a = bsds300_standin(num_train=300, num_validation=40, num_test=50)
    b = bsds300_standin(num_train=300, num_validation=40, num_test=50)
    assert {k: v.shape for k, v in a.items()} == {
        "train": (300, 63), "validation": (40, 63), "test": (50, 63)
    }
    for name in a:
        assert a[name].dtype == np.float64
        np.testing.assert_array_equal(a[name], b[name])
    c = bsds300_standin(num_train=300, num_validation=40, num_test=50,
                        random_state=1)
    assert not np.array_equal(a["train"], c["train"])
    patches = bsds300_to_patches(a["train"])
    # Mean-free patches of [0, 1) intensities.
    np.testing.assert_allclose(patches.sum(axis=(1, 2)), 0.0, atol=1e-12)
    assert np.abs(patches).max() < 1.0
    assert patches.std() > 0.01
