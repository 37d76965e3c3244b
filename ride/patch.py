"""RIDE for fixed-size patches, and the BSDS300 protocol.

A :class:`PatchRIDE` zero-pads every patch by the context border of the causal
neighbourhood, so that *every* patch pixel becomes a scored pixel, and reports
per-patch totals.  With ``bsds300=True`` it follows the BSDS300 protocol of
Uria et al. (2013) used by Theis & Bethge (2015, section 3.2): patches are
8 x 8 with their mean removed, so the bottom-right pixel is determined by the
other 63 and is left out of every part of training and evaluation; results are
in nats per 63-dimensional patch.
"""

import math

import numpy as np

from ._validation import check_positive_int
from .model import RIDE
from .neighborhoods import output_offset

__all__ = ["PatchRIDE"]


class PatchRIDE(RIDE):
    """RIDE on fixed-size patches, scoring every patch pixel.

    Accepts the parameters of :class:`RIDE` plus:

    Parameters
    ----------
    bsds300 : bool, default=False
        Leave the bottom-right pixel of every patch out of training, of
        ``loglikelihood`` and ``evaluate`` (it is minus the sum of the others
        in mean-removed data), and set it to minus the sum of the other pixels
        in ``sample``.

    Notes
    -----
    Patches are padded with zeros: ``k`` rows on top and ``k`` columns on each
    side for ``nb_size = 2k + 1``.  Fixes relative to the original patch models
    of the BSDS300 protocol: the left-out pixel is excluded from the MCGSM
    gradient as well as from the loss, ``evaluate`` is a properly weighted mean
    per pixel and channel, and samples satisfy the zero-sum constraint.
    """

    def __init__(self, num_hiddens=64, num_layers=1, num_components=32, num_scales=4,
                 num_features=32, nb_size=5, extended=False, nonlinearity="tanh",
                 precondition=True, method="sgd", num_epochs=1, batch_size=50,
                 learning_rate=None, momentum=0.9, finetune_iter=500,
                 finetune_samples=200_000, train_means=False, train_top_layer=False,
                 bsds300=False, warm_start=False, random_state=None, verbose=0):
        super().__init__(
            num_hiddens=num_hiddens, num_layers=num_layers,
            num_components=num_components, num_scales=num_scales,
            num_features=num_features, nb_size=nb_size, extended=extended,
            nonlinearity=nonlinearity, precondition=precondition, method=method,
            num_epochs=num_epochs, batch_size=batch_size, learning_rate=learning_rate,
            momentum=momentum, finetune_iter=finetune_iter,
            finetune_samples=finetune_samples, train_means=train_means,
            train_top_layer=train_top_layer, warm_start=warm_start,
            random_state=random_state, verbose=verbose,
        )
        self.bsds300 = bsds300

    # ------------------------------------------------------------- padding

    def _padding(self):
        input_mask, output_mask = self._masks()
        i_off, j_off = output_offset(output_mask)
        rows, cols = input_mask.shape
        return (i_off, rows - i_off - 1), (j_off, cols - j_off - 1)

    def _pad(self, patches, name="patches"):
        """Validate patches; return them zero-padded, whether they were 3-D, and
        their (N, h, w, C) shape."""
        channels = self.n_channels_ if self._is_fitted() else None
        array, was_3d = self._validate_images(patches, name, channels=channels,
                                              check_size=False)
        if self.bsds300 and array.shape[1:3] != (8, 8):
            raise ValueError(
                f"bsds300=True expects 8x8 patches, got {name} of shape "
                f"{np.shape(patches)}."
            )
        (top, bottom), (left, right) = self._padding()
        padded = np.pad(array, ((0, 0), (top, bottom), (left, right), (0, 0)))
        return padded, was_3d, array.shape

    def _unpad(self, padded, was_3d):
        (top, bottom), (left, right) = self._padding()
        out = padded[:, top:padded.shape[1] - bottom, left:padded.shape[2] - right]
        return out[..., 0] if was_3d else out

    def _scored_sites(self, shape):
        if not self.bsds300:
            return slice(None)
        num_images, rows, cols = shape[:3]
        keep = np.ones((num_images, rows, cols), dtype=bool)
        keep[:, -1, -1] = False
        return keep.ravel()

    # ------------------------------------------------------------------ API

    def fit(self, patches):
        """Train on patches of shape ``(n, h, w[, C])``; returns self."""
        padded, _, _ = self._pad(patches)
        return super().fit(padded)

    def _patch_loglikelihood(self, patches):
        self._check_fitted()
        padded, _, shape = self._pad(patches)
        grid = super().loglikelihood(padded)
        if self.bsds300:
            grid[:, -1, -1] = 0.0
        return grid, shape

    def loglikelihood(self, patches):
        """Log-likelihood of every patch, in nats.

        Returns
        -------
        ndarray of shape (n_patches,)
            Sum over all patch pixels (all but the bottom-right one with
            ``bsds300=True``) of their conditional log-densities.
        """
        grid, _ = self._patch_loglikelihood(patches)
        return grid.sum(axis=(1, 2))

    score_samples = loglikelihood

    def num_scored(self, patch_shape):
        """Number of scored pixels per patch of shape ``(h, w)``."""
        h, w = patch_shape[:2]
        return h * w - (1 if self.bsds300 else 0)

    def evaluate(self, patches):
        """Average negative log-likelihood in bits per scored pixel per channel."""
        grid, shape = self._patch_loglikelihood(patches)
        total = grid.sum() / (shape[0] * self.num_scored(shape[1:3]))
        return float(-total / (math.log(2.0) * self.n_channels_))

    def evaluate_nats_per_patch(self, patches):
        """Average negative log-likelihood in nats per patch (BSDS300 units)."""
        return float(-np.mean(self.loglikelihood(patches)))

    def gradient(self, patches):
        """Gradient of the total log-likelihood with respect to patch pixels."""
        self._check_fitted()
        padded, was_3d, _ = self._pad(patches)
        grad = super().gradient(padded)
        grad = grad if grad.ndim == 4 else grad[..., None]
        return self._unpad(grad, was_3d)

    @property
    def scored_region(self):
        """Every patch pixel is scored: ``(slice(None), slice(None))``."""
        return slice(None), slice(None)

    def hidden_states(self, patches, layer=None):
        """Hidden states at every patch pixel.

        Returns
        -------
        ndarray of shape (n_patches, h, w, num_hiddens)
        """
        padded, _, _ = self._pad(patches)
        return super().hidden_states(padded, layer=layer)

    def sample(self, patches, mask=None, min_values=None, max_values=None,
               random_state=None, return_loglik=False):
        """Draw patch pixels in raster order (see :meth:`RIDE.sample`).

        ``mask`` has the patch shape.  With ``bsds300=True`` the bottom-right
        pixel of every patch is set to minus the sum of the other pixels.
        """
        self._check_fitted()
        padded, was_3d, shape = self._pad(patches)
        (top, bottom), (left, right) = self._padding()
        full = np.zeros(padded.shape[:3], dtype=bool)
        full[:, top:padded.shape[1] - bottom, left:padded.shape[2] - right] = (
            True if mask is None else self._patch_mask(mask, shape)
        )
        if self.bsds300:
            full[:, padded.shape[1] - bottom - 1, padded.shape[2] - right - 1] = False
        result = super().sample(padded, mask=full, min_values=min_values,
                                max_values=max_values, random_state=random_state,
                                return_loglik=return_loglik)
        samples, loglik = result if return_loglik else (result, None)
        samples = np.ascontiguousarray(self._unpad(samples, False))
        if self.bsds300:
            flat = samples.reshape(len(samples), -1, samples.shape[-1])  # a view
            flat[:, -1] = -flat[:, :-1].sum(axis=1)
        samples = samples[..., 0] if was_3d else samples
        return (samples, loglik) if return_loglik else samples

    def _patch_mask(self, mask, shape):
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"mask must be boolean, got dtype {mask.dtype}.")
        if mask.shape not in (shape[1:3], shape[:3]):
            raise ValueError(
                f"mask must have the patch shape {shape[1:3]} or {shape[:3]}, got "
                f"{mask.shape}."
            )
        return mask

    def sample_images(self, num_images, height=8, width=8, min_values=None,
                      max_values=None, random_state=None):
        """Draw new patches of shape ``(height, width)``.

        Every patch pixel is drawn in raster order, with the zero padding as
        context (as during training).

        Returns
        -------
        ndarray of shape (num_images, height, width[, n_channels])
        """
        self._check_fitted()
        for name, value in (("num_images", num_images), ("height", height),
                            ("width", width)):
            check_positive_int(value, name)
        canvas = np.zeros((num_images, height, width, self.n_channels_))
        samples = self.sample(canvas, min_values=min_values, max_values=max_values,
                              random_state=random_state)
        return samples[..., 0] if self.n_channels_ == 1 else samples

    def sample_patches(self, num_patches, patch_shape=(8, 8), random_state=None):
        """Draw new patches; ``sample_images`` with the shape as a tuple."""
        shape = tuple(np.atleast_1d(patch_shape))
        if len(shape) != 2:
            raise ValueError(
                f"patch_shape must be (height, width), got {patch_shape!r}."
            )
        return self.sample_images(num_patches, *shape, random_state=random_state)

    def inpaint(self, *args, **kwargs):
        raise NotImplementedError(
            "PatchRIDE does not implement inpaint; use RIDE.inpaint on whole images."
        )
