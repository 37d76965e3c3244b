"""Rebuild ``ride/data/images.npz`` and ``ride/data/PROVENANCE.md``.

The embedded images are 8-bit greyscale photographs taken from the sample data
that scikit-image and PyWavelets ship inside their wheels.  Those packages are
needed only here, never when ``ride`` runs, so install them in a throwaway
environment::

    python -m venv /tmp/buildenv
    /tmp/buildenv/bin/pip install scikit-image "PyWavelets>=1.2"
    /tmp/buildenv/bin/python tools/build_images.py

Every image is read from the files bundled in the installed packages (nothing
is downloaded).  Colour photographs are reduced to luma with the ITU-R BT.601
weights, ``Y = 0.299 R + 0.587 G + 0.114 B``, computed in float64 and rounded to
the nearest integer (ties to even) before conversion to ``uint8``.

The array contents are deterministic: the same package versions give the same
SHA-256 checksums, which are written to ``PROVENANCE.md`` and asserted by
``tests/test_datasets.py``.  The ``.npz`` bytes themselves differ between runs
because the zip members carry the time of writing.
"""

import argparse
import hashlib
import importlib.metadata
import pathlib
import sys

import numpy as np

# BT.601 luma weights for (R, G, B); they sum to one.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])

# name, package, data function, expected raw shape, author or origin, licence
# (as stated by the package's own docstring for that function).
SOURCES = [
    ("camera", "scikit-image", "skimage.data.camera", (512, 512),
     "Lav Varshney (photographer)",
     "CC0 (\"No copyright restrictions. CC0 by the photographer\")"),
    ("astronaut", "scikit-image", "skimage.data.astronaut", (512, 512, 3),
     "NASA Great Images database (photograph of Eileen Collins)",
     "Public domain (\"No known copyright restrictions, released into the "
     "public domain\")"),
    ("chelsea", "scikit-image", "skimage.data.chelsea", (300, 451, 3),
     "Stefan van der Walt (photographer)",
     "CC0 (\"No copyright restrictions. CC0 by the photographer\")"),
    ("coffee", "scikit-image", "skimage.data.coffee", (400, 600, 3),
     "Rachel Michetti (photographer), courtesy of Pikolo Espresso Bar",
     "CC0 (\"No copyright restrictions. CC0 by the photographer\")"),
    ("brick", "scikit-image", "skimage.data.brick", (512, 512),
     "CC0Textures, texture Bricks25 (transformed and cropped by scikit-image)",
     "CC0 (\"licensed under the Creative Commons CC0 License\")"),
    ("grass", "scikit-image", "skimage.data.grass", (512, 512),
     "DeviantArt user linolafett, \"Grass 01\" (cropped by scikit-image)",
     "CC0 (\"licensed under the Creative Commons CC0 License\")"),
    ("gravel", "scikit-image", "skimage.data.gravel", (512, 512),
     "CC0Textures, texture Gravel04 (rescaled and cropped by scikit-image)",
     "CC0 (\"licensed under the Creative Commons CC0 License\")"),
    ("ascent", "PyWavelets", "pywt.data.ascent", (512, 512),
     "accent-to-the-top.jpg from public-domain-image.com, people section",
     "Public domain (the docstring names its source as the public-domain "
     "image collection http://www.public-domain-image.com/"
     "people-public-domain-images-pictures/)"),
]


def to_grey(image):
    """Return an 8-bit greyscale version of an 8-bit image.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, 3), dtype uint8
        Grey or RGB image.

    Returns
    -------
    grey : ndarray of shape (H, W), dtype uint8
        The image itself (grey input) or its BT.601 luma, rounded.
    """
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        return image.copy()
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected (H, W) or (H, W, 3), got shape {image.shape}")
    luma = image.astype(np.float64) @ LUMA_WEIGHTS
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def load_source(function_path):
    """Call a data function given by its dotted path, e.g. ``pywt.data.ascent``."""
    module_name, function_name = function_path.rsplit(".", 1)
    module = __import__(module_name, fromlist=[function_name])
    return getattr(module, function_name)()


def sha256_of(array):
    """SHA-256 of the C-ordered bytes of an array, as a hex string."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def provenance_text(rows, versions, npz_size):
    """Markdown text of PROVENANCE.md for the built images."""
    lines = [
        "# Embedded images: provenance",
        "",
        "`images.npz` holds 8-bit greyscale photographs, one `uint8` array of",
        "shape `(H, W)` per name, for examples and tests of `ride`. It was",
        "written by `tools/build_images.py` (do not edit it by hand) from the",
        "sample data bundled in these packages (versions from the installed",
        "distributions' metadata):",
        "",
    ]
    for package, version in versions.items():
        lines.append(f"* {package} {version}")
    lines += [
        "",
        "Colour photographs were converted to luma with the ITU-R BT.601",
        "weights `Y = 0.299 R + 0.587 G + 0.114 B` (computed in float64,",
        "rounded to the nearest integer, ties to even). Grey images are",
        "stored unchanged. The licence column quotes the docstring of the",
        "data function in the installed package. `moon` is deliberately",
        "left out.",
        "",
        "The checksum is the SHA-256 of the array's C-ordered bytes",
        "(`hashlib.sha256(a.tobytes())`), not of the file; it does not",
        "depend on the zip timestamps.",
        "",
        f"File size of `images.npz` when built: {npz_size} bytes.",
        "",
        "| name | origin | author / source | licence | converted | shape | sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        shape = "x".join(str(s) for s in row["shape"])
        lines.append(
            f"| {row['name']} | {row['package']} {row['version']}, "
            f"`{row['function']}()` | {row['author']} | {row['licence']} | "
            f"{row['converted']} | {shape} | `{row['sha256']}` |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = pathlib.Path(__file__).resolve().parents[1] / "ride" / "data"
    parser.add_argument("--out-dir", type=pathlib.Path, default=default_dir)
    args = parser.parse_args(argv)

    versions = {
        "scikit-image": importlib.metadata.version("scikit-image"),
        "PyWavelets": importlib.metadata.version("PyWavelets"),
    }
    major, minor = (int(p) for p in versions["PyWavelets"].split(".")[:2])
    if (major, minor) < (1, 2):
        sys.exit(f"PyWavelets >= 1.2 is needed, found {versions['PyWavelets']}")

    images, rows = {}, []
    for name, package, function, shape, author, licence in SOURCES:
        raw = np.asarray(load_source(function))
        if raw.shape != shape or raw.dtype != np.uint8:
            sys.exit(
                f"{function}() returned {raw.dtype} {raw.shape}, "
                f"expected uint8 {shape}; the package data changed"
            )
        grey = to_grey(raw)
        images[name] = grey
        rows.append(dict(
            name=name, package=package, version=versions[package],
            function=function, author=author, licence=licence,
            converted="BT.601 luma" if raw.ndim == 3 else "no",
            shape=grey.shape, sha256=sha256_of(grey),
        ))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    npz_path = args.out_dir / "images.npz"
    np.savez_compressed(npz_path, **images)
    npz_size = npz_path.stat().st_size
    text = provenance_text(rows, versions, npz_size)
    (args.out_dir / "PROVENANCE.md").write_text(text, encoding="utf-8")

    for row in rows:
        print(f"{row['name']:10s} {str(row['shape']):12s} {row['sha256']}")
    print(f"wrote {npz_path} ({npz_size} bytes)")


if __name__ == "__main__":
    main()
