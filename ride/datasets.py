"""Data for examples, tests and benchmarks.

* Embedded photographs: a few 8-bit greyscale images shipped inside the package
  (``ride/data/images.npz``; sources and licences in ``ride/data/PROVENANCE.md``).
* Dead leaves: a synthetic, scale-invariant image model with occluding discs.
* Patch extraction, dequantisation and intensity scaling.
* The BSDS300 patch benchmark: a loader for the standard HDF5 file and a
  stand-in with the same layout built from the embedded images.
* Unit conversion from continuous log-likelihoods to bits per pixel.

Units: log-likelihoods are natural logarithms (nats).  ``bits_per_pixel_8bit``
gives bits per scalar pixel value (per pixel and channel) of 8-bit data on the
0-255 scale; ``bits_per_pixel`` gives bits per value in the space where the
density was evaluated.
"""

import functools
import importlib.resources
import math
import numbers
import os

import h5py
import numpy as np

from ride._numba import jit

__all__ = [
    "available_images",
    "load_images",
    "load_image",
    "dead_leaves",
    "extract_patches",
    "dequantize",
    "preprocess",
    "bits_per_pixel",
    "bits_per_pixel_8bit",
    "load_bsds300",
    "bsds300_to_patches",
    "bsds300_from_patches",
    "bsds300_standin",
    "BSDS300_SPLITS",
    "STANDIN_IMAGE_SPLIT",
]

BSDS300_SPLITS = ("train", "validation", "test")
"""Names of the datasets in a BSDS300 HDF5 file, each of shape (n, 63)."""

STANDIN_IMAGE_SPLIT = {
    "train": ("camera", "astronaut", "chelsea", "coffee", "brick", "grass"),
    "validation": ("gravel",),
    "test": ("ascent",),
}
"""Which embedded images feed each split of :func:`bsds300_standin`."""

_IMAGES_FILE = "images.npz"


def _rng(random_state):
    """A :class:`numpy.random.Generator` from None, an int, a seed or a generator."""
    return np.random.default_rng(random_state)


def _pair(value, name):
    """Return ``(a, b)`` of positive ints from an int or a pair of ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be an int or a pair of ints, got {value!r}"
        ) from None
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must hold positive integers, got {value!r}")
    return int(a), int(b)


# ---------------------------------------------------------------------------
# Embedded images


@functools.lru_cache(maxsize=1)
def _embedded_images():
    """Read the embedded images once; callers must copy before handing out."""
    resource = importlib.resources.files("ride").joinpath("data", _IMAGES_FILE)
    with resource.open("rb") as handle, np.load(handle) as archive:
        images = {name: archive[name] for name in archive.files}
    for image in images.values():
        image.setflags(write=False)
    return images


def available_images():
    """Names of the embedded images.

    Returns
    -------
    names : list of str
        In the order in which they are stored.
    """
    return list(_embedded_images())


def load_images(names=None):
    """Load embedded 8-bit greyscale photographs.

    Parameters
    ----------
    names : str or sequence of str, optional
        Which images to load; all of them by default (see
        :func:`available_images`).

    Returns
    -------
    images : dict of str to ndarray of shape (H, W), dtype uint8
        A fresh copy on every call, in the order requested.  Values are 8-bit
        intensities 0-255.  See ``ride/data/PROVENANCE.md`` for the source,
        licence, shape and checksum of each image.

    Raises
    ------
    ValueError
        If a name is not one of the embedded images.
    """
    stored = _embedded_images()
    if names is None:
        names = list(stored)
    elif isinstance(names, str):
        names = [names]
    unknown = [name for name in names if name not in stored]
    if unknown:
        raise ValueError(
            f"unknown image name(s) {unknown}; available images are "
            f"{sorted(stored)}"
        )
    return {name: stored[name].copy() for name in names}


def load_image(name):
    """Load one embedded image.

    Parameters
    ----------
    name : str
        One of :func:`available_images`.

    Returns
    -------
    image : ndarray of shape (H, W), dtype uint8
        A fresh copy.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    return load_images([name])[name]


# ---------------------------------------------------------------------------
# Dead leaves


