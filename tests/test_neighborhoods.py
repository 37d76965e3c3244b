"""Tests for ride.neighborhoods: masks, extraction and its adjoint."""

import numpy as np
import pytest

from ride.neighborhoods import (
    causal_masks,
    extract,
    mask_positions,
    output_grid_shape,
    output_offset,
    padding_for_patches,
    scatter,
    validate_masks,
)


def naive_extract(images, input_mask, output_mask):
    """Slow, obviously correct twin of extract for 2-D or 3-D masks."""
    num_images, height, width, num_channels = images.shape
    h, w = input_mask.shape[:2]

    def plane(mask, c):
        return mask if mask.ndim == 2 else mask[:, :, c]

    inputs, outputs = [], []
    for n in range(num_images):
        for i in range(height - h + 1):
            for j in range(width - w + 1):
                window = images[n, i:i + h, j:j + w, :]
                x, y = [], []
                for c in range(num_channels):
                    for r in range(h):
                        for q in range(w):
                            if plane(input_mask, c)[r, q]:
                                x.append(window[r, q, c])
                            if plane(output_mask, c)[r, q]:
                                y.append(window[r, q, c])
                inputs.append(x)
                outputs.append(y)
    grid = (num_images, height - h + 1, width - w + 1)
    return (np.array(inputs).reshape(grid + (-1,)),
            np.array(outputs).reshape(grid + (-1,)))


@pytest.mark.parametrize(
    "nb_size, shape, num_inputs",
    [(3, (2, 3), 4), (5, (3, 5), 12), (7, (4, 7), 24), (9, (5, 9), 40)],
)
def test_causal_masks_shape_table(nb_size, shape, num_inputs):
    input_mask, output_mask = causal_masks(nb_size)
    k = nb_size // 2
    assert input_mask.dtype == bool and output_mask.dtype == bool
    assert input_mask.shape == shape and output_mask.shape == shape
    assert input_mask.sum() == num_inputs == 2 * k * (k + 1)
    assert output_mask.sum() == 1 and output_mask[k, k]
    assert not (input_mask & output_mask).any()
    # Causal: everything above the output row, and only the left part of it.
    assert input_mask[:k].all()
    assert input_mask[k, :k].all() and not input_mask[k, k:].any()
    assert output_offset(output_mask) == (k, k)


@pytest.mark.parametrize("bad", [1, 2, 4, 6, 0, -3])
def test_causal_masks_rejects_even_or_small(bad):
    with pytest.raises(ValueError, match="odd and at least 3"):
        causal_masks(bad)


@pytest.mark.parametrize("bad", [5.0, "5", True, None])
def test_causal_masks_rejects_non_integers(bad):
    with pytest.raises(TypeError, match="integer"):
        causal_masks(bad)


def test_causal_masks_accepts_numpy_integers():
    assert causal_masks(np.int64(5))[0].shape == (3, 5)


