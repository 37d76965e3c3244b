"""The RIDE estimator: spatial LSTMs topped by an MCGSM.

An image is factorised pixel by pixel in raster order.  Every pixel that has a
full causal neighbourhood is *scored*; its density is conditioned on the
hidden state of the top spatial LSTM at that pixel, which summarises all
neighbourhoods above and to the left (Theis & Bethge, 2015, section 2).

Which pixels are scored
-----------------------
With the default causal neighbourhood ``nb_size = 2k + 1`` the mask is
``(k + 1) x (2k + 1)``.  Output grid site ``(i, j)`` predicts image pixel
``(i + k, j + k)``, so an ``H x W`` image has ``(H - k) x (W - 2k)`` scored
pixels: all but the top ``k`` rows, the left ``k`` columns and the right ``k``
columns, which only serve as context.  :attr:`RIDE.scored_region` gives the
slices into the image.
"""

import json
import math
import numbers
import time
import warnings

import numpy as np

from ._base import BaseEstimator, Progress
from ._threads import single_threaded_blas
from ._validation import (
    ConvergenceWarning,
    NotFittedError,
    check_positive_int,
    check_random_state,
)
from .mcgsm import MCGSM
from .neighborhoods import (
    causal_masks,
    extract,
    mask_positions,
    output_grid_shape,
    output_offset,
    scatter,
)
from .preconditioner import WhiteningPreconditioner
from .slstm import SpatialLSTM, slstm_backward, slstm_forward, slstm_step

__all__ = ["RIDE"]

_LN2 = math.log(2.0)

#: Maximum number of neighbourhoods used to fit the whitening.
_MAX_WHITENING_SAMPLES = 500_000

#: Grid sites processed at once outside training, to bound memory.
_SITES_PER_CHUNK = 65_536

_DEFAULT_LEARNING_RATE = {"sgd": 1.0, "adam": 1e-3}


