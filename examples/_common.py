"""Helpers shared by the example scripts (not part of the ``ride`` API).

Everything here is small on purpose: loading the fixed train/test split of the
embedded photographs, the curriculum loop that trains a RIDE model, the two
baselines the main example compares against, unit conversion and optional
plotting.

Data convention used by every example: 8-bit intensities are dequantised with
uniform noise (``ride.datasets.dequantize``) and multiplied by ``SCALE = 1/256``
so that pixels lie in ``[0, 1)``.  Bits per pixel are then reported on the
0-255 scale with ``ride.datasets.bits_per_pixel_8bit``, i.e. the continuous
log-likelihood of the dequantised 8-bit values, which is an upper bound on the
code length of the discrete image.
"""

import argparse
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

from ride import MCGSM, ConvergenceWarning, WhiteningPreconditioner
from ride.datasets import (
    bits_per_pixel_8bit,
    dequantize,
    extract_patches,
    load_images,
    preprocess,
)
from ride.neighborhoods import extract

#: Multiplier applied to dequantised 8-bit intensities.
SCALE = 1.0 / 256

#: The fixed split of the embedded photographs used by the examples.  The same
#: images feed ``ride.datasets.bsds300_standin`` (train; gravel and ascent are
#: its validation and test images), so no example ever tests on a training image.
TRAIN_IMAGES = ("camera", "astronaut", "chelsea", "coffee", "brick", "grass")
TEST_IMAGES = ("gravel", "ascent")

EXAMPLES_DIR = Path(__file__).resolve().parent

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------- arguments


def argument_parser(name, description):
    """An ``ArgumentParser`` with the options every example shares.

    ``--quick`` selects a smaller configuration, ``--output`` the directory for
    pictures and models (default ``examples/output/<name>/``), ``--seed`` the
    seed of all randomness, and ``--no-figures`` skips the pictures.
    """
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="smaller configuration that runs in under a minute")
    parser.add_argument("--output", type=Path, default=EXAMPLES_DIR / "output" / name,
                        help=f"directory for pictures and models "
                             f"(default: examples/output/{name}/)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for dequantisation, patches, training and "
                             "sampling (default: 0)")
    parser.add_argument("--no-figures", action="store_true",
                        help="do not draw pictures (also the case when matplotlib "
                             "is not installed)")
    parser.add_argument("--verbose", type=int, default=1,
                        help="verbosity of RIDE.fit (0: silent, 1: one line per "
                             "epoch; default: 1)")
    return parser


