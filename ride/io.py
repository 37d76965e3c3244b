"""HDF5 persistence for ``ride`` models.

Every file carries a ``ride_format`` version and the class name of the object
it stores.  Saving writes a temporary file in the target directory and renames
it over the destination, so an interrupted save never leaves a half-written
model behind.
"""

import os
import tempfile

import h5py

__all__ = ["save", "load", "FORMAT_VERSION"]

#: Version of the on-disk layout; bump when it changes incompatibly.
FORMAT_VERSION = 1


def _registry():
    from .mcgsm import MCGSM
    from .preconditioner import WhiteningPreconditioner

    classes = {"MCGSM": MCGSM, "WhiteningPreconditioner": WhiteningPreconditioner}
    from .model import RIDE
    from .patch import PatchRIDE

    classes.update(RIDE=RIDE, PatchRIDE=PatchRIDE)
    return classes


def save(obj, path):
    """Write a ``ride`` object to an HDF5 file, atomically.

    Parameters
    ----------
    obj : MCGSM, WhiteningPreconditioner, RIDE or PatchRIDE
    path : str or os.PathLike
        Destination.  An existing file is replaced only once the new one has
        been written completely.  If the process is killed while writing, the
        destination is intact and a temporary ``<name>.<random>.tmp`` file may
        be left beside it.
    """
    if not hasattr(obj, "_to_hdf5"):
        raise TypeError(
            f"save expects a ride MCGSM, WhiteningPreconditioner, RIDE or PatchRIDE, "
            f"got {type(obj).__name__}."
        )
    path = os.fspath(path)
    if not path:
        raise ValueError("save needs a file name, got an empty path.")
    # Write through a symlink to its target rather than replacing the link.
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(
        prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    os.close(fd)
    # mkstemp creates the file private (0600); give it the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["ride_format"] = FORMAT_VERSION
            obj._to_hdf5(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path):
    """Read an object written by :func:`save`.

    Raises
    ------
    ValueError
        If the file is not an HDF5 file, is truncated, was not written by
        ``ride``, or has a newer format version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(
            f"{path!r} is not a readable HDF5 file (truncated or corrupt?): {error}"
        ) from None
    with f:
        version = f.attrs.get("ride_format")
        name = f.attrs.get("class")
        if version is None or name is None:
            raise ValueError(f"{path!r} is an HDF5 file but not a saved ride model.")
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise ValueError(
                f"{path!r} has an unreadable ride_format attribute {version!r}."
            ) from None
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path!r} has ride format {version}, newer than this "
                f"library's {FORMAT_VERSION}; upgrade ride to read it."
            )
        classes = _registry()
        if name not in classes:
            raise ValueError(f"{path!r} stores an unknown ride class {name!r}.")
        try:
            return classes[name]._from_hdf5(f)
        except (KeyError, OSError) as error:
            raise ValueError(
                f"{path!r} is incomplete or corrupt ({error})."
            ) from None