def _sample_radii(rng, size, r_min, r_max, exponent):
    """Draw radii with density proportional to ``r**-exponent`` on [r_min, r_max].

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        Number of radii.
    r_min, r_max : float
        Support, ``0 < r_min < r_max``.
    exponent : float
        Power-law exponent; 3 gives the classic scale-invariant dead leaves.

    Returns
    -------
    radii : ndarray of shape (size,), dtype float64

    Notes
    -----
    Inverse-CDF sampling.  For ``exponent != 1`` the CDF is
    ``(r_min**e - r**e) / (r_min**e - r_max**e)`` with ``e = 1 - exponent``
    (both numerator and denominator change sign together); for
    ``exponent == 1`` it is ``log(r / r_min) / log(r_max / r_min)``.
    """
    u = rng.random(size)
    if exponent == 1.0:
        return r_min * (r_max / r_min) ** u
    e = 1.0 - exponent
    low, high = r_min**e, r_max**e
    return (low + u * (high - low)) ** (1.0 / e)


def _radius_cdf(r, r_min, r_max, exponent):
    """CDF of :func:`_sample_radii`, for tests and documentation."""
    r = np.clip(r, r_min, r_max)
    if exponent == 1.0:
        return np.log(r / r_min) / np.log(r_max / r_min)
    e = 1.0 - exponent
    return (r**e - r_min**e) / (r_max**e - r_min**e)


@jit
def _paint_discs(canvas, covered, centre_rows, centre_cols, radii, values, remaining):
    """Paint discs behind everything painted so far (front-to-back order).

    Parameters
    ----------
    canvas : ndarray of shape (h, w), float64
        Modified in place: uncovered pixels inside a disc take its value.
    covered : ndarray of shape (h, w), bool
        Modified in place: which pixels already show a disc.
    centre_rows, centre_cols, radii, values : ndarray of shape (n,), float64
        Discs in order from front to back.
    remaining : int
        Number of uncovered pixels before this call.

    Returns
    -------
    remaining : int
        Number of uncovered pixels after this call.  Painting stops as soon as
        it reaches zero, since every later disc would be hidden.
    """
    height, width = canvas.shape
    for k in range(radii.shape[0]):
        if remaining == 0:
            break
        cy, cx, r = centre_rows[k], centre_cols[k], radii[k]
        top = max(0, int(math.ceil(cy - r)))
        bottom = min(height - 1, int(math.floor(cy + r)))
        left = max(0, int(math.ceil(cx - r)))
        right = min(width - 1, int(math.floor(cx + r)))
        r2 = r * r
        for y in range(top, bottom + 1):
            dy2 = (y - cy) * (y - cy)
            for x in range(left, right + 1):
                if not covered[y, x] and dy2 + (x - cx) * (x - cx) <= r2:
                    covered[y, x] = True
                    canvas[y, x] = values[k]
                    remaining -= 1
    return remaining


