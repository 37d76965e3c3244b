"""Causal neighbourhoods: masks, extraction of training pairs and its adjoint.

RIDE models an image pixel by pixel in raster order.  The conditional density of
a pixel depends on a *causal neighbourhood*: the pixels above it and to its left
(Theis & Bethge, 2015, Section 2).  A neighbourhood is described
by two boolean masks of the same shape ``(h, w)``, the input mask (the pixels a
model may look at) and the output mask (the pixel it predicts).  Sliding the
masks over an image gives one ``(inputs, outputs)`` pair per window position.

Conventions shared by every function in this module:

* Image batches have shape ``(N, H, W, C)``.
* A window's top-left corner runs over ``i in [0, H - h]`` and
  ``j in [0, W - w]``, so the *output grid* has ``R = H - h + 1`` rows and
  ``Q = W - w + 1`` columns.  Window ``(i, j)`` predicts the image pixel
  ``(i + i_off, j + j_off)`` where ``(i_off, j_off)`` is :func:`output_offset`.
* Within a window the masked positions are taken in row-major order.  With
  several channels the blocks are concatenated channel-major: every input of
  channel 0, then every input of channel 1, and so on; outputs likewise.
* A mask may be 2-D, ``(h, w)``, and is then applied to every channel, or 3-D,
  ``(h, w, C)``, with plane ``m`` used for channel ``m``.

:func:`extract` and :func:`scatter` are built on one index map (the list of
``(channel, row, column)`` triples returned by :func:`mask_positions`), so the
ordering of the features can never differ between the two.
"""

import numbers

import numpy as np

__all__ = [
    "causal_masks",
    "validate_masks",
    "output_offset",
    "mask_positions",
    "output_grid_shape",
    "extract",
    "scatter",
    "padding_for_patches",
]


def causal_masks(nb_size):
    """Default causal neighbourhood masks of RIDE for a single output pixel.

    Parameters
    ----------
    nb_size : int
        Odd neighbourhood width ``2k + 1``, at least 3.

    Returns
    -------
    input_mask : ndarray of shape (k + 1, 2k + 1), dtype bool
        True on the ``k`` top rows and on the ``k`` pixels left of the output
        in the last row: ``2k(k + 1)`` inputs.
    output_mask : ndarray of shape (k + 1, 2k + 1), dtype bool
        True at ``(k, k)`` only.

    Raises
    ------
    ValueError
        If ``nb_size`` is even or smaller than 3.
    TypeError
        If ``nb_size`` is not an integer.

    Notes
    -----
    These are the default masks of RIDE (Theis & Bethge, 2015, Section 2;
    cmt's ``generate_masks`` with one output).  The neighbourhood also
    reaches ``k`` columns to the right of the predicted pixel in the rows above
    it, which the two-dimensional recurrence alone cannot see.

    Examples
    --------
    >>> input_mask, output_mask = causal_masks(3)
    >>> input_mask.astype(int)
    array([[1, 1, 1],
           [1, 0, 0]])
    >>> output_mask.astype(int)
    array([[0, 0, 0],
           [0, 1, 0]])
    """
    if isinstance(nb_size, bool) or not isinstance(nb_size, numbers.Integral):
        raise TypeError(
            f"nb_size must be an integer, got {nb_size!r} of type "
            f"{type(nb_size).__name__}"
        )
    nb_size = int(nb_size)
    if nb_size < 3 or nb_size % 2 == 0:
        raise ValueError(
            f"nb_size must be odd and at least 3 (3, 5, 7, ...), got {nb_size}; "
            "an even size has no centred output pixel"
        )

    k = nb_size // 2
    input_mask = np.zeros((k + 1, nb_size), dtype=bool)
    input_mask[:k, :] = True
    input_mask[k, :k] = True
    output_mask = np.zeros_like(input_mask)
    output_mask[k, k] = True
    return input_mask, output_mask