def test_two_by_two_example():
    img = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    input_mask = np.array([[1, 1], [1, 0]], dtype=bool)
    output_mask = np.array([[0, 0], [0, 1]], dtype=bool)
    inputs, outputs = extract(img, input_mask, output_mask)
    assert inputs.shape == (1, 1, 1, 3) and outputs.shape == (1, 1, 1, 1)
    np.testing.assert_array_equal(inputs.ravel(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(outputs.ravel(), [4.0])


def test_exhaustive_extraction_outputs_are_shifted_image():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((64, 64))
    input_mask, output_mask = causal_masks(5)
    inputs, outputs = extract(img[None, :, :, None], input_mask, output_mask)
    assert inputs.shape == (1, 62, 60, 12) and outputs.shape == (1, 62, 60, 1)
    np.testing.assert_array_equal(outputs[0, :, :, 0], img[2:, 2:-2])
    # The input of site (i, j) is the causal neighbourhood of pixel (i+2, j+2).
    i, j = 17, 41
    expected = np.concatenate([img[i:i + 2, j:j + 5].ravel(), img[i + 2, j:j + 2]])
    np.testing.assert_array_equal(inputs[0, i, j], expected)


@pytest.mark.parametrize("nb_size", [3, 5])
@pytest.mark.parametrize("num_channels", [1, 3])
def test_extract_matches_naive_loop(nb_size, num_channels):
    rng = np.random.default_rng(1)
    images = rng.standard_normal((2, 9, 11, num_channels))
    masks = causal_masks(nb_size)
    fast = extract(images, *masks)
    slow = naive_extract(images, *masks)
    for a, b in zip(fast, slow):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_colour_is_channel_major():
    # Encode (channel, row, column) in the pixel values to read the order back.
    rows, cols, num_channels = 4, 5, 3
    r, q, c = np.meshgrid(np.arange(rows), np.arange(cols), np.arange(num_channels),
                          indexing="ij")
    images = (100.0 * c + 10.0 * r + q)[None]
    input_mask, output_mask = causal_masks(3)
    inputs, outputs = extract(images, input_mask, output_mask)
    first = inputs[0, 0, 0]
    assert first.shape == (12,)
    np.testing.assert_array_equal(first[:4], [0, 1, 2, 10])
    np.testing.assert_array_equal(first[4:8], [100, 101, 102, 110])
    np.testing.assert_array_equal(first[8:], [200, 201, 202, 210])
    np.testing.assert_array_equal(outputs[0, 0, 0], [11, 111, 211])


def test_three_dimensional_masks_match_naive_loop():
    # An observed channel (full square, no output) next to a causal channel.
    square = np.ones((3, 3), dtype=bool)
    causal_in, causal_out = causal_masks(3)
    causal_in = np.vstack([causal_in, np.zeros((1, 3), dtype=bool)])
    causal_out = np.vstack([causal_out, np.zeros((1, 3), dtype=bool)])
    input_mask = np.stack([square, causal_in], axis=2)
    output_mask = np.stack([np.zeros_like(square), causal_out], axis=2)
    images = np.random.default_rng(2).standard_normal((2, 7, 6, 2))
    fast = extract(images, input_mask, output_mask)
    slow = naive_extract(images, input_mask, output_mask)
    assert fast[0].shape[-1] == 9 + 4 and fast[1].shape[-1] == 1
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    grad = scatter(*fast, images.shape, input_mask, output_mask)
    assert grad.shape == images.shape


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dtype_preserved_and_input_untouched(dtype):
    images = np.random.default_rng(3).standard_normal((2, 6, 7, 1)).astype(dtype)
    before = images.copy()
    inputs, outputs = extract(images, *causal_masks(3))
    assert inputs.dtype == dtype and outputs.dtype == dtype
    np.testing.assert_array_equal(images, before)
    # The result is a copy: writing to it leaves the images alone.
    inputs[...] = 0
    np.testing.assert_array_equal(images, before)


def test_custom_mask_with_output_off_the_diagonal():
    input_mask = np.array([[1, 1, 1, 1],
                           [1, 1, 1, 1],
                           [1, 0, 0, 0]], dtype=bool)
    output_mask = np.zeros_like(input_mask)
    output_mask[2, 1] = True
    assert output_offset(output_mask) == (2, 1)
    assert padding_for_patches(input_mask, output_mask) == ((2, 0), (1, 2))
    img = np.arange(8.0 * 9).reshape(8, 9)
    _, outputs = extract(img[None, :, :, None], input_mask, output_mask)
    np.testing.assert_array_equal(outputs[0, :, :, 0], img[2:, 1:-2])


def test_output_offset_of_multichannel_mask():
    _, output_mask = causal_masks(5)
    stacked = np.stack([output_mask, output_mask], axis=2)
    assert output_offset(stacked) == (2, 2)


def test_padding_for_patches_gives_full_grid():
    input_mask, output_mask = causal_masks(5)
    (top, bottom), (left, right) = padding_for_patches(input_mask, output_mask)
    assert ((top, bottom), (left, right)) == ((2, 0), (2, 2))
    patch = np.random.default_rng(4).standard_normal((8, 8))
    padded = np.pad(patch, ((top, bottom), (left, right)))
    assert padded.shape == (10, 12)
    _, outputs = extract(padded[None, :, :, None], input_mask, output_mask)
    assert outputs.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(outputs[0, :, :, 0], patch)


@pytest.mark.parametrize("num_channels", [1, 3])
@pytest.mark.parametrize("nb_size", [3, 5])
def test_scatter_is_adjoint_of_extract(num_channels, nb_size):
    rng = np.random.default_rng(5)
    masks = causal_masks(nb_size)
    images = rng.standard_normal((3, 10, 13, num_channels))
    inputs, outputs = extract(images, *masks)
    grad_inputs = rng.standard_normal(inputs.shape)
    grad_outputs = rng.standard_normal(outputs.shape)
    back = scatter(grad_inputs, grad_outputs, images.shape, *masks)
    lhs = np.sum(inputs * grad_inputs) + np.sum(outputs * grad_outputs)
    rhs = np.sum(images * back)
    assert back.shape == images.shape and back.dtype == np.float64
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
    # Each part separately, with the other gradient absent.
    only_inputs = scatter(grad_inputs, None, images.shape, *masks)
    only_outputs = scatter(None, grad_outputs, images.shape, *masks)
    np.testing.assert_allclose(only_inputs + only_outputs, back, rtol=0, atol=1e-12)
    assert np.isclose(np.sum(inputs * grad_inputs), np.sum(images * only_inputs),
                      rtol=1e-12, atol=1e-12)


def test_scatter_of_ones_counts_windows():
    # Scattering ones counts how many windows use each pixel as an output.
    masks = causal_masks(3)
    shape = (1, 5, 6, 1)
    grid = output_grid_shape(shape, masks[0].shape)
    counts = scatter(None, np.ones((1,) + grid + (1,)), shape, *masks)
    expected = np.zeros((5, 6))
    expected[1:, 1:-1] = 1
    np.testing.assert_array_equal(counts[0, :, :, 0], expected)


def test_scatter_both_none_gives_zeros():
    out = scatter(None, None, (2, 4, 4, 1), *causal_masks(3))
    assert out.shape == (2, 4, 4, 1) and out.dtype == np.float64 and not out.any()


def test_scatter_keeps_float32():
    masks = causal_masks(3)
    grad = np.ones((1, 3, 2, 4), dtype=np.float32)
    assert scatter(grad, None, (1, 4, 4, 1), *masks).dtype == np.float32


def test_scatter_rejects_wrong_gradient_shape():
    masks = causal_masks(3)
    with pytest.raises(ValueError, match=r"grad_inputs must have shape \(1, 3, 2, 4\)"):
        scatter(np.zeros((1, 3, 2, 5)), None, (1, 4, 4, 1), *masks)


def test_mask_positions_order():
    input_mask, _ = causal_masks(3)
    positions = mask_positions(input_mask, 2)
    expected = [(c, r, q) for c in range(2) for r, q in
                [(0, 0), (0, 1), (0, 2), (1, 0)]]
    assert [tuple(p) for p in positions] == expected


def test_validate_masks_errors():
    input_mask, output_mask = causal_masks(3)
    with pytest.raises(ValueError, match="overlap"):
        validate_masks(input_mask | output_mask, output_mask)
    with pytest.raises(ValueError, match="same shape"):
        validate_masks(input_mask, output_mask[:, :2])
    with pytest.raises(ValueError, match="empty"):
        validate_masks(input_mask, np.zeros_like(output_mask))
    with pytest.raises(ValueError, match="0/1"):
        validate_masks(input_mask.astype(int) * 2, output_mask)
    with pytest.raises(TypeError, match="boolean"):
        validate_masks(input_mask.astype(str), output_mask)
    with pytest.raises(ValueError, match=r"\(h, w\) or \(h, w, C\)"):
        validate_masks(input_mask.ravel(), output_mask.ravel())


def test_output_offset_errors():
    with pytest.raises(ValueError, match="empty"):
        output_offset(np.zeros((2, 3), dtype=bool))
    two = np.zeros((2, 3), dtype=bool)
    two[1, 0] = two[1, 1] = True
    with pytest.raises(ValueError, match="2 spatial positions"):
        output_offset(two)


def test_extract_errors():
    masks = causal_masks(5)
    with pytest.raises(ValueError, match=r"\(1, 2, 9, 1\).*\(3, 5\)"):
        extract(np.zeros((1, 2, 9, 1)), *masks)
    with pytest.raises(ValueError, match=r"images\[\.\.\., None\]"):
        extract(np.zeros((1, 9, 9)), *masks)
    with pytest.raises(TypeError, match="astype"):
        extract(np.zeros((1, 9, 9, 1), dtype=np.uint8), *masks)
    with pytest.raises(ValueError, match="overlap"):
        extract(np.zeros((1, 9, 9, 1)), masks[0] | masks[1], masks[1])
    three_d = np.stack([masks[0]] * 2, axis=2), np.stack([masks[1]] * 2, axis=2)
    with pytest.raises(ValueError, match="2 channel plane"):
        extract(np.zeros((1, 9, 9, 3)), *three_d)


def test_minimal_image_size():
    masks = causal_masks(3)
    images = np.arange(6.0).reshape(1, 2, 3, 1)
    inputs, outputs = extract(images, *masks)
    assert inputs.shape == (1, 1, 1, 4)
    np.testing.assert_array_equal(inputs.ravel(), [0, 1, 2, 3])
    np.testing.assert_array_equal(outputs.ravel(), [4])