def dead_leaves(
    n_images,
    size,
    r_min=1.0,
    r_max=None,
    exponent=3.0,
    random_state=None,
):
    """Sample images from the dead leaves model.

    Opaque discs fall on the image plane one after another, each hiding what
    lies underneath, until every pixel is covered.

    Parameters
    ----------
    n_images : int
        Number of images.
    size : int or tuple of int
        Image size ``s`` (square) or ``(h, w)``.
    r_min : float, default 1.0
        Smallest disc radius, in pixels (at least 0.1).
    r_max : float, optional
        Largest disc radius, in pixels (at least 0.5); ``max(h, w) / 2`` by
        default (or ``2 r_min`` for tiny images).
    exponent : float, default 3.0
        Radii have density proportional to ``r**-exponent`` on
        ``[r_min, r_max]``; 3 makes the model approximately scale invariant.
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Seed; the same seed gives identical images.

    Returns
    -------
    images : ndarray of shape (n_images, h, w), dtype float64
        Grey levels in ``[0, 1)``.

    Notes
    -----
    Statistics of the model as implemented:

    * Disc centres form a homogeneous Poisson process over the image extended
      by ``r_max`` on every side (discs centred further out cannot reach the
      image); radii are independent with the power-law density above; grey
      levels are independent and uniform on ``[0, 1)``.
    * A pixel at integer position ``(y, x)`` belongs to a disc when its
      distance to the centre is at most the radius.
    * Discs are generated front to back and each paints only pixels that no
      earlier disc covers; generation stops once every pixel is covered.  This
      is an exact sample of the stationary (fully covered) dead leaves image
      seen through the window, not a truncated superposition.

    Examples
    --------
    >>> images = dead_leaves(2, 32, random_state=0)
    >>> images.shape, bool(images.min() >= 0), bool(images.max() < 1)
    ((2, 32, 32), True, True)
    """
    if isinstance(n_images, bool) or not isinstance(n_images, numbers.Integral):
        raise TypeError(f"n_images must be an int, got {n_images!r}")
    if n_images < 0:
        raise ValueError(f"n_images must be non-negative, got {n_images}")
    height, width = _pair(size, "size")
    if r_max is None:
        r_max = max(max(height, width) / 2.0, 2.0 * float(r_min))
    r_min, r_max, exponent = float(r_min), float(r_max), float(exponent)
    if not (0.0 < r_min < r_max and np.isfinite(r_max)):
        raise ValueError(
            f"need 0 < r_min < r_max < inf, got r_min={r_min} and r_max={r_max}"
        )
    if r_min < 0.1:
        # Covering every pixel centre takes about (1 / r_min)^2 times more discs.
        raise ValueError(
            f"r_min must be at least 0.1 pixel, got {r_min}; smaller discs make "
            "generation impractically slow without changing the pixels much"
        )
    if r_max < 0.5:
        # Discs this small rarely contain a pixel centre: covering every pixel
        # would take an unbounded number of them.
        raise ValueError(
            f"r_max must be at least 0.5 pixel so that discs can cover pixels, got "
            f"{r_max}"
        )
    if not (np.isfinite(exponent) and exponent > 0):
        raise ValueError(f"exponent must be positive and finite, got {exponent}")
    rng = _rng(random_state)

    batch = 4096
    images = np.empty((n_images, height, width))
    for n in range(n_images):
        canvas = np.full((height, width), np.nan)
        covered = np.zeros((height, width), dtype=bool)
        remaining = height * width
        while remaining > 0:
            centre_rows = rng.uniform(-r_max, height - 1 + r_max, batch)
            centre_cols = rng.uniform(-r_max, width - 1 + r_max, batch)
            radii = _sample_radii(rng, batch, r_min, r_max, exponent)
            values = rng.random(batch)
            remaining = _paint_discs(
                canvas, covered, centre_rows, centre_cols, radii, values, remaining
            )
        images[n] = canvas
    return images


# ---------------------------------------------------------------------------
# Patches and intensities