def _as_mask(mask, name):
    """Return ``mask`` as a boolean array after checking dtype and rank."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if not (
            np.issubdtype(mask.dtype, np.integer)
            or np.issubdtype(mask.dtype, np.floating)
        ):
            raise TypeError(
                f"{name} must be a boolean array, got dtype {mask.dtype}"
            )
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError(
                f"{name} must contain only 0/1 or False/True, got values "
                f"{np.unique(mask)[:10]}"
            )
        mask = mask != 0
    if mask.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have shape (h, w) or (h, w, C), got shape {mask.shape}"
        )
    return mask


def validate_masks(input_mask, output_mask):
    """Check that a pair of neighbourhood masks is usable.

    Parameters
    ----------
    input_mask, output_mask : array-like of shape (h, w) or (h, w, C)
        Boolean (or 0/1) masks of the same shape.

    Returns
    -------
    None

    Raises
    ------
    ValueError
        If the shapes differ, the masks overlap, the output mask is empty, or a
        mask holds values other than 0 and 1.
    TypeError
        If a mask is not boolean or numeric.
    """
    input_mask = _as_mask(input_mask, "input_mask")
    output_mask = _as_mask(output_mask, "output_mask")
    if input_mask.shape != output_mask.shape:
        raise ValueError(
            f"input_mask and output_mask must have the same shape, got "
            f"{input_mask.shape} and {output_mask.shape}"
        )
    overlap = np.argwhere(input_mask & output_mask)
    if overlap.size:
        raise ValueError(
            f"input_mask and output_mask overlap at {len(overlap)} position(s), "
            f"first at {tuple(int(v) for v in overlap[0])}; a pixel cannot be "
            "both observed and predicted"
        )
    if not output_mask.any():
        raise ValueError("output_mask is empty; it must select at least one pixel")


def output_offset(output_mask):
    """Position of the predicted pixel within the window.

    Parameters
    ----------
    output_mask : array-like of shape (h, w) or (h, w, C)
        Output mask selecting exactly one spatial position (in one or several
        channels).

    Returns
    -------
    i_off, j_off : int
        Row and column of the output pixel in the mask.  Window ``(i, j)`` of
        :func:`extract` predicts image pixel ``(i + i_off, j + j_off)``.

    Raises
    ------
    ValueError
        If the mask is empty or selects more than one spatial position.

    Notes
    -----
    The original implementation only searched the diagonal of the mask; here
    the actual nonzero position is used, so any placement of the output works.
    """
    output_mask = _as_mask(output_mask, "output_mask")
    spatial = output_mask.any(axis=2) if output_mask.ndim == 3 else output_mask
    positions = np.argwhere(spatial)
    if len(positions) == 0:
        raise ValueError("output_mask is empty; it must select one pixel")
    if len(positions) > 1:
        raise ValueError(
            f"output_mask selects {len(positions)} spatial positions "
            f"({[tuple(int(v) for v in p) for p in positions[:4]]}...); "
            "the output offset is defined only for a single output pixel"
        )
    i_off, j_off = positions[0]
    return int(i_off), int(j_off)


def mask_positions(mask, num_channels):
    """The index map shared by :func:`extract` and :func:`scatter`.

    Parameters
    ----------
    mask : array-like of shape (h, w) or (h, w, C)
        Boolean mask.  A 2-D mask is used for every channel; a 3-D mask must
        have ``C == num_channels``.
    num_channels : int
        Number of image channels ``C``.

    Returns
    -------
    positions : ndarray of shape (n, 3), dtype intp
        Rows ``(channel, row, column)`` in feature order: channel-major, then
        row-major within the window.  ``n`` is ``C`` times the number of True
        entries of a 2-D mask, or the number of True entries of a 3-D mask.
    """
    mask = _as_mask(mask, "mask")
    if mask.ndim == 2:
        mask = np.repeat(mask[:, :, None], num_channels, axis=2)
    elif mask.shape[2] != num_channels:
        raise ValueError(
            f"a 3-D mask of shape {mask.shape} has {mask.shape[2]} channel "
            f"plane(s) but the images have {num_channels} channel(s)"
        )
    # argwhere on the (C, h, w) transpose enumerates channel-major, row-major.
    channel_first = np.transpose(mask, (2, 0, 1))
    return np.argwhere(channel_first).astype(np.intp, copy=False)


def output_grid_shape(image_shape, mask_shape):
    """Size ``(R, Q)`` of the grid of window positions.

    Parameters
    ----------
    image_shape : tuple of int
        ``(N, H, W, C)``.
    mask_shape : tuple of int
        ``(h, w)`` or ``(h, w, C)``.

    Returns
    -------
    R, Q : int
        ``H - h + 1`` and ``W - w + 1``.

    Raises
    ------
    ValueError
        If the image is smaller than the mask in either direction.
    """
    _, height, width, _ = image_shape
    h, w = mask_shape[:2]
    if height < h or width < w:
        raise ValueError(
            f"images of shape {tuple(image_shape)} (N, H, W, C) are smaller than "
            f"the masks of shape {tuple(mask_shape)}; each image needs at least "
            f"{h} rows and {w} columns (pad it, e.g. with padding_for_patches)"
        )
    return height - h + 1, width - w + 1


def _check_images(images):
    """Validate an image batch for :func:`extract`; return it as an array."""
    images = np.asarray(images)
    if images.ndim != 4:
        hint = ""
        if images.ndim == 3:
            hint = " (add a channel axis with images[..., None])"
        raise ValueError(
            f"images must have shape (N, H, W, C), got shape {images.shape}{hint}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(
            f"images must be a floating-point array, got dtype {images.dtype}; "
            "convert with images.astype(np.float64)"
        )
    return images


def _gather(images, positions, grid):
    """Copy the masked pixels of every window into a feature array.

    Parameters
    ----------
    images : ndarray of shape (N, H, W, C)
    positions : ndarray of shape (n, 3)
        ``(channel, row, column)`` triples from :func:`mask_positions`.
    grid : tuple of int
        Output grid ``(R, Q)``.

    Returns
    -------
    features : ndarray of shape (N, R, Q, n), same dtype as ``images``
    """
    num_rows, num_cols = grid
    features = np.empty(images.shape[:1] + (num_rows, num_cols, len(positions)),
                        dtype=images.dtype)
    # One strided copy per mask entry; the number of entries is small.
    for k, (c, di, dj) in enumerate(positions):
        features[..., k] = images[:, di:di + num_rows, dj:dj + num_cols, c]
    return features


def _accumulate(target, features, positions):
    """Add each feature back at its pixel; the adjoint of :func:`_gather`.

    ``target`` of shape (N, H, W, C) is modified in place.
    """
    num_rows, num_cols = features.shape[1:3]
    for k, (c, di, dj) in enumerate(positions):
        target[:, di:di + num_rows, dj:dj + num_cols, c] += features[..., k]


def extract(images, input_mask, output_mask):
    """Neighbourhoods and predicted pixels of every window position.

    Parameters
    ----------
    images : array-like of shape (N, H, W, C), floating dtype
        Image batch.  It is never modified.
    input_mask, output_mask : array-like of shape (h, w) or (h, w, C)
        Non-overlapping boolean masks (see :func:`validate_masks`).

    Returns
    -------
    inputs : ndarray of shape (N, R, Q, C * n_in)
        Neighbourhood of every window, ``R = H - h + 1``, ``Q = W - w + 1``.
        Features are channel-major, row-major within the window.
    outputs : ndarray of shape (N, R, Q, C * n_out)
        The predicted pixels, in the same order.  Both arrays have the dtype of
        ``images`` (float64 stays float64, float32 stays float32).  With a 3-D
        mask the last dimensions are the total counts over the channel planes.

    Raises
    ------
    ValueError
        If the masks are invalid, ``images`` is not 4-D, or an image is smaller
        than the masks.
    TypeError
        If ``images`` is not floating point.

    See Also
    --------
    scatter : the adjoint (transpose) of this linear map.

    Examples
    --------
    >>> img = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    >>> inputs, outputs = extract(img, [[1, 1], [1, 0]], [[0, 0], [0, 1]])
    >>> inputs.ravel(), outputs.ravel()
    (array([1., 2., 3.]), array([4.]))
    """
    validate_masks(input_mask, output_mask)
    images = _check_images(images)
    grid = output_grid_shape(images.shape, np.shape(input_mask))
    num_channels = images.shape[3]

    inputs = _gather(images, mask_positions(input_mask, num_channels), grid)
    outputs = _gather(images, mask_positions(output_mask, num_channels), grid)
    return inputs, outputs


def scatter(grad_inputs, grad_outputs, image_shape, input_mask, output_mask):
    """Adjoint of :func:`extract`: add features back at their pixels.

    For any images ``x`` and feature arrays ``(u, v)`` of matching shapes,
    ``<extract(x), (u, v)> == <x, scatter(u, v)>``.  This is how a gradient with
    respect to the neighbourhoods and outputs becomes a gradient with respect
    to the images.

    Parameters
    ----------
    grad_inputs : array-like of shape (N, R, Q, C * n_in) or None
        Values for the input positions; None counts as zeros.
    grad_outputs : array-like of shape (N, R, Q, C * n_out) or None
        Values for the output positions; None counts as zeros.
    image_shape : tuple of int
        ``(N, H, W, C)``, the shape of the images that were extracted from.
    input_mask, output_mask : array-like of shape (h, w) or (h, w, C)
        The masks that were given to :func:`extract`.

    Returns
    -------
    grad_images : ndarray of shape image_shape
        Sum over all windows of the values placed at their pixels; pixels
        covered by several windows accumulate.  The dtype is the common
        floating type of the given arrays (float64 if both are None).

    Raises
    ------
    ValueError
        If a gradient's shape does not match ``image_shape`` and the masks.
    """
    validate_masks(input_mask, output_mask)
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 4:
        raise ValueError(
            f"image_shape must be (N, H, W, C), got {image_shape}"
        )
    num_images, _, _, num_channels = image_shape
    grid = output_grid_shape(image_shape, np.shape(input_mask))
    pairs = [
        (grad_inputs, mask_positions(input_mask, num_channels), "grad_inputs"),
        (grad_outputs, mask_positions(output_mask, num_channels), "grad_outputs"),
    ]

    given = []
    for values, positions, name in pairs:
        if values is None:
            continue
        values = np.asarray(values)
        expected = (num_images,) + grid + (len(positions),)
        if values.shape != expected:
            raise ValueError(
                f"{name} must have shape {expected} for images of shape "
                f"{image_shape} and these masks, got {values.shape}"
            )
        given.append((values, positions))
    dtypes = [values.dtype for values, _ in given]
    if dtypes and all(np.issubdtype(dtype, np.floating) for dtype in dtypes):
        dtype = np.result_type(*dtypes)
    else:
        dtype = np.dtype(np.float64)

    grad_images = np.zeros(image_shape, dtype=dtype)
    for values, positions in given:
        _accumulate(grad_images, values, positions)
    return grad_images


def padding_for_patches(input_mask, output_mask):
    """Zero padding that makes every pixel of a patch an output site.

    Parameters
    ----------
    input_mask, output_mask : array-like of shape (h, w) or (h, w, C)
        Neighbourhood masks with a single output pixel at ``(i_off, j_off)``.

    Returns
    -------
    ((top, bottom), (left, right)) : tuple of tuple of int
        ``top = i_off``, ``bottom = h - i_off - 1``, ``left = j_off``,
        ``right = w - j_off - 1``.  Padding an ``(H, W)`` patch this way gives an
        output grid of exactly ``H x W`` whose site ``(i, j)`` predicts patch
        pixel ``(i, j)``.  Suitable for ``np.pad`` on the H and W axes.

    Examples
    --------
    >>> padding_for_patches(*causal_masks(5))
    ((2, 0), (2, 2))
    """
    validate_masks(input_mask, output_mask)
    i_off, j_off = output_offset(output_mask)
    h, w = np.shape(output_mask)[:2]
    return (i_off, h - i_off - 1), (j_off, w - j_off - 1)
