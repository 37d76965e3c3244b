"""The BSDS300 patch protocol: RIDE against a full-covariance Gaussian.

What it does
------------
Follows the BSDS300 benchmark of Uria et al. (2013), as used by Theis &
Bethge (2015, section 3.2): 8 x 8 patches of scaled intensities with their
mean removed, so the bottom-right pixel is minus the sum of the others and
each patch is a 63-dimensional vector.  ``PatchRIDE(bsds300=True)`` leaves
that pixel out of training and evaluation.  A Gaussian with a full 63 x 63
covariance fitted to the training vectors is the baseline.  Both are scored
on the test vectors in **nats per 63-dimensional patch** (average
log-likelihood; higher is better).

Data: by default ``ride.datasets.bsds300_standin()``, a data set of the same
layout cut from the embedded photographs (train: camera, astronaut, chelsea,
coffee, brick, grass; validation: gravel; test: ascent).  Its numbers are NOT
comparable with published BSDS300 results (different images and constants).
Give the real benchmark file (an HDF5 file with ``train``, ``validation`` and
``test`` datasets of shape ``(n, 63)``) with ``--data PATH``.

How to run
----------
::

    python examples/bsds300.py                      # about 2 minutes on 2 cores
    python examples/bsds300.py --quick              # under a minute
    python examples/bsds300.py --data BSDS300.hdf5  # the real benchmark

With ``--data`` the training set is subsampled to ``--num-train`` patches
(default 50,000) to keep the run short; the published numbers use all of it
and far longer training.  Options: ``--output DIR`` (default
``examples/output/bsds300/``), ``--seed N``; ``--no-figures`` has no effect.
"""

import json
import sys
import time

import numpy as np

from ride import PatchRIDE
from ride.datasets import bsds300_standin, bsds300_to_patches, load_bsds300

from _common import argument_parser, prepare_output

CONFIGS = {
    "default": {
        "model": {"num_hiddens": 32, "num_components": 8, "num_features": 16,
                  "num_epochs": 4, "learning_rate": 1.0, "finetune_iter": 50,
                  "finetune_samples": 100_000},
        "sizes": {"train": 50_000, "validation": 5_000, "test": 10_000},
    },
    "quick": {
        "model": {"num_hiddens": 16, "num_components": 4, "num_features": 8,
                  "num_epochs": 1, "learning_rate": 1.0, "finetune_iter": 30,
                  "finetune_samples": 30_000},
        "sizes": {"train": 10_000, "validation": 2_000, "test": 5_000},
    },
}


class FullGaussian:
    """Multivariate Gaussian with the maximum-likelihood mean and covariance."""

    def fit(self, X):
        self.mean_ = X.mean(axis=0)
        centred = X - self.mean_
        self.cholesky_ = np.linalg.cholesky(centred.T @ centred / len(X))
        return self

    def loglikelihood(self, X):
        """Log-density in nats of every row, shape (n_samples,)."""
        white = np.linalg.solve(self.cholesky_, (X - self.mean_).T)
        dim = X.shape[1]
        return (-0.5 * np.sum(white**2, axis=0)
                - np.sum(np.log(np.diag(self.cholesky_)))
                - 0.5 * dim * np.log(2 * np.pi))


def main(argv=None):
    parser = argument_parser("bsds300", __doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None,
                        help="BSDS300 HDF5 file (default: the built-in stand-in)")
    parser.add_argument("--num-train", type=int, default=None,
                        help="training patches to use (default: 50,000, or "
                             "10,000 with --quick)")
    args = parser.parse_args(argv)
    config = CONFIGS["quick" if args.quick else "default"]
    sizes = dict(config["sizes"])
    if args.num_train is not None:
        sizes["train"] = args.num_train
    output = prepare_output(args.output)
    rng = np.random.default_rng(args.seed)
    clock = time.perf_counter()

    if args.data is None:
        source = "stand-in built from the embedded images"
        data = bsds300_standin(sizes["train"], sizes["validation"], sizes["test"],
                               random_state=args.seed)
    else:
        source = f"BSDS300 file {args.data}"
        data = load_bsds300(args.data)
        pick = rng.permutation(len(data["train"]))[:sizes["train"]]
        data["train"] = data["train"][pick]
    data = {split: np.asarray(values, dtype=np.float64)
            for split, values in data.items()}
    print(f"data: {source}; " + ", ".join(f"{split} {len(values):,}"
                                          for split, values in data.items()))

    start = time.perf_counter()
    gaussian = FullGaussian().fit(data["train"])
    gaussian_seconds = time.perf_counter() - start

    model = PatchRIDE(bsds300=True, random_state=args.seed, verbose=args.verbose,
                      **config["model"])
    start = time.perf_counter()
    model.fit(bsds300_to_patches(data["train"]))
    ride_seconds = time.perf_counter() - start
    model.save(output / "patch_ride.h5")

    results = {}
    for split in ("validation", "test"):
        results[split] = {
            "Gaussian": float(np.mean(gaussian.loglikelihood(data[split]))),
            "RIDE": -model.evaluate_nats_per_patch(bsds300_to_patches(data[split])),
        }
    print()
    print("Average log-likelihood in nats per 63-dimensional patch (higher is "
          "better)")
    print(f"{'model':<34}{'validation':>12}{'test':>10}{'train s':>10}")
    print("-" * 66)
    labels = {"Gaussian": "Gaussian (full covariance)",
              "RIDE": f"PatchRIDE (1 layer x {model.num_hiddens} hidden)"}
    seconds = {"Gaussian": gaussian_seconds, "RIDE": ride_seconds}
    for key, label in labels.items():
        print(f"{label:<34}{results['validation'][key]:12.2f}"
              f"{results['test'][key]:10.2f}{seconds[key]:10.1f}")
    if args.data is None:
        print("NOTE: stand-in data from the embedded images; these numbers are NOT "
              "comparable to published BSDS300 results.")
    else:
        print(f"NOTE: trained on {len(data['train']):,} patches only; published BSDS300 "
              "numbers use the full training set and much longer training.")
    print()
    results.update(source=source, sizes={k: len(v) for k, v in data.items()})
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"total time {time.perf_counter() - clock:.0f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