def prepare_output(path):
    """Create ``path`` (and parents) if needed and return it as a ``Path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------- data


def load_scaled(names, rng):
    """Dequantised embedded images scaled to ``[0, 1)``.

    Parameters
    ----------
    names : sequence of str
        Names of embedded images (see ``ride.datasets.available_images``).
    rng : numpy.random.Generator
        Source of the dequantisation noise.

    Returns
    -------
    dict of str to ndarray of shape (H, W), float64
    """
    return {
        name: preprocess(dequantize(image, rng), scale=SCALE)
        for name, image in load_images(names).items()
    }


def to_bits(loglik_nats, num_pixels=None):
    """Bits per pixel on the 0-255 scale from log-likelihoods of scaled data.

    ``loglik_nats`` is an array of per-pixel log-likelihoods (nats) or, with
    ``num_pixels``, a total over that many pixels.
    """
    if num_pixels is None:
        loglik_nats = np.asarray(loglik_nats)
        return float(bits_per_pixel_8bit(loglik_nats.sum(), loglik_nats.size, SCALE))
    return float(bits_per_pixel_8bit(loglik_nats, num_pixels, SCALE))


# ---------------------------------------------------------------- training


def train_curriculum(model, images, stages, rng, log=print):
    """Train ``model`` with a curriculum of growing patches.

    Parameters
    ----------
    model : RIDE
        Constructed with ``warm_start=True`` so that every stage continues from
        the previous one.
    images : list of ndarray of shape (H, W)
        Scaled training images; patches are cut from them at random.
    stages : list of dict
        Each with ``patch_size``, ``num_patches`` and any ``RIDE`` parameters
        to set for that stage (``learning_rate``, ``num_epochs``,
        ``finetune_iter``, ...).
    rng : numpy.random.Generator
        Source of the patch positions.
    log : callable
        Receives one summary line per stage.

    Returns
    -------
    boundaries : list of int
        Number of entries of ``model.loss_history_`` after every stage (for
        marking the stages in a training curve).
    """
    boundaries = []
    for number, stage in enumerate(stages, start=1):
        stage = dict(stage)
        size = stage.pop("patch_size")
        count = stage.pop("num_patches")
        patches = extract_patches(images, size, num_patches=count, random_state=rng)
        start = time.perf_counter()
        model.set_params(**stage).fit(patches)
        boundaries.append(len(model.loss_history_))
        settings = ", ".join(f"{key}={value}" for key, value in stage.items())
        log(f"stage {number}/{len(stages)}: {count} patches of {size}x{size}, "
            f"{settings}: {time.perf_counter() - start:.1f} s")
    return boundaries


# ---------------------------------------------------------------- baselines


def neighbourhoods(images, model):
    """Raw causal neighbourhoods and pixels in the layout of a fitted RIDE.

    Uses the model's own masks, so row ``n * R * Q + i * Q + j`` belongs to the
    pixel scored by ``model.loglikelihood(images)[n, i, j]``.

    Parameters
    ----------
    images : ndarray of shape (N, H, W)
    model : RIDE
        A fitted model (provides ``input_mask_`` and ``output_mask_``).

    Returns
    -------
    inputs : ndarray of shape (N * R * Q, n)
    outputs : ndarray of shape (N * R * Q, 1)
    grid : tuple (N, R, Q)
    """
    inputs, outputs = extract(images[..., None], model.input_mask_, model.output_mask_)
    grid = inputs.shape[:3]
    return inputs.reshape(-1, inputs.shape[-1]), outputs.reshape(-1, 1), grid


class GaussianBaseline:
    """Linear-Gaussian autoregressive model on the causal neighbourhood.

    ``p(y | x)`` is Gaussian with a mean linear in ``x`` and a constant
    variance, both fitted by maximum likelihood (equivalently, least squares).
    After conditional whitening ``y' = W_y (y - m_y - P x')`` the fitted
    conditional is a standard normal in ``y'``, so
    ``log p(y | x) = log N(y'; 0, 1) + log |det W_y|``.
    """

    def fit(self, X, Y):
        self.preconditioner_ = WhiteningPreconditioner().fit(X, Y)
        return self

    def loglikelihood(self, X, Y):
        """Log-density in nats of every row, shape (n_samples,)."""
        _, white = self.preconditioner_.transform(X, Y)
        return (-0.5 * np.sum(white**2, axis=1) - 0.5 * white.shape[1] * _LOG_2PI
                + self.preconditioner_.log_jacobian_)


class MCGSMBaseline:
    """An MCGSM on whitened raw neighbourhoods (no recurrence).

    The neighbourhood and the pixel are whitened as in RIDE, then an ``MCGSM``
    is fitted with L-BFGS on a random subset of the training pairs, with a
    held-out fifth for early stopping.
    """

    def __init__(self, num_components=8, num_scales=4, num_samples=100_000,
                 max_iter=300, random_state=0):
        self.num_components = num_components
        self.num_scales = num_scales
        self.num_samples = num_samples
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, Y):
        rng = np.random.default_rng(self.random_state)
        self.preconditioner_ = WhiteningPreconditioner().fit(X, Y)
        num_train = min(self.num_samples, len(X) * 4 // 5)
        num_valid = min(num_train // 5, len(X) - num_train)
        order = rng.permutation(len(X))[:num_train + num_valid]
        Xw, Yw = self.preconditioner_.transform(X[order], Y[order])
        self.mcgsm_ = MCGSM(X.shape[1], Y.shape[1], self.num_components,
                            self.num_scales, random_state=rng)
        with warnings.catch_warnings():
            # reaching max_iter is expected in a time-boxed example
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.mcgsm_.fit(Xw[:num_train], Yw[:num_train], Xw[num_train:],
                            Yw[num_train:], max_iter=self.max_iter)
        return self

    def loglikelihood(self, X, Y):
        """Log-density in nats of every row, shape (n_samples,)."""
        Xw, Yw = self.preconditioner_.transform(X, Y)
        return self.mcgsm_.loglikelihood(Xw, Yw) + self.preconditioner_.log_jacobian_


# ------------------------------------------------------------------ figures


def pyplot(disabled=False):
    """``matplotlib.pyplot`` with a file backend, or None (with a note)."""
    if disabled:
        print("note: --no-figures given; skipping the pictures.")
        return None
    try:
        import matplotlib
    except ImportError:
        print("note: matplotlib is not installed, so no pictures are drawn; "
              "install it with  python -m pip install \".[examples]\"")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path):
    """Write ``fig`` to ``path`` (PNG), close it and print where it went."""
    fig.savefig(path, dpi=100, bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"wrote {os.fspath(path)}")


def show_image(ax, image, title, vmin=0.0, vmax=1.0, cmap="gray"):
    """Draw a greyscale image without axes."""
    ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