class RIDE(BaseEstimator):
    """Recurrent image density estimator (Theis & Bethge, 2015).

    Parameters
    ----------
    num_hiddens : int, default=64
        Hidden units (and memory cells) of every spatial LSTM layer.
    num_layers : int, default=1
        Number of stacked spatial LSTM layers.
    num_components, num_scales, num_features : int, default=32, 4, 32
        Size of the MCGSM on top (``K``, ``S`` and ``F``).
    nb_size : int, default=5
        Width ``2k + 1`` of the causal neighbourhood (odd, at least 3).
    extended : bool, default=False
        Whether the LSTM gates also read the neighbours' memory cells.
    nonlinearity : {'tanh', 'relu'}, default='tanh'
    precondition : bool, default=True
        Whiten neighbourhoods and pixels (fitted on the first ``fit``).
    method : {'sgd', 'adam'}, default='sgd'
        Optimiser of the joint training.  ``'sgd'`` is gradient descent with
        momentum, ``v <- momentum v - grad; theta <- theta + learning_rate v``.
    num_epochs : int, default=1
        Passes over the images per call to ``fit``.
    batch_size : int, default=50
        Images per gradient step.
    learning_rate : float or None, default=None
        ``None`` means 1.0 for ``'sgd'`` and 0.001 for ``'adam'``.
    momentum : float, default=0.9
        SGD momentum (for Adam, the first-moment decay).
    finetune_iter : int, default=500
        L-BFGS iterations of the MCGSM fine-tuning after every epoch; 0 turns
        the fine-tuning off.
    finetune_samples : int, default=200_000
        Maximum number of grid sites used for fine-tuning; a fifth as many
        further sites (at most) are held out for early stopping.
    train_means : bool, default=False
        Whether the MCGSM means are trained.
    train_top_layer : bool, default=False
        Train only the top LSTM layer (and the MCGSM), e.g. after ``add_layer``.
    warm_start : bool, default=False
        If True, ``fit`` continues from the current parameters.
    random_state : None, int or numpy.random.Generator
        Seeds initialisation, batch order, fine-tuning subsets and sampling.
    verbose : int, default=0
        0 is silent; 1 prints a line per epoch and per fine-tuning phase, and
        progress lines with rates during long loops; 2 also prints the MCGSM's
        L-BFGS validation checks, in bits per dimension of the whitened data
        (without the log-Jacobian, so on a different scale).

    Attributes
    ----------
    n_channels_ : int
        Number of channels seen in the first ``fit``.
    layers_ : list of SpatialLSTM
    mcgsm_ : MCGSM
    preconditioner_ : WhiteningPreconditioner or None
    loss_history_ : list of float
        Loss of every training batch in bits per pixel per channel (including
        the whitening's log-Jacobian, so comparable with ``evaluate``).
    epoch_history_ : list of dict
        Per epoch: mean training loss and the fine-tuning results, in bits per
        pixel per channel.
    n_epochs_ : int
        Epochs trained so far (over all calls to ``fit``).

    Notes
    -----
    Curriculum training (Theis & Bethge, 2015, section 3.1) is a loop of
    ``set_params`` and ``fit`` with ``warm_start=True``::

        model = RIDE(warm_start=True, random_state=0)
        for size, rate in [(8, 1.0), (12, 0.5), (16, 0.1)]:
            patches = extract_patches(images, size, num_patches=2000)
            model.set_params(learning_rate=rate).fit(patches)
    """

    def __init__(
        self,
        num_hiddens=64,
        num_layers=1,
        num_components=32,
        num_scales=4,
        num_features=32,
        nb_size=5,
        extended=False,
        nonlinearity="tanh",
        precondition=True,
        method="sgd",
        num_epochs=1,
        batch_size=50,
        learning_rate=None,
        momentum=0.9,
        finetune_iter=500,
        finetune_samples=200_000,
        train_means=False,
        train_top_layer=False,
        warm_start=False,
        random_state=None,
        verbose=0,
    ):
        self.num_hiddens = num_hiddens
        self.num_layers = num_layers
        self.num_components = num_components
        self.num_scales = num_scales
        self.num_features = num_features
        self.nb_size = nb_size
        self.extended = extended
        self.nonlinearity = nonlinearity
        self.precondition = precondition
        self.method = method
        self.num_epochs = num_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.finetune_iter = finetune_iter
        self.finetune_samples = finetune_samples
        self.train_means = train_means
        self.train_top_layer = train_top_layer
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ validation

    def _validate_hyperparameters(self):
        def positive(name, minimum=1):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {value!r}.")
            if value < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {value}.")

        for name in ("num_hiddens", "num_layers", "num_components", "num_scales",
                     "num_features", "batch_size"):
            positive(name)
        for name in ("num_epochs", "finetune_iter", "verbose"):
            positive(name, minimum=0)
        positive("finetune_samples")
        for name in ("extended", "precondition", "train_means", "train_top_layer",
                     "warm_start"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(
                    f"{name} must be True or False, got {getattr(self, name)!r}."
                )
        check_random_state(self.random_state)  # raises for unusable seeds
        causal_masks(self.nb_size)  # raises for even or tiny sizes
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}."
            )
        if self.method not in _DEFAULT_LEARNING_RATE:
            raise ValueError(
                f"method must be one of {sorted(_DEFAULT_LEARNING_RATE)}, got "
                f"{self.method!r}."
            )
        rate = self._learning_rate()
        if not (isinstance(rate, numbers.Real) and np.isfinite(rate) and rate > 0):
            raise ValueError(f"learning_rate must be a positive float, got {rate!r}.")
        if not (isinstance(self.momentum, numbers.Real) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}.")

    def _learning_rate(self):
        if self.learning_rate is None:
            return _DEFAULT_LEARNING_RATE.get(self.method, 1.0)
        return self.learning_rate

    def _is_fitted(self):
        return hasattr(self, "mcgsm_")

    def _check_fitted(self):
        if not self._is_fitted():
            raise NotFittedError(
                "This RIDE model is not fitted yet; call fit(images) first (or "
                "ride.load a saved model)."
            )

    def _validate_images(self, images, name="images", channels=None, check_size=True):
        """Return ``(array (N, H, W, C) float64 copy, was_3d)``.

        Checks dtype, rank, finiteness, equal sizes and, when given, the number
        of channels, and (with ``check_size``) that the images are large enough
        for the masks.
        """
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError(f"{name} is an empty list; pass at least one image.")
            shapes = {np.shape(im) for im in images}
            if len(shapes) != 1:
                raise ValueError(
                    f"All images in {name} must have the same shape, got "
                    f"{sorted(shapes)}; crop or pad them, or fit in separate calls."
                )
            images = np.stack([np.asarray(im) for im in images])
        if not isinstance(images, np.ndarray):
            raise TypeError(
                f"{name} must be a numpy array or a list of arrays, got "
                f"{type(images).__name__}."
            )
        if images.dtype.kind != "f":
            hint = (
                f" Convert it first, e.g. {name}.astype(np.float64) (and dequantise "
                "8-bit data with ride.datasets.dequantize)."
                if images.dtype.kind in "iub"
                else ""
            )
            raise TypeError(
                f"{name} must be a float array, got dtype {images.dtype}.{hint}"
            )
        if images.ndim not in (3, 4):
            raise ValueError(
                f"{name} must have shape (n_images, height, width) or (n_images, "
                f"height, width, n_channels), got shape {images.shape}. For a "
                "single image use images[None]."
            )
        was_3d = images.ndim == 3
        array = np.array(images, dtype=np.float64, copy=True)
        if was_3d:
            array = array[..., None]
        if array.shape[0] == 0:
            raise ValueError(f"{name} holds no images (shape {images.shape}).")
        if channels is not None and array.shape[3] != channels:
            raise ValueError(
                f"{name} have {array.shape[3]} channel(s) (shape {images.shape}) but "
                f"the model was fitted on {channels}."
            )
        if not np.all(np.isfinite(array)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise ValueError(
                f"{name} contain NaN or infinite values (first at index {bad[:3]})."
            )
        if check_size:
            output_grid_shape(array.shape, self._masks()[0].shape)
        elif min(array.shape[1:3]) < 1:
            raise ValueError(f"{name} must be at least 1x1, got shape {images.shape}.")
        return array, was_3d

    # ---------------------------------------------------------------- masks

    def _masks(self):
        if hasattr(self, "input_mask_"):
            return self.input_mask_, self.output_mask_
        return causal_masks(self.nb_size)

    @property
    def scored_region(self):
        """``(row_slice, col_slice)`` of the scored pixels in an image.

        Pixel ``images[n, row_slice, col_slice][i, j]`` is scored by
        ``loglikelihood(images)[n, i, j]``.
        """
        input_mask, output_mask = self._masks()
        i_off, j_off = output_offset(output_mask)
        right = input_mask.shape[1] - j_off - 1
        return slice(i_off, None), slice(j_off, -right if right else None)

    # ------------------------------------------------------------ internals

    def _preprocess(self, images):
        """Whitened neighbourhoods and pixels, shapes (N, R, Q, n) and (N, R, Q, C)."""
        inputs, outputs = extract(images, self.input_mask_, self.output_mask_)
        if self.preconditioner_ is None:
            return inputs, outputs
        shape_in, shape_out = inputs.shape, outputs.shape
        with np.errstate(over="ignore", invalid="ignore"):
            x, y = self.preconditioner_.transform(
                inputs.reshape(-1, shape_in[-1]), outputs.reshape(-1, shape_out[-1])
            )
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError(
                "The images overflow when whitened (largest magnitude "
                f"{np.max(np.abs(images)):.3g}); they are far outside the range of "
                "the training data."
            )
        return x.reshape(shape_in), y.reshape(shape_out)

    def _log_jacobian(self):
        return 0.0 if self.preconditioner_ is None else self.preconditioner_.log_jacobian_

    def _layer_forward(self, inputs, keep=False, upto=None):
        """Run the layers; returns the top hidden states and, if ``keep``, caches."""
        caches = []
        hidden = inputs
        for layer in self.layers_[:upto]:
            hidden, cache = slstm_forward(
                layer.weights, layer.biases, hidden, layer.extended, layer.nonlinearity
            )
            if keep:
                caches.append(cache)
        return hidden, caches

    def _layer_backward(self, caches, grad_hidden, lowest, input_gradient=False):
        """Backpropagate from the top layer down to layer index ``lowest``.

        Returns a list of ``(grad_weights, grad_biases)`` for layers
        ``lowest..L-1`` and the gradient with respect to the inputs of layer
        ``lowest`` (or None).
        """
        grads = []
        for index in range(len(self.layers_) - 1, lowest - 1, -1):
            layer = self.layers_[index]
            need_inputs = input_gradient or index > lowest
            gw, gb, grad_hidden = slstm_backward(
                layer.weights, caches[index], grad_hidden, layer.extended,
                layer.nonlinearity, input_gradient=need_inputs,
            )
            grads.append((gw, gb))
        grads.reverse()
        return grads, grad_hidden

    def _image_chunks(self, num_images, grid):
        per = max(1, _SITES_PER_CHUNK // max(grid[0] * grid[1], 1))
        return [slice(s, min(s + per, num_images)) for s in range(0, num_images, per)]

    def _scored_sites(self, shape):
        """Flat index (or slice) of the grid sites that enter training.

        ``shape`` is ``(N, R, Q, ...)``.  All sites are used here; patch models
        of the BSDS300 protocol leave one out.
        """
        return slice(None)

    def _mcgsm_groups(self):
        groups = ["priors", "scales", "weights", "features", "cholesky_factors",
                  "predictors"]
        if self.train_means:
            groups.append("means")
        return groups

    # ------------------------------------------------------------------ fit

    def _initialise(self, images, rng):
        """Build masks, whitening, layers and MCGSM; returns them without storing."""
        input_mask, output_mask = causal_masks(self.nb_size)
        num_channels = images.shape[3]
        preconditioner = None
        if self.precondition:
            inputs, outputs = extract(images, input_mask, output_mask)
            x = inputs.reshape(-1, inputs.shape[-1])
            y = outputs.reshape(-1, outputs.shape[-1])
            if len(x) > _MAX_WHITENING_SAMPLES:
                keep = rng.choice(len(x), _MAX_WHITENING_SAMPLES, replace=False)
                x, y = x[keep], y[keep]
            try:
                preconditioner = WhiteningPreconditioner().fit(x, y)
            except ValueError as error:
                raise ValueError(
                    f"Cannot whiten the causal neighbourhoods of these images: {error} "
                    "Are the images (nearly) constant? Dequantise 8-bit data "
                    "(ride.datasets.dequantize) or pass precondition=False."
                ) from None
        num_inputs = int(mask_positions(input_mask, num_channels).shape[0])
        layers = []
        for index in range(self.num_layers):
            layers.append(self._new_layer(num_inputs if index == 0 else None, rng))
        mcgsm = self._new_mcgsm(num_channels, rng)
        stats = images.reshape(-1, num_channels)
        return {
            "input_mask_": input_mask,
            "output_mask_": output_mask,
            "n_channels_": num_channels,
            "preconditioner_": preconditioner,
            "layers_": layers,
            "mcgsm_": mcgsm,
            "pixel_mean_": stats.mean(axis=0),
            "pixel_std_": stats.std(axis=0),
            "loss_history_": [],
            "epoch_history_": [],
            "n_epochs_": 0,
            "_rng": rng,
        }

    def _new_layer(self, num_inputs, rng):
        return SpatialLSTM(
            self.num_hiddens if num_inputs is None else num_inputs,
            self.num_hiddens,
            extended=self.extended,
            nonlinearity=self.nonlinearity,
            random_state=rng,
        )

    def _new_mcgsm(self, num_channels, rng):
        return MCGSM(
            self.num_hiddens,
            num_channels,
            self.num_components,
            self.num_scales,
            self.num_features,
            random_state=rng,
        )

    def _check_warm_start_compatible(self):
        fixed = {
            "num_hiddens": self.layers_[0].num_hiddens,
            "extended": self.layers_[0].extended,
            "nonlinearity": self.layers_[0].nonlinearity,
            "num_components": self.mcgsm_.num_components,
            "num_scales": self.mcgsm_.num_scales,
            "num_features": self.mcgsm_.num_features,
            "nb_size": self.input_mask_.shape[1],
            "precondition": self.preconditioner_ is not None,
        }
        for name, fitted in fixed.items():
            if getattr(self, name) != fitted:
                raise ValueError(
                    f"warm_start=True cannot change {name} from {fitted!r} to "
                    f"{getattr(self, name)!r}; set warm_start=False to train a new "
                    "model."
                )
        if self.num_layers < len(self.layers_):
            raise ValueError(
                f"warm_start=True cannot remove layers (fitted {len(self.layers_)}, "
                f"num_layers={self.num_layers})."
            )

    def add_layer(self):
        """Stack a new, randomly initialised LSTM layer and a new MCGSM on top.

        Follow with ``set_params(warm_start=True, train_top_layer=True).fit(...)``
        to train only the new layer and the MCGSM (Theis & Bethge, 2015,
        section 3.1).

        Returns
        -------
        self
        """
        self._check_fitted()
        self.layers_.append(self._new_layer(None, self._rng))
        self.mcgsm_ = self._new_mcgsm(self.n_channels_, self._rng)
        self.num_layers = len(self.layers_)
        return self

    def fit(self, images):
        """Train all layers and the MCGSM on a set of images.

        Parameters
        ----------
        images : ndarray of shape (n_images, height, width[, n_channels]) or list
            Float images (dequantised, e.g. with ``ride.datasets.dequantize``),
            each at least ``(k + 1) x (2k + 1)`` for ``nb_size = 2k + 1``.

        Returns
        -------
        self
        """
        self._validate_hyperparameters()
        warm = self.warm_start and self._is_fitted()
        array, _ = self._validate_images(
            images, channels=self.n_channels_ if warm else None
        )
        if warm:
            self._check_warm_start_compatible()
        else:
            rng = check_random_state(self.random_state)
            state = self._initialise(array, rng)
            for key, value in state.items():
                setattr(self, key, value)
        while len(self.layers_) < self.num_layers:
            self.add_layer()

        with single_threaded_blas():
            inputs, outputs = self._preprocess(array)
            for _ in range(self.num_epochs):
                record = self._train_epoch(inputs, outputs)
                if record is None:  # numerical failure, reported already
                    break
                if self.finetune_iter > 0:
                    record.update(self._finetune(inputs, outputs))
                self.epoch_history_.append(record)
                self.n_epochs_ += 1
        return self

    def _parameter_arrays(self, lowest):
        """The arrays updated in place by the optimiser (LSTM weights/biases)."""
        arrays = []
        for layer in self.layers_[lowest:]:
            arrays += [layer.weights, layer.biases]
        return arrays

    def _batch_loss_and_gradient(self, inputs, outputs, lowest, index):
        """Mean NLL in nats per site and its gradient, for one batch."""
        hidden, caches = self._layer_forward(inputs, keep=True)
        keep = self._scored_sites(hidden.shape)
        h = hidden.reshape(-1, hidden.shape[-1])[keep]
        y = outputs.reshape(-1, outputs.shape[-1])[keep]
        num_sites = len(h)
        # Overflow shows up as a non-finite loss, which the caller reports.
        with np.errstate(over="ignore", invalid="ignore"):
            loglik, grads, grad_h, _ = self.mcgsm_._forward_backward(h, y, True, True)
        loss = -float(np.sum(loglik)) / num_sites
        mcgsm_grad = -self.mcgsm_._pack(grads, index) / num_sites
        if not (np.isfinite(loss) and np.all(np.isfinite(grad_h))
                and np.all(np.isfinite(mcgsm_grad))):
            return None
        grad_hidden = np.zeros((hidden.size // hidden.shape[-1], hidden.shape[-1]))
        grad_hidden[keep] = -grad_h / num_sites
        grad_hidden = grad_hidden.reshape(hidden.shape)
        layer_grads, _ = self._layer_backward(caches, grad_hidden, lowest)
        flat = []
        for gw, gb in layer_grads:
            flat += [gw, gb]
        if not all(np.all(np.isfinite(g)) for g in flat):
            return None
        return loss, flat, mcgsm_grad

    def _train_epoch(self, inputs, outputs):
        """One pass of SGD with momentum (or Adam) over shuffled batches."""
        rng = self._rng
        num_images = inputs.shape[0]
        lowest = len(self.layers_) - 1 if self.train_top_layer else 0
        index = self.mcgsm_._trainable_index(self._mcgsm_groups())
        arrays = self._parameter_arrays(lowest)
        mcgsm_vector = self.mcgsm_._pack(self.mcgsm_._params, index)
        params = arrays + [mcgsm_vector]
        first = [np.zeros_like(p) for p in params]
        second = [np.zeros_like(p) for p in params] if self.method == "adam" else None
        rate = self._learning_rate()
        offset = self._log_jacobian() / (_LN2 * self.n_channels_)
        sites_per_image = inputs.shape[1] * inputs.shape[2]

        order = rng.permutation(num_images)
        batches = [order[s:s + self.batch_size]
                   for s in range(0, num_images, self.batch_size)]
        progress = Progress(num_images * sites_per_image, "[RIDE] training", "sites",
                            enabled=self.verbose >= 1)
        losses = []
        last_good = None
        for step, batch in enumerate(batches, start=1):
            batch = np.sort(batch)
            result = self._batch_loss_and_gradient(
                inputs[batch], outputs[batch], lowest, index
            )
            if result is None:
                # The current parameters came from the last update; go back to
                # the ones before it, which gave a finite loss and gradient.
                if last_good is not None:
                    for p, good in zip(params, last_good):
                        p[...] = good
                    self.mcgsm_._unpack(params[-1], index)
                warnings.warn(
                    f"RIDE.fit: the loss or its gradient became non-finite at batch "
                    f"{step} of epoch {self.n_epochs_ + 1}; restored the parameters "
                    f"of the last batch with a finite loss and stopped training. "
                    f"Lower the learning_rate (now {rate}).",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
            loss, grads, mcgsm_grad = result
            grads.append(mcgsm_grad)
            last_good = [p.copy() for p in params]
            if self.method == "sgd":
                for p, v, g in zip(params, first, grads):
                    v *= self.momentum
                    v -= g
                    p += rate * v
            else:
                beta1, beta2 = self.momentum, 0.999
                correction = math.sqrt(1 - beta2**step) / (1 - beta1**step)
                for p, m, v, g in zip(params, first, second, grads):
                    m *= beta1
                    m += (1 - beta1) * g
                    v *= beta2
                    v += (1 - beta2) * g * g
                    p -= rate * correction * m / (np.sqrt(v) + 1e-8)
            self.mcgsm_._unpack(params[-1], index)
            bits = loss / (_LN2 * self.n_channels_) - offset
            losses.append(bits)
            self.loss_history_.append(bits)
            progress.update(len(batch) * sites_per_image,
                            extra=f", loss {np.mean(losses[-20:]):.4f} "
                            "bit/pixel/channel")

        mean_loss = float(np.mean(losses))
        if self.verbose >= 1:
            print(
                f"[RIDE] epoch {self.n_epochs_ + 1}: loss {mean_loss:.4f} bit/pixel/"
                f"channel over {len(batches)} batches, "
                f"{progress.done / max(progress.elapsed, 1e-9):,.0f} sites/s, "
                f"{progress.elapsed:.1f} s",
                flush=True,
            )
        return {"epoch": self.n_epochs_ + 1, "train_loss": mean_loss}

    def _finetune(self, inputs, outputs):
        """Fit the MCGSM alone with L-BFGS on fixed hidden states."""
        rng = self._rng
        # Hidden states only of as many (random) images as the sites need.
        sites_per_image = inputs.shape[1] * inputs.shape[2]
        wanted = self.finetune_samples + max(self.finetune_samples // 5, 1)
        num_images = min(inputs.shape[0], -(-wanted // sites_per_image))
        if num_images < inputs.shape[0]:
            chosen = np.sort(rng.choice(inputs.shape[0], num_images, replace=False))
            inputs, outputs = inputs[chosen], outputs[chosen]
        hidden = self._hidden_in_chunks(inputs)
        keep = self._scored_sites(hidden.shape)
        h = hidden.reshape(-1, hidden.shape[-1])[keep]
        y = outputs.reshape(-1, outputs.shape[-1])[keep]
        total = len(h)
        num_valid = min(total // 5, max(self.finetune_samples // 5, 1))
        num_train = min(total - num_valid, self.finetune_samples)
        order = rng.permutation(total)
        train, valid = order[:num_train], order[num_train:num_train + num_valid]
        offset = self._log_jacobian() / (_LN2 * self.n_channels_)
        self.mcgsm_.verbose = max(self.verbose - 1, 0)
        start = time.perf_counter()
        h_train, y_train = h[train], y[train]
        with np.errstate(over="ignore", invalid="ignore"):
            before = self.mcgsm_.evaluate(h_train, y_train) - offset
        if not np.isfinite(before):
            warnings.warn(
                f"RIDE.fit: skipped the MCGSM fine-tuning of epoch {self.n_epochs_ + 1} "
                f"because the loss at its start is {before}; lower the learning_rate.",
                RuntimeWarning,
                stacklevel=3,
            )
            return {"finetune_before": before}
        valid_args = (h[valid], y[valid]) if num_valid > 0 else (None, None)
        with warnings.catch_warnings():
            # hitting finetune_iter is the normal case here, not a problem
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            self.mcgsm_.fit(
                h_train, y_train, *valid_args, max_iter=self.finetune_iter,
                train_means=self.train_means,
            )
        after = self.mcgsm_.evaluate(h_train, y_train) - offset
        record = {
            "finetune_before": before,
            "finetune_after": after,
            "finetune_iter": self.mcgsm_.n_iter_,
            "finetune_kept_iteration": self.mcgsm_.best_iteration_,
        }
        if num_valid > 0:
            record["finetune_valid"] = self.mcgsm_.evaluate(*valid_args) - offset
        if self.verbose >= 1:
            valid_text = (
                f", held-out {record['finetune_valid']:.4f}" if num_valid > 0 else ""
            )
            print(
                f"[RIDE] fine-tuning MCGSM on {num_train} sites: {before:.4f} -> "
                f"{after:.4f} bit/pixel/channel{valid_text}, "
                f"{self.mcgsm_.n_iter_} L-BFGS iterations (kept iteration "
                f"{self.mcgsm_.best_iteration_}, the best on held-out sites), "
                f"{time.perf_counter() - start:.1f} s",
                flush=True,
            )
        return record

    def _hidden_in_chunks(self, inputs, upto=None):
        grid = inputs.shape[1:3]
        parts = [self._layer_forward(inputs[chunk], upto=upto)[0]
                 for chunk in self._image_chunks(inputs.shape[0], grid)]
        return np.concatenate(parts, axis=0)

    # ------------------------------------------------------------ evaluation

    def loglikelihood(self, images):
        """Log-density of every scored pixel, in nats.

        Parameters
        ----------
        images : ndarray of shape (n_images, height, width[, n_channels])

        Returns
        -------
        ndarray of shape (n_images, height - k, width - 2k)
            ``log p(pixel | pixels above and to the left)`` for every scored
            pixel (see :attr:`scored_region`), jointly over all channels and
            including the whitening's log-Jacobian.
        """
        self._check_fitted()
        array, _ = self._validate_images(images, channels=self.n_channels_)
        with single_threaded_blas():
            return self._loglikelihood(array)

    def _loglikelihood(self, array):
        grid = output_grid_shape(array.shape, self.input_mask_.shape)
        result = np.empty((array.shape[0],) + grid)
        for chunk in self._image_chunks(array.shape[0], grid):
            inputs, outputs = self._preprocess(array[chunk])
            hidden, _ = self._layer_forward(inputs)
            h = hidden.reshape(-1, hidden.shape[-1])
            y = outputs.reshape(-1, outputs.shape[-1])
            loglik = self.mcgsm_._forward_backward(h, y, False, False)[0]
            result[chunk] = loglik.reshape(hidden.shape[:3]) + self._log_jacobian()
        return result

    def evaluate(self, images):
        """Average negative log-likelihood in bits per pixel per channel.

        Equals ``-mean(loglikelihood(images)) / ln(2) / n_channels`` over the
        scored pixels.  The value refers to the intensity scale of the images;
        for 8-bit data that were divided by ``s`` before fitting, subtract
        ``log2(s)`` to get bits per pixel on the 0-255 scale
        (``ride.datasets.bits_per_pixel_8bit`` does this).
        """
        return float(-np.mean(self.loglikelihood(images)) / (_LN2 * self.n_channels_))

    def score_samples(self, images):
        """Total log-likelihood of each image's scored pixels, in nats.

        Returns
        -------
        ndarray of shape (n_images,)
        """
        return self.loglikelihood(images).sum(axis=(1, 2))

    def score(self, images):
        """Average log-likelihood in bits per pixel per channel (higher is better).

        This is ``-evaluate(images)``.
        """
        return -self.evaluate(images)

    def hidden_states(self, images, layer=None):
        """Hidden states of a spatial LSTM layer.

        Parameters
        ----------
        images : ndarray of shape (n_images, height, width[, n_channels])
        layer : int or None
            1-based layer index; ``None`` means the top layer.

        Returns
        -------
        ndarray of shape (n_images, height - k, width - 2k, num_hiddens)
        """
        self._check_fitted()
        if layer is None:
            layer = len(self.layers_)
        if isinstance(layer, bool) or not (
            isinstance(layer, numbers.Integral) and 1 <= layer <= len(self.layers_)
        ):
            raise ValueError(
                f"layer must be between 1 and {len(self.layers_)}, got {layer!r}."
            )
        array, _ = self._validate_images(images, channels=self.n_channels_)
        with single_threaded_blas():
            inputs, _ = self._preprocess(array)
            return self._hidden_in_chunks(inputs, upto=layer)

    def gradient(self, images):
        """Gradient of the total log-likelihood with respect to the pixels.

        Returns
        -------
        ndarray, shape and layout of ``images``
            ``d sum(loglikelihood(images)) / d images`` in nats per unit of
            intensity.
        """
        self._check_fitted()
        array, was_3d = self._validate_images(images, channels=self.n_channels_)
        with single_threaded_blas():
            grad = self._gradient(array)
        return grad[..., 0] if was_3d else grad

    def _gradient(self, array):
        grid = output_grid_shape(array.shape, self.input_mask_.shape)
        grad = np.zeros_like(array)
        for chunk in self._image_chunks(array.shape[0], grid):
            inputs, outputs = self._preprocess(array[chunk])
            hidden, caches = self._layer_forward(inputs, keep=True)
            h = hidden.reshape(-1, hidden.shape[-1])
            y = outputs.reshape(-1, outputs.shape[-1])
            _, _, grad_h, grad_y = self.mcgsm_._forward_backward(h, y, False, True)
            keep = self._scored_sites(hidden.shape)
            if not isinstance(keep, slice):
                grad_h[~keep] = 0.0
                grad_y[~keep] = 0.0
            _, grad_x = self._layer_backward(
                caches, grad_h.reshape(hidden.shape), 0, input_gradient=True
            )
            grad_x = grad_x.reshape(-1, inputs.shape[-1])
            if self.preconditioner_ is not None:
                grad_x, grad_y = self.preconditioner_.adjust_gradient(grad_x, grad_y)
            grad[chunk] = scatter(
                grad_x.reshape(inputs.shape), grad_y.reshape(outputs.shape),
                array[chunk].shape, self.input_mask_, self.output_mask_,
            )
        return grad

    # --------------------------------------------------------------- sampling

    def _check_mask(self, mask, shape):
        """Validate a boolean mask of shape (H, W) or (N, H, W); return (N, H, W)."""
        N, H, W, _ = shape
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(
                f"mask must be a boolean array, got dtype {mask.dtype}; use e.g. "
                "mask.astype(bool) or a comparison like mask > 0."
            )
        if mask.shape == (H, W):
            mask = np.broadcast_to(mask, (N, H, W))
        elif mask.shape != (N, H, W):
            raise ValueError(
                f"mask must have shape {(H, W)} or {(N, H, W)} to match images of "
                f"shape {shape[:3]}, got {mask.shape}."
            )
        rows, cols = self.scored_region
        inside = np.zeros((H, W), dtype=bool)
        inside[rows, cols] = True
        if np.any(mask & ~inside):
            i_off, j_off = output_offset(self.output_mask_)
            raise ValueError(
                "mask selects pixels the model never predicts: with nb_size="
                f"{self.input_mask_.shape[1]} the top {i_off} rows and the "
                f"{j_off} leftmost and rightmost columns are context only."
            )
        return mask

    def _check_bounds(self, min_values, max_values):
        """Per-channel bounds as arrays of shape (C,) (or None), validated."""
        bounds = []
        for name, values in (("min_values", min_values), ("max_values", max_values)):
            if values is None:
                bounds.append(None)
                continue
            values = np.asarray(values, dtype=np.float64)
            if values.ndim == 0:
                values = np.full(self.n_channels_, float(values))
            if values.shape != (self.n_channels_,):
                raise ValueError(
                    f"{name} must be a scalar or have one value per channel "
                    f"({self.n_channels_}), got shape {values.shape}."
                )
            if np.any(np.isnan(values)):
                raise ValueError(f"{name} must not be NaN, got {values}.")
            bounds.append(values)
        low, high = bounds
        if low is not None and high is not None and np.any(low > high):
            raise ValueError(f"min_values {low} exceed max_values {high}.")
        return low, high

    def sample(self, images, mask=None, min_values=None, max_values=None,
               random_state=None, return_loglik=False):
        """Draw pixels in raster order from the model.

        Every scored pixel (or, with ``mask``, every scored pixel where the mask
        is True) is replaced by a draw from its conditional density given the
        pixels above and to its left, including pixels drawn earlier.  The
        input is not modified.

        Parameters
        ----------
        images : ndarray of shape (n_images, height, width[, n_channels])
            Initial content; provides the context and all pixels not redrawn.
        mask : ndarray of bool, shape (height, width) or (n_images, height, width)
            Pixels to redraw; others are returned bit for bit unchanged.
        min_values, max_values : float or array of shape (n_channels,), optional
            Bounds applied to every drawn pixel (per channel).
        random_state : None, int or numpy.random.Generator
            ``None`` continues the model's own generator.
        return_loglik : bool, default=False
            Also return the log-likelihood (nats, after clipping) of each drawn
            pixel, shape ``(n_images, height - k, width - 2k)``, NaN where
            nothing was drawn.

        Returns
        -------
        samples : ndarray of float64, shape of ``images``
        loglik : ndarray, only if ``return_loglik``
        """
        self._check_fitted()
        array, was_3d = self._validate_images(images, channels=self.n_channels_)
        mask = None if mask is None else self._check_mask(mask, array.shape)
        low, high = self._check_bounds(min_values, max_values)
        rng = self._rng if random_state is None else check_random_state(random_state)
        with single_threaded_blas():
            samples, loglik = self._sample(array, mask, low, high, rng, return_loglik)
        if was_3d:
            samples = samples[..., 0]
        return (samples, loglik) if return_loglik else samples

    def _sample(self, out, mask, low, high, rng, want_loglik=False):
        N, _, _, C = out.shape
        R, Q = output_grid_shape(out.shape, self.input_mask_.shape)
        i_off, j_off = output_offset(self.output_mask_)
        positions = mask_positions(self.input_mask_, C)
        chans, prow, pcol = positions[:, 0], positions[:, 1], positions[:, 2]
        num_hiddens = self.layers_[0].num_hiddens
        zeros = np.zeros((N, num_hiddens))
        h_maps = [np.zeros((N, R, Q, num_hiddens)) for _ in self.layers_]
        c_maps = [np.zeros((N, R, Q, num_hiddens)) for _ in self.layers_]
        loglik = np.full((N, R, Q), np.nan)
        pre = self.preconditioner_
        progress = Progress(R * Q, "[RIDE] sampling", "sites", enabled=self.verbose >= 1)
        for i in range(R):
            for j in range(Q):
                x = out[:, i + prow, j + pcol, chans]
                x_white = x if pre is None else pre.transform(x)
                h = x_white
                for index, layer in enumerate(self.layers_):
                    left = (h_maps[index][:, i, j - 1], c_maps[index][:, i, j - 1]) if (
                        j > 0) else (zeros, zeros)
                    up = (h_maps[index][:, i - 1, j], c_maps[index][:, i - 1, j]) if (
                        i > 0) else (zeros, zeros)
                    h, c = slstm_step(layer.weights, layer.biases, h, left[0], left[1],
                                      up[0], up[1], layer.extended, layer.nonlinearity)
                    h_maps[index][:, i, j] = h
                    c_maps[index][:, i, j] = c
                rows = (np.arange(N) if mask is None
                        else np.flatnonzero(mask[:, i + i_off, j + j_off]))
                progress.update(1)
                if rows.size == 0:
                    continue
                y_white = self.mcgsm_.sample(h[rows], random_state=rng)
                if pre is None:
                    y = y_white
                else:
                    y = pre.inverse_transform(x_white[rows], y_white)[1]
                if low is not None or high is not None:
                    y = np.clip(y, low, high)
                    y_white = y if pre is None else pre.transform(x[rows], y)[1]
                out[rows, i + i_off, j + j_off, :] = y
                if not want_loglik:
                    continue
                loglik[rows, i, j] = self.mcgsm_._forward_backward(
                    np.ascontiguousarray(h[rows]), np.ascontiguousarray(y_white),
                    False, False,
                )[0] + self._log_jacobian()
        return out, loglik

    def sample_images(self, num_images, height, width, min_values=None,
                      max_values=None, random_state=None):
        """Draw brand-new images of a given size.

        A canvas larger by the context border is filled with Gaussian noise of
        the training pixels' mean and standard deviation, every scored pixel is
        drawn in raster order, and the border is cropped, so the returned
        pixels all come from the model (Theis & Bethge, 2015, section 3.3).

        Returns
        -------
        ndarray of shape (num_images, height, width[, n_channels])
            Without a channel axis for single-channel models.
        """
        self._check_fitted()
        for name, value in (("num_images", num_images), ("height", height),
                            ("width", width)):
            check_positive_int(value, name)
        rng = self._rng if random_state is None else check_random_state(random_state)
        rows, cols = self.scored_region
        i_off, j_off = output_offset(self.output_mask_)
        right = self.input_mask_.shape[1] - j_off - 1
        canvas = rng.standard_normal(
            (num_images, height + i_off, width + j_off + right, self.n_channels_)
        ) * self.pixel_std_ + self.pixel_mean_
        samples = self.sample(canvas, min_values=min_values, max_values=max_values,
                              random_state=rng)
        samples = samples[:, rows, cols]
        return samples[..., 0] if self.n_channels_ == 1 else samples

    def inpaint(self, images, mask, num_iter=50, step_size=0.5, num_candidates=3,
                min_values=None, max_values=None, random_state=None):
        """Fill masked pixels so that they agree with the context on all sides.

        Method: the masked pixels are first drawn ``num_candidates`` times by
        raster-order sampling (which sees only context above and to the left);
        the candidate with the highest total log-likelihood is kept.  Then
        ``num_iter`` steps of gradient ascent on the total log-likelihood of
        the image (which includes the pixels below and to the right of the
        hole) refine the masked pixels, a MAP estimate.  Each step moves pixels
        by ``step_size * pixel_variance * gradient``; a step that lowers the
        log-likelihood is undone and the step size halved.

        Parameters
        ----------
        images : ndarray of shape (n_images, height, width[, n_channels])
        mask : ndarray of bool, shape (height, width) or (n_images, height, width)
            Pixels to fill; all other pixels are returned unchanged (as float64,
            so bit for bit for float64 input).
        num_iter : int, default=50
        step_size : float, default=0.5
        num_candidates : int, default=3
        min_values, max_values : float or array of shape (n_channels,), optional
        random_state : None, int or numpy.random.Generator

        Returns
        -------
        ndarray of float64, shape of ``images``
        """
        self._check_fitted()
        array, was_3d = self._validate_images(images, channels=self.n_channels_)
        mask = self._check_mask(mask, array.shape)
        low, high = self._check_bounds(min_values, max_values)
        for name, value, minimum in (("num_iter", num_iter, 0),
                                     ("num_candidates", num_candidates, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
                value < minimum
            ):
                raise ValueError(
                    f"{name} must be an integer of at least {minimum}, got {value!r}."
                )
        if not (isinstance(step_size, numbers.Real) and np.isfinite(step_size)
                and step_size > 0):
            raise ValueError(f"step_size must be a positive float, got {step_size!r}.")
        rng = self._rng if random_state is None else check_random_state(random_state)
        best, best_score = None, None
        with single_threaded_blas():
            for _ in range(num_candidates):
                candidate, _ = self._sample(array.copy(), mask, low, high, rng)
                score = self._loglikelihood(candidate).sum(axis=(1, 2))
                if best is None:
                    best, best_score = candidate, score
                else:
                    better = score > best_score
                    best[better] = candidate[better]
                    best_score = np.where(better, score, best_score)
            sel = np.broadcast_to(mask[..., None], best.shape)
            variance = np.broadcast_to(self.pixel_std_**2, best.shape)
            steps = np.full(best.shape[0], float(step_size))
            for _ in range(num_iter):
                grad = self._gradient(best)
                proposal = best + np.where(
                    sel, steps[:, None, None, None] * variance * grad, 0.0
                )
                if low is not None or high is not None:
                    proposal = np.where(sel, np.clip(proposal, low, high), proposal)
                score = self._loglikelihood(proposal).sum(axis=(1, 2))
                better = score > best_score
                best[better] = proposal[better]
                best_score = np.where(better, score, best_score)
                steps = np.where(better, steps, steps / 2)
        best = np.where(sel, best, array)
        return best[..., 0] if was_3d else best

    # ------------------------------------------------------------ persistence

    def save(self, path):
        """Save to an HDF5 file, atomically (see ``ride.io.save``)."""
        from .io import save

        self._check_fitted()
        save(self, path)

    def _to_hdf5(self, group):
        self._check_fitted()
        group.attrs["class"] = type(self).__name__
        group.attrs["epoch_history"] = json.dumps(self.epoch_history_)
        hyper = group.create_group("hyperparameters")
        for name, value in self.get_params().items():
            if name == "random_state":
                value = value if isinstance(value, numbers.Integral) else -1
            if value is None:
                continue
            hyper.attrs[name] = value
        group.attrs["n_channels"] = self.n_channels_
        group.attrs["n_epochs"] = self.n_epochs_
        group.create_dataset("input_mask", data=self.input_mask_)
        group.create_dataset("output_mask", data=self.output_mask_)
        group.create_dataset("pixel_mean", data=self.pixel_mean_)
        group.create_dataset("pixel_std", data=self.pixel_std_)
        group.create_dataset("loss_history", data=np.asarray(self.loss_history_))
        layers = group.create_group("layers")
        for index, layer in enumerate(self.layers_):
            g = layers.create_group(str(index))
            g.attrs["num_inputs"] = layer.num_inputs
            g.attrs["num_hiddens"] = layer.num_hiddens
            g.attrs["extended"] = layer.extended
            g.attrs["nonlinearity"] = layer.nonlinearity
            g.create_dataset("weights", data=layer.weights)
            g.create_dataset("biases", data=layer.biases)
        self.mcgsm_._to_hdf5(group.create_group("mcgsm"))
        if self.preconditioner_ is not None:
            self.preconditioner_._to_hdf5(group.create_group("preconditioner"))

    @classmethod
    def _from_hdf5(cls, group):
        hyper = dict(group["hyperparameters"].attrs)
        params = {}
        for name in cls._param_names():
            if name in hyper:
                value = hyper[name]
                params[name] = value.item() if hasattr(value, "item") else value
        if params.get("random_state") == -1:
            params["random_state"] = None
        model = cls(**params)
        model.n_channels_ = int(group.attrs["n_channels"])
        model.n_epochs_ = int(group.attrs["n_epochs"])
        model.input_mask_ = group["input_mask"][()]
        model.output_mask_ = group["output_mask"][()]
        model.pixel_mean_ = group["pixel_mean"][()]
        model.pixel_std_ = group["pixel_std"][()]
        model.loss_history_ = list(group["loss_history"][()])
        model.epoch_history_ = json.loads(group.attrs.get("epoch_history", "[]"))
        model.layers_ = []
        for index in range(len(group["layers"])):
            g = group["layers"][str(index)]
            layer = SpatialLSTM(
                int(g.attrs["num_inputs"]), int(g.attrs["num_hiddens"]),
                extended=bool(g.attrs["extended"]),
                nonlinearity=str(g.attrs["nonlinearity"]),
            )
            layer.weights = g["weights"][()]
            layer.biases = g["biases"][()]
            model.layers_.append(layer)
        model.mcgsm_ = MCGSM._from_hdf5(group["mcgsm"])
        model.preconditioner_ = (
            WhiteningPreconditioner._from_hdf5(group["preconditioner"])
            if "preconditioner" in group else None
        )
        model._check_consistency()
        # The random stream restarts from random_state; pickle keeps its position.
        model._rng = check_random_state(model.random_state)
        return model

    def _check_consistency(self):
        """Raise ``ValueError`` if loaded parts do not fit together."""
        num_inputs = mask_positions(self.input_mask_, self.n_channels_).shape[0]
        expected = [
            ("first layer inputs", self.layers_[0].num_inputs, num_inputs),
            ("MCGSM inputs", self.mcgsm_.dim_in, self.layers_[-1].num_hiddens),
            ("MCGSM outputs", self.mcgsm_.dim_out, self.n_channels_),
        ]
        for upper, lower in zip(self.layers_[1:], self.layers_[:-1]):
            expected.append(("layer inputs", upper.num_inputs, lower.num_hiddens))
        pre = self.preconditioner_
        if pre is not None:
            expected += [("whitening inputs", pre.dim_in, num_inputs),
                         ("whitening outputs", pre.dim_out, self.n_channels_)]
        for what, found, wanted in expected:
            if found != wanted:
                raise ValueError(
                    f"Inconsistent saved model: {what} is {found}, expected {wanted}."
                )
