"""Train RIDE on embedded photographs and compare it with two baselines.

What it does
------------
1. Loads the eight embedded greyscale photographs, dequantises them with
   uniform noise and scales them by 1/256 to ``[0, 1)``.  Six images train
   (camera, astronaut, chelsea, coffee, brick, grass); two are held out for
   testing (gravel, ascent).
2. Trains a one-layer RIDE model (64 hidden units) with a curriculum: random
   patches of growing size, each stage warm-started from the previous one with
   a smaller or equal learning rate (``set_params`` +
   ``fit(warm_start=True)``), every epoch followed by L-BFGS fine-tuning of the
   MCGSM on top.
3. Fits two baselines on the same training images and the same causal
   neighbourhood (the 12 pixels above and to the left within a 3 x 5 window):
   a linear-Gaussian autoregressive model and an MCGSM on the raw whitened
   neighbourhoods.
4. Scores every held-out pixel that RIDE scores (all but the top 2 rows and
   the 2 leftmost and rightmost columns) under the three models and prints a
   table in bits per pixel on the 0-255 scale: the negative continuous
   log-likelihood of the dequantised 8-bit values, in bits, averaged over the
   scored pixels (lower is better).
5. Saves the model (``ride.h5``), the numbers (``results.json``) and, when
   matplotlib is installed, pictures: samples from the model, a per-pixel
   log-likelihood map of a held-out image and the training curve.

How to run
----------
::

    python -m pip install ".[examples]"
    python examples/main.py            # about 8 minutes on 2 cores
    python examples/main.py --quick    # about 20 seconds, weaker numbers

Options: ``--output DIR`` (default ``examples/output/main/``), ``--seed N``,
``--no-figures``, ``--verbose 0``.
"""

import argparse
import json
import math
import platform
import sys
import time

import numpy as np

import ride
from ride import RIDE

from _common import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    GaussianBaseline,
    MCGSMBaseline,
    argument_parser,
    load_scaled,
    neighbourhoods,
    prepare_output,
    pyplot,
    save_figure,
    show_image,
    to_bits,
    train_curriculum,
)

#: Settings per mode.  ``stages`` is the curriculum; ``test_crop`` (if not
#: None) evaluates only the top-left corner of that size of each test image.
CONFIGS = {
    "default": {
        # 64 hidden units need a smaller SGD rate than 32 (0.5 instead of 1.0)
        "model": {"num_hiddens": 64, "num_components": 8, "num_features": 8,
                  "finetune_samples": 100_000},
        "stages": [
            {"patch_size": 8, "num_patches": 20_000, "num_epochs": 1,
             "learning_rate": 0.5, "finetune_iter": 50},
            {"patch_size": 16, "num_patches": 30_000, "num_epochs": 3,
             "learning_rate": 0.5, "finetune_iter": 50},
            # the MCGSM that is kept is fine-tuned here, on more sites
            {"patch_size": 32, "num_patches": 8_000, "num_epochs": 3,
             "learning_rate": 0.2, "finetune_iter": 200,
             "finetune_samples": 400_000},
        ],
        "mcgsm": {"num_components": 8, "num_samples": 100_000, "max_iter": 300},
        "test_crop": None,
        "samples": (4, 64, 64),
    },
    "quick": {
        "model": {"num_hiddens": 32, "num_components": 8, "num_features": 8,
                  "finetune_samples": 50_000},
        "stages": [
            {"patch_size": 8, "num_patches": 10_000, "num_epochs": 1,
             "learning_rate": 1.0, "finetune_iter": 30},
            {"patch_size": 16, "num_patches": 12_000, "num_epochs": 1,
             "learning_rate": 1.0, "finetune_iter": 50},
        ],
        "mcgsm": {"num_components": 8, "num_samples": 30_000, "max_iter": 100},
        "test_crop": 256,
        "samples": (2, 32, 32),
    },
    # For the smoke test only: seconds, meaningless numbers.
    "tiny": {
        "model": {"num_hiddens": 8, "num_components": 2, "num_scales": 2,
                  "num_features": 4, "finetune_samples": 2_000},
        "stages": [
            {"patch_size": 8, "num_patches": 200, "num_epochs": 1,
             "learning_rate": 0.5, "finetune_iter": 5},
            {"patch_size": 12, "num_patches": 100, "num_epochs": 1,
             "learning_rate": 0.2, "finetune_iter": 5},
        ],
        "mcgsm": {"num_components": 2, "num_samples": 2_000, "max_iter": 10},
        "test_crop": 32,
        "samples": (1, 12, 12),
    },
}


