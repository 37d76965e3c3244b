"""Fill a square hole in a held-out photograph with RIDE.

What it does
------------
Cuts a window out of ``ascent`` (an image none of the example models trains
on), removes a square in its middle and fills it with ``RIDE.inpaint``:
candidate fills are drawn in raster order from the model, the most likely one
is kept, and gradient ascent on the log-likelihood of the whole window (so the
pixels below and to the right of the hole count too) refines it.

It then compares four fills of the hole: the true pixels, the RIDE fill, the
mean of the window and Gaussian noise with the window's mean and standard
deviation.  For each it prints

* the log-likelihood of the hole's own pixels (nats in total, and bits per
  pixel on the 0-255 scale),
* the change in the log-likelihood of the whole window relative to the true
  image (nats), which also counts the pixels whose context the fill changed,
* the root-mean-square error against the true pixels (0-255 units).

Saves ``inpainting.png`` (original, masked, filled) and ``inpainting.npz``.

The model is read from ``--model PATH`` or, by default, from the output of
``examples/main.py`` (``examples/output/main/ride.h5``); if that file does not
exist a small model is trained first with the ``--quick`` recipe of
``main.py`` (about a minute).

How to run
----------
::

    python examples/main.py && python examples/inpainting.py   # about 1 minute
    python examples/inpainting.py --quick                      # fewer steps

Options: ``--model PATH``, ``--hole N`` (side of the square, default 12),
``--output DIR`` (default ``examples/output/inpainting/``), ``--seed N``,
``--no-figures``.
"""

import math
import sys
import time

import numpy as np

import ride
from ride import RIDE

from _common import (
    EXAMPLES_DIR,
    TRAIN_IMAGES,
    argument_parser,
    load_scaled,
    prepare_output,
    pyplot,
    save_figure,
    show_image,
    to_bits,
    train_curriculum,
)
from main import CONFIGS as MAIN_CONFIGS

#: Top-left corner and side of the window cut out of ``ascent``.
WINDOW = (280, 180, 64)


def main(argv=None):
    parser = argument_parser("inpainting", __doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EXAMPLES_DIR / "output" / "main" / "ride.h5",
                        help="a RIDE model saved by main.py (default: "
                             "examples/output/main/ride.h5; trained if missing)")
    parser.add_argument("--hole", type=int, default=12,
                        help="side of the square hole in pixels (default: 12)")
    args = parser.parse_args(argv)
    output = prepare_output(args.output)
    plt = pyplot(disabled=args.no_figures)
    rng = np.random.default_rng(args.seed)
    clock = time.perf_counter()

    model = load_or_train(args.model, args, rng)
    top, left, side = WINDOW
    window = load_scaled(["ascent"], rng)["ascent"][top:top + side, left:left + side]
    start = (side - args.hole) // 2
    hole = np.zeros(window.shape, dtype=bool)
    hole[start:start + args.hole, start:start + args.hole] = True
    rows, cols = model.scored_region
    if not hole[rows, cols].sum() == hole.sum():
        parser.error(f"--hole {args.hole} is too large for a {side}x{side} window")

    begin = time.perf_counter()
    num_iter = 20 if args.quick else 100
    filled = model.inpaint(window[None], hole, num_iter=num_iter, num_candidates=5,
                           min_values=0.0, max_values=1.0 - 1e-6,
                           random_state=args.seed)[0]
    print(f"inpainted a {args.hole}x{args.hole} hole in "
          f"{time.perf_counter() - begin:.1f} s ({num_iter} gradient steps)")

    context = window[~hole]
    fills = {
        "true pixels": window,
        "RIDE inpainting": filled,
        "mean of the window": np.where(hole, context.mean(), window),
        "Gaussian noise": np.where(
            hole, np.clip(rng.normal(context.mean(), context.std(), window.shape),
                          0.0, 1.0 - 1e-6), window),
    }
    results = report(model, fills, hole)
    np.savez(output / "inpainting.npz", window=window, hole=hole, filled=filled)
    if plt is not None:
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.7))
        show_image(axes[0], window, "original (ascent, held out)")
        show_image(axes[1], np.where(hole, np.nan, window), "masked")
        show_image(axes[2], filled, "RIDE inpainting")
        for ax in axes:
            ax.add_patch(plt.Rectangle((start - 0.5, start - 0.5), args.hole,
                                       args.hole, fill=False, color="C3", lw=0.8))
        save_figure(fig, output / "inpainting.png")
    print(f"total time {time.perf_counter() - clock:.0f} s")
    return results


def load_or_train(path, args, rng):
    """Load a saved model, or train a small one when the file is missing."""
    try:
        model = ride.load(path)
        print(f"loaded {path}")
        return model
    except FileNotFoundError:
        print(f"{path} not found; training a model with the --quick recipe of "
              "main.py")
    config = MAIN_CONFIGS["quick"]
    model = RIDE(warm_start=True, random_state=args.seed, verbose=args.verbose,
                 **config["model"])
    train = load_scaled(TRAIN_IMAGES, rng)
    train_curriculum(model, list(train.values()), config["stages"], rng)
    return model


def report(model, fills, hole):
    """Print log-likelihoods of the hole under every fill; return them."""
    rows, cols = model.scored_region
    in_grid = hole[rows, cols]
    images = np.stack(list(fills.values()))
    loglik = model.loglikelihood(images)
    reference = loglik[0].sum()
    print()
    print(f"{'fill':<22}{'hole nats':>11}{'hole bits/px':>14}{'window dnats':>14}"
          f"{'RMSE':>8}")
    results = {}
    for (label, image), values in zip(fills.items(), loglik):
        hole_nats = float(values[in_grid].sum())
        row = {
            "hole_nats": hole_nats,
            "hole_bits_per_pixel": to_bits(hole_nats, int(hole.sum())),
            "window_nats_change": float(values.sum() - reference),
            "rmse_0_255": float(256 * math.sqrt(np.mean((image - fills["true pixels"])
                                                       [hole] ** 2))),
        }
        results[label] = row
        print(f"{label:<22}{row['hole_nats']:11.1f}{row['hole_bits_per_pixel']:14.3f}"
              f"{row['window_nats_change']:14.1f}{row['rmse_0_255']:8.1f}")
    print("(hole: log-likelihood of the hole's pixels; window dnats: change of the "
          "whole window's log-likelihood against the true image; bits on the 0-255 "
          "scale)")
    print()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
