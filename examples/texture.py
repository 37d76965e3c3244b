"""Learn a texture from one photograph and synthesise a larger piece of it.

What it does
------------
Trains RIDE on random patches of one embedded texture photograph (``brick``
by default; ``grass`` and ``gravel`` work too), with the same curriculum as
``main.py`` but smaller, then draws a new texture pixel by pixel with
``RIDE.sample_images``: a canvas larger by the context border is filled with
noise of the training pixels' mean and variance, every pixel is drawn in
raster order from its conditional density, and the border is cut off.
Spatial LSTMs carry information across the whole canvas, so the model can
continue structures (such as rows of bricks) beyond its 3 x 5 neighbourhood
(Theis & Bethge, 2015, section 3.3).

Prints the model's log-likelihood on the training photograph (bits per pixel
on the 0-255 scale) and saves ``texture.png`` (original crop beside the
synthesis, same size and grey scale), ``texture.npy`` (the synthesised
values, scaled to ``[0, 1)``) and ``ride.h5``.

How to run
----------
::

    python examples/texture.py                  # about 1 minute on 2 cores
    python examples/texture.py --image grass --size 192
    python examples/texture.py --quick          # under a minute

Options: ``--image {brick,grass,gravel}``, ``--size N`` (side of the
synthesised square), ``--output DIR`` (default ``examples/output/texture/``),
``--seed N``, ``--no-figures``.
"""

import sys
import time

import numpy as np

from ride import RIDE

from _common import (
    argument_parser,
    load_scaled,
    prepare_output,
    pyplot,
    save_figure,
    show_image,
    to_bits,
    train_curriculum,
)

CONFIGS = {
    "default": {
        "model": {"num_hiddens": 32, "num_components": 8, "num_features": 8,
                  "finetune_samples": 50_000},
        "stages": [
            {"patch_size": 16, "num_patches": 8_000, "num_epochs": 2,
             "learning_rate": 1.0, "finetune_iter": 50},
            {"patch_size": 32, "num_patches": 2_000, "num_epochs": 2,
             "learning_rate": 0.5, "finetune_iter": 50},
        ],
        "size": 128,
    },
    "quick": {
        "model": {"num_hiddens": 16, "num_components": 4, "num_features": 8,
                  "finetune_samples": 20_000},
        "stages": [
            {"patch_size": 16, "num_patches": 4_000, "num_epochs": 2,
             "learning_rate": 0.3, "finetune_iter": 30},
        ],
        "size": 64,
    },
}


def main(argv=None):
    parser = argument_parser("texture", __doc__.split("\n\n")[0])
    parser.add_argument("--image", choices=("brick", "grass", "gravel"),
                        default="brick", help="texture to learn (default: brick)")
    parser.add_argument("--size", type=int, default=None,
                        help="side of the synthesised square in pixels "
                             "(default: 128, or 64 with --quick)")
    args = parser.parse_args(argv)
    config = CONFIGS["quick" if args.quick else "default"]
    size = args.size or config["size"]
    output = prepare_output(args.output)
    plt = pyplot(disabled=args.no_figures)
    rng = np.random.default_rng(args.seed)
    clock = time.perf_counter()

    image = load_scaled([args.image], rng)[args.image]
    if size > min(image.shape):
        parser.error(f"--size must be at most {min(image.shape)} for {args.image}")

    model = RIDE(warm_start=True, random_state=args.seed, verbose=args.verbose,
                 **config["model"])
    train_curriculum(model, [image], config["stages"], rng)
    model.save(output / "ride.h5")
    bits = to_bits(model.loglikelihood(image[None]))
    print(f"{args.image}: {bits:.3f} bits/pixel (0-255 scale) on the training "
          "photograph")

    start = time.perf_counter()
    texture = model.sample_images(1, size, size, min_values=0.0,
                                  max_values=1.0 - 1e-6, random_state=args.seed)[0]
    print(f"sampled a {size}x{size} texture in {time.perf_counter() - start:.1f} s")
    np.save(output / "texture.npy", texture)

    if plt is not None:
        crop = image[:size, :size]
        low, high = np.percentile(crop, [0.5, 99.5])
        fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
        show_image(axes[0], crop, f"{args.image}: photograph ({size}x{size} crop)",
                   vmin=low, vmax=high)
        show_image(axes[1], texture, "RIDE sample", vmin=low, vmax=high)
        save_figure(fig, output / "texture.png")
    print(f"total time {time.perf_counter() - clock:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