def main(argv=None):
    parser = argument_parser("main", __doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "default"
    config = CONFIGS[mode]
    output = prepare_output(args.output)
    plt = pyplot(disabled=args.no_figures)
    rng = np.random.default_rng(args.seed)
    clock = time.perf_counter()

    # data: the same dequantisation noise for a given seed
    train = load_scaled(TRAIN_IMAGES, rng)
    test = load_scaled(TEST_IMAGES, rng)
    if config["test_crop"] is not None:
        crop = config["test_crop"]
        test = {name: image[:crop, :crop] for name, image in test.items()}
    test_images = np.stack(list(test.values()))
    print(f"ride {ride.__version__}, mode {mode!r}, seed {args.seed}")
    print(f"training images: {', '.join(TRAIN_IMAGES)}; held out: "
          f"{', '.join(f'{n} {im.shape[0]}x{im.shape[1]}' for n, im in test.items())}")

    # RIDE with a curriculum of growing patches and falling learning rates
    model = RIDE(warm_start=True, random_state=args.seed, verbose=args.verbose,
                 **config["model"])
    start = time.perf_counter()
    boundaries = train_curriculum(model, list(train.values()), config["stages"], rng)
    times = {"RIDE": time.perf_counter() - start}
    model.save(output / "ride.h5")
    print(f"saved the model to {output / 'ride.h5'}")

    # the very pixels RIDE scores, as neighbourhood/pixel pairs for the baselines
    ride_loglik = model.loglikelihood(test_images)
    X_test, Y_test, grid = neighbourhoods(test_images, model)
    if grid != ride_loglik.shape:  # pragma: no cover - guards the comparison
        raise RuntimeError(f"baseline grid {grid} != RIDE grid {ride_loglik.shape}")
    X_train, Y_train = [], []
    for image in train.values():
        X, Y, _ = neighbourhoods(image[None], model)
        X_train.append(X)
        Y_train.append(Y)
    X_train, Y_train = np.concatenate(X_train), np.concatenate(Y_train)

    start = time.perf_counter()
    gaussian = GaussianBaseline().fit(X_train, Y_train)
    times["Gaussian"] = time.perf_counter() - start
    start = time.perf_counter()
    mcgsm = MCGSMBaseline(random_state=args.seed, **config["mcgsm"]).fit(
        X_train, Y_train
    )
    times["MCGSM"] = time.perf_counter() - start
    loglik = {
        "Gaussian": gaussian.loglikelihood(X_test, Y_test).reshape(grid),
        "MCGSM": mcgsm.loglikelihood(X_test, Y_test).reshape(grid),
        "RIDE": ride_loglik,
    }

    results = report(loglik, list(test), times, model, mcgsm)
    results.update(mode=mode, seed=args.seed, python=platform.python_version(),
                   total_seconds=time.perf_counter() - clock)
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {output / 'results.json'}")

    if plt is not None:
        draw(plt, output, model, boundaries, test_images[-1], ride_loglik[-1],
             list(test)[-1], config, args.seed)
    print(f"total time {time.perf_counter() - clock:.0f} s")
    return results


def report(loglik, names, times, model, mcgsm):
    """Print the results table; return the numbers as a dict."""
    num_pixels = loglik["RIDE"].size
    descriptions = {
        "Gaussian": "Gaussian (linear autoregressive)",
        "MCGSM": f"MCGSM (K={mcgsm.num_components}, S={mcgsm.num_scales})",
        "RIDE": f"RIDE (1 layer, {model.num_hiddens} hidden, "
                f"K={model.num_components}, S={model.num_scales})",
    }
    rows = {}
    for label in ("Gaussian", "MCGSM", "RIDE"):
        per_image = [to_bits(values) for values in loglik[label]]
        rows[label] = {"bits_per_pixel": to_bits(loglik[label]),
                       "per_image": dict(zip(names, per_image)),
                       "train_seconds": times[label],
                       "description": descriptions[label]}
    width = max(len(d) for d in descriptions.values()) + 2
    print()
    print(f"Held-out log-likelihood on {num_pixels:,} scored pixels, in bits per "
          "pixel on the 0-255 scale (lower is better)")
    header = f"{'model':<{width}}" + "".join(f"{n:>9}" for n in names)
    print(header + f"{'all':>9}{'train s':>10}")
    print("-" * (len(header) + 19))
    for label, row in rows.items():
        cells = "".join(f"{v:9.3f}" for v in row["per_image"].values())
        print(f"{row['description']:<{width}}{cells}{row['bits_per_pixel']:9.3f}"
              f"{row['train_seconds']:10.1f}")
    best = min(rows, key=lambda label: rows[label]["bits_per_pixel"])
    print(f"best: {best}")
    print()
    return {"num_scored_pixels": num_pixels, "test_images": names, "models": rows}


def draw(plt, output, model, boundaries, image, loglik, name, config, seed):
    """Samples, a log-likelihood map and the training curve as PNG files."""
    num, height, width = config["samples"]
    samples = model.sample_images(num, height, width, min_values=0.0,
                                  max_values=1.0 - 1e-6, random_state=seed)
    fig, axes = plt.subplots(1, num, figsize=(2.2 * num, 2.4), squeeze=False)
    for index, ax in enumerate(axes[0]):
        show_image(ax, samples[index], f"sample {index + 1}")
    fig.suptitle(f"RIDE samples ({height}x{width})", fontsize=10)
    save_figure(fig, output / "samples.png")

    # bits per pixel of every scored pixel: -log2 p(x) of 0-255 intensities
    bits = -loglik / math.log(2.0) + 8.0
    rows, cols = model.scored_region
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    show_image(axes[0], image[rows, cols], f"{name} (held out, scored pixels)")
    shown = axes[1].imshow(bits, cmap="magma", vmin=0.0,
                           vmax=float(np.percentile(bits, 99)))
    axes[1].set_title(f"RIDE: {bits.mean():.2f} bits/pixel on average", fontsize=9)
    axes[1].set_axis_off()
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label="bits per pixel (0-255)")
    save_figure(fig, output / "loglik_map.png")

    history = np.asarray(model.loss_history_) + 8.0
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history, lw=0.6, color="0.6", label="batch")
    window = max(1, len(history) // 50)
    if window > 1:
        smooth = np.convolve(history, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(history)), smooth, color="C0",
                label=f"running mean of {window}")
    for boundary in boundaries[:-1]:
        ax.axvline(boundary, color="C3", lw=0.8, ls="--")
    ax.set_xlabel("batch (dashed: next curriculum stage)")
    ax.set_ylabel("training loss, bits/pixel (0-255)")
    low, high = np.percentile(history, [0.5, 99])
    ax.set_ylim(low - 0.1, high + 0.2)
    ax.legend(fontsize=8)
    save_figure(fig, output / "training_curve.png")


if __name__ == "__main__":
    main(sys.argv[1:])