def _image_list(images):
    """Normalise ``images`` to a list of (H, W) or (H, W, C) arrays."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        if images.ndim in (3, 4):
            return list(images)
        raise ValueError(
            f"images must have shape (H, W), (N, H, W) or (N, H, W, C), got "
            f"{images.shape}"
        )
    images = [np.asarray(image) for image in images]
    if not images:
        raise ValueError("images is empty")
    ndims = {image.ndim for image in images}
    if len(ndims) > 1 or not ndims <= {2, 3}:
        raise ValueError(
            "a sequence of images must hold only (H, W) or only (H, W, C) arrays, "
            f"got shapes {[image.shape for image in images[:5]]}"
        )
    if ndims == {3} and len({image.shape[2] for image in images}) > 1:
        raise ValueError(
            "all images must have the same number of channels, got shapes "
            f"{[image.shape for image in images[:5]]}"
        )
    return images


def extract_patches(images, patch_size, num_patches=None, stride=None,
                    random_state=None):
    """Cut patches out of images, at random or on a regular grid.

    Parameters
    ----------
    images : ndarray or sequence of ndarray
        A single image ``(H, W)``, a batch ``(N, H, W)`` or ``(N, H, W, C)``, or
        a sequence of images ``(H_i, W_i)`` or ``(H_i, W_i, C)`` whose sizes may
        differ (e.g. ``list(load_images().values())``).  Never modified.
    patch_size : int or tuple of int
        ``p`` for square patches or ``(h, w)``.
    num_patches : int, optional
        Random mode: draw this many patches, each window position of every
        image being equally likely (positions are drawn with replacement).
    stride : int or tuple of int, optional
        Grid mode: take every patch whose top-left corner lies on a grid with
        this step, image by image, then row-major.  Without ``num_patches`` and
        ``stride`` the step is ``patch_size`` (non-overlapping tiles).
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Seed for random mode.

    Returns
    -------
    patches : ndarray of shape (n, h, w) or (n, h, w, C)
        Copies, with the dtype of the images.

    Raises
    ------
    ValueError
        If both ``num_patches`` and ``stride`` are given, or an image is
        smaller than the patch.
    """
    image_list = _image_list(images)
    h, w = _pair(patch_size, "patch_size")
    if num_patches is not None and stride is not None:
        raise ValueError(
            "give either num_patches (random patches) or stride (grid), not both"
        )
    for index, image in enumerate(image_list):
        if image.shape[0] < h or image.shape[1] < w:
            raise ValueError(
                f"image {index} has shape {image.shape}, smaller than the patch "
                f"size {(h, w)}"
            )
    dtype = np.result_type(*image_list)
    tail = image_list[0].shape[2:]

    if num_patches is not None:
        if isinstance(num_patches, bool) or not isinstance(
            num_patches, numbers.Integral
        ) or num_patches < 0:
            raise ValueError(
                f"num_patches must be a non-negative int, got {num_patches!r}"
            )
        rng = _rng(random_state)
        cols = np.array([image.shape[1] - w + 1 for image in image_list])
        counts = np.array([image.shape[0] - h + 1 for image in image_list]) * cols
        offsets = np.concatenate([[0], np.cumsum(counts)])
        picks = rng.integers(offsets[-1], size=num_patches)
        which = np.searchsorted(offsets, picks, side="right") - 1
        local = picks - offsets[which]
        corners = zip(which, local // cols[which], local % cols[which])
    else:
        sh, sw = _pair(stride if stride is not None else (h, w), "stride")
        corners = [
            (index, i, j)
            for index, image in enumerate(image_list)
            for i in range(0, image.shape[0] - h + 1, sh)
            for j in range(0, image.shape[1] - w + 1, sw)
        ]

    corners = list(corners)
    patches = np.empty((len(corners), h, w) + tail, dtype=dtype)
    for k, (index, i, j) in enumerate(corners):
        patches[k] = image_list[index][i:i + h, j:j + w]
    return patches


def dequantize(images, random_state=None):
    """Add uniform noise to integer intensities.

    Parameters
    ----------
    images : array-like of integers, any shape
        Quantised intensities, e.g. 8-bit values 0-255.  Never modified.
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Seed; the same seed gives the same noise.

    Returns
    -------
    dequantized : ndarray of the same shape, dtype float64
        ``images + u`` with ``u`` independent and uniform on ``[0, 1)``, so every
        value lies in ``[x, x + 1)``.

    Raises
    ------
    TypeError
        If ``images`` does not have an integer dtype.

    Notes
    -----
    A continuous density fitted to dequantised data gives, through its
    log-likelihood, a lower bound on the log-probability of the discrete data
    (Theis, van den Oord & Bethge, "A note on the evaluation of generative
    models", ICLR 2016), so the bits per pixel it implies
    (:func:`bits_per_pixel_8bit`) are an upper bound on the discrete code
    length.
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise TypeError(
            f"dequantize expects integer intensities, got dtype {images.dtype}; "
            "for float arrays holding integers use images.astype(np.int64) first"
        )
    rng = _rng(random_state)
    return images.astype(np.float64) + rng.random(images.shape)


def preprocess(images, scale=1.0 / 256, log=False, return_log_derivative=False):
    """Scale intensities and optionally take their logarithm.

    Parameters
    ----------
    images : array-like, any shape
        Intensities, typically dequantised 8-bit values in ``[0, 256)``.
    scale : float, default 1/256
        Multiplier; dequantised 8-bit data then lie in ``[0, 1)``.
    log : bool, default False
        If True return ``log(scale * images)`` (all values must be positive).
    return_log_derivative : bool, default False
        Also return ``log |dy/dx|`` for every element.

    Returns
    -------
    transformed : ndarray of the same shape, dtype float64
        ``y = scale * x`` or ``y = log(scale * x)``.
    log_derivative : ndarray of the same shape, dtype float64
        Only if requested: ``log(scale)`` or ``-log(x)`` (nats).  Adding its sum
        over an image to that image's log-likelihood under a model of ``y``
        gives the log-likelihood of ``x``.

    Raises
    ------
    ValueError
        If ``scale`` is not positive, or ``log`` is set and some value is not
        positive.
    """
    x = np.asarray(images)
    if x.dtype.kind not in "fiu":
        raise TypeError(
            f"images must hold real intensities, got dtype {x.dtype}."
        )
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or infinite values.")
    scale = float(scale)
    if not (scale > 0 and np.isfinite(scale)):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    if log:
        if not np.all(x > 0):
            raise ValueError(
                f"log=True needs positive intensities, got a minimum of {x.min()}; "
                "dequantize 8-bit data and add an offset first"
            )
        y = np.log(scale * x)
        log_derivative = -np.log(x)
    else:
        y = scale * x
        log_derivative = np.full(x.shape, np.log(scale))
    if return_log_derivative:
        return y, log_derivative
    return y


def bits_per_pixel(loglik_nats, num_pixels):
    """Convert a log-likelihood in nats into bits per pixel.

    Parameters
    ----------
    loglik_nats : float or ndarray
        Total log-likelihood (nats) of ``num_pixels`` scalar values.
    num_pixels : int or ndarray
        Number of scalar values (pixels times channels) it covers.

    Returns
    -------
    bpp : float or ndarray
        ``-loglik_nats / (num_pixels * ln 2)``, the negative log-likelihood in
        bits per value, in the space in which the density was evaluated.
    """
    return -np.asarray(loglik_nats, dtype=np.float64) / (
        np.asarray(num_pixels, dtype=np.float64) * np.log(2.0)
    )


def bits_per_pixel_8bit(loglik_nats, num_pixels, scale):
    """Bits per pixel on the 0-255 scale from a log-likelihood of scaled data.

    Parameters
    ----------
    loglik_nats : float or ndarray
        Total continuous log-likelihood (nats) of ``num_pixels`` values of
        dequantised 8-bit data that were multiplied by ``scale`` before
        modelling (e.g. ``scale = 1/256`` or ``1/255``).
    num_pixels : int or ndarray
        Number of scalar values (pixels times channels) it covers.
    scale : float
        The factor applied to the dequantised ``[0, 256)`` intensities.

    Returns
    -------
    bpp : float or ndarray
        Negative log-likelihood in bits per value of the dequantised data on
        the 0-255 scale: ``-loglik_nats / (num_pixels ln 2) - log2(scale)``.

    Notes
    -----
    With ``y = scale * x`` for each of the ``D`` values, the densities are
    related by ``p_x(x) = p_y(y) * scale**D``, so
    ``log p_x = log p_y + D log(scale)``.  Dividing ``-log p_x`` by ``D ln 2``
    gives the formula above; ``-log2(scale) = log2(1 / scale)`` is 8 bits for
    ``scale = 1/256``.  A uniform density on ``[0, 256)`` therefore scores
    exactly 8 bits per pixel whatever the scale.  For the log-intensity
    transform use :func:`preprocess` with ``return_log_derivative=True`` and
    :func:`bits_per_pixel` instead.  This does not apply to DC-removed patches
    (BSDS300), whose 63 values are not pixels.
    """
    scale = float(scale)
    if not (scale > 0 and np.isfinite(scale)):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    return bits_per_pixel(loglik_nats, num_pixels) - np.log2(scale)


# ---------------------------------------------------------------------------
# BSDS300


def load_bsds300(path):
    """Load the BSDS300 8x8 patch benchmark from its HDF5 file.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file with datasets ``train``, ``validation`` and ``test``, each of
        shape ``(n, 63)``: 8x8 patches of dequantised, scaled intensities with
        the patch mean removed and the bottom-right pixel dropped.

    Returns
    -------
    data : dict of str to ndarray of shape (n, 63)
        Keys ``"train"``, ``"validation"``, ``"test"``; arrays keep the dtype
        stored in the file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a dataset is missing or does not have 63 columns.

    See Also
    --------
    bsds300_to_patches : rebuild the 8x8 patches.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no BSDS300 file at {path!r}")
    with h5py.File(path, "r") as handle:
        found = sorted(handle.keys())
        missing = [name for name in BSDS300_SPLITS if name not in handle]
        if missing:
            raise ValueError(
                f"{path!r} lacks dataset(s) {missing}; a BSDS300 file needs "
                f"{list(BSDS300_SPLITS)}, found {found}"
            )
        data = {}
        for name in BSDS300_SPLITS:
            node = handle[name]
            if not isinstance(node, h5py.Dataset):
                raise ValueError(f"{name!r} in {path!r} is a group, not a dataset")
            if node.ndim != 2 or node.shape[1] != 63:
                hint = ""
                if node.shape[:1] == (63,):
                    hint = " (transposed? it has 63 rows)"
                raise ValueError(
                    f"dataset {name!r} in {path!r} has shape {node.shape}, expected "
                    f"(n, 63){hint}"
                )
            data[name] = node[()]
    return data


def bsds300_to_patches(x63):
    """Rebuild 8x8 patches from BSDS300 rows of 63 values.

    Parameters
    ----------
    x63 : array-like of shape (n, 63)
        Mean-free patches without their bottom-right pixel, row-major.

    Returns
    -------
    patches : ndarray of shape (n, 8, 8)
        The bottom-right pixel is minus the sum of the other 63, so every patch
        sums to zero.  Same dtype as the input if floating, else float64.
    """
    x63 = np.asarray(x63)
    if x63.ndim != 2 or x63.shape[1] != 63:
        raise ValueError(f"expected shape (n, 63), got {x63.shape}")
    dtype = x63.dtype if np.issubdtype(x63.dtype, np.floating) else np.float64
    flat = np.empty((x63.shape[0], 64), dtype=dtype)
    flat[:, :63] = x63
    flat[:, 63] = -x63.sum(axis=1)
    return flat.reshape(-1, 8, 8)


def bsds300_from_patches(patches):
    """Convert 8x8 patches to the BSDS300 layout of 63 values.

    Parameters
    ----------
    patches : array-like of shape (n, 8, 8)
        Patches of intensities.

    Returns
    -------
    x63 : ndarray of shape (n, 63), dtype float64
        Each patch minus its mean, flattened row-major, without the
        bottom-right pixel.  :func:`bsds300_to_patches` inverts this up to the
        removed mean.
    """
    patches = np.asarray(patches, dtype=np.float64)
    if patches.ndim != 3 or patches.shape[1:] != (8, 8):
        raise ValueError(f"expected shape (n, 8, 8), got {patches.shape}")
    flat = patches.reshape(len(patches), 64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat[:, :63].copy()


def bsds300_standin(num_train=50000, num_validation=5000, num_test=10000,
                    random_state=0):
    """A BSDS300-shaped patch data set built from the embedded images.

    For running the BSDS300 pipeline without the real data.  Its numbers are
    **not comparable** with published BSDS300 results: the images, their
    number and the preprocessing constants differ.

    Parameters
    ----------
    num_train, num_validation, num_test : int
        Number of patches per split.
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator
        Seed for dequantisation noise and patch positions; the default 0 makes
        the data set fixed.

    Returns
    -------
    data : dict of str to ndarray of shape (n, 63), dtype float64
        Keys ``"train"``, ``"validation"``, ``"test"``, as :func:`load_bsds300`.

    Notes
    -----
    Images per split are given by :data:`STANDIN_IMAGE_SPLIT` (train: camera,
    astronaut, chelsea, coffee, brick, grass; validation: gravel; test:
    ascent), so no image contributes to two splits.  Each image is dequantised
    (:func:`dequantize`), divided by 256 (values in ``[0, 1)``, no logarithm),
    and 8x8 patches are drawn uniformly at random (:func:`extract_patches`).
    Each patch has its mean subtracted and its bottom-right pixel dropped
    (:func:`bsds300_from_patches`).
    """
    rng = _rng(random_state)
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    data = {}
    for split in BSDS300_SPLITS:
        images = load_images(STANDIN_IMAGE_SPLIT[split])
        scaled = [
            preprocess(dequantize(image, rng), scale=1.0 / 256)
            for image in images.values()
        ]
        patches = extract_patches(scaled, 8, num_patches=sizes[split],
                                  random_state=rng)
        data[split] = bsds300_from_patches(patches)
    return data
