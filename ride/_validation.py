"""Input checks shared by the public API.

Every public function validates its arguments here and then hands trusted,
contiguous arrays to private kernels.  Messages name what was received, what
was expected and, where there is one, the remedy.
"""

import numbers

import numpy as np

__all__ = [
    "check_array",
    "check_pair",
    "check_random_state",
    "check_positive_int",
    "NotFittedError",
    "ConvergenceWarning",
]


class NotFittedError(ValueError, AttributeError):
    """Raised when a method needs a fitted estimator and ``fit`` was not run."""


class ConvergenceWarning(UserWarning):
    """Raised when an optimiser stops at its iteration limit."""


def check_array(
    array,
    name,
    ndim=2,
    width=None,
    dtype=None,
    allow_float32=True,
    finite=True,
    copy=False,
):
    """Validate a real floating-point array and return it as a contiguous array.

    Parameters
    ----------
    array : array-like
        The value to check.
    name : str
        How the argument is called in messages, e.g. ``"X"``.
    ndim : int or tuple of int
        Accepted number(s) of dimensions.
    width : int, optional
        Required size of the last axis.
    dtype : numpy dtype, optional
        Convert to this floating dtype.  By default float64 and (when
        ``allow_float32``) float32 are kept as they are.
    allow_float32 : bool
        Keep float32 input as float32 instead of converting it to float64.
    finite : bool
        Reject NaN and infinite values.
    copy : bool
        Always return a new array.

    Returns
    -------
    ndarray
        C-contiguous floating-point array.

    Raises
    ------
    TypeError
        If the array is not real-valued floating point (integers, booleans and
        complex numbers are rejected rather than silently cast).
    ValueError
        On a wrong number of dimensions, a wrong width or non-finite values.
    """
    if isinstance(array, (list, tuple)):
        array = np.asarray(array)
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array of floats, got {type(array).__name__}."
        )
    kind = array.dtype.kind
    if kind != "f":
        what = {
            "i": "integer",
            "u": "unsigned integer",
            "b": "boolean",
            "c": "complex",
        }.get(kind, str(array.dtype))
        hint = (
            f" Convert it first, e.g. {name}.astype(np.float64)."
            if kind in "iub"
            else ""
        )
        raise TypeError(
            f"{name} must be a real floating-point array (float64 or float32), "
            f"got dtype {array.dtype} ({what}).{hint}"
        )
    ndims = (ndim,) if isinstance(ndim, numbers.Integral) else tuple(ndim)
    if array.ndim not in ndims:
        expected = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(
            f"{name} must be a {expected} array, got shape {array.shape} "
            f"({array.ndim}-D)."
        )
    if width is not None and array.shape[-1] != width:
        raise ValueError(
            f"{name} must have {width} columns (last axis), got shape "
            f"{array.shape}."
        )
    if dtype is None:
        dtype = array.dtype if (allow_float32 and array.dtype == np.float32) else (
            np.float64
        )
    if copy:
        out = np.array(array, dtype=dtype, order="C", copy=True)
    else:
        out = np.ascontiguousarray(array, dtype=dtype)
    if finite and not np.all(np.isfinite(out)):
        bad = np.argwhere(~np.isfinite(out))[0]
        raise ValueError(
            f"{name} contains NaN or infinite values (first at index "
            f"{tuple(int(i) for i in bad)}); remove or impute them first."
        )
    return out


def check_pair(X, Y, dim_in=None, dim_out=None, names=("X", "Y")):
    """Validate float64 data rows ``X (N, dim_in)`` and, if given, ``Y (N, dim_out)``.

    Returns ``X`` alone when ``Y`` is None, otherwise ``(X, Y)``; both are
    C-contiguous float64 arrays with the same number of rows.
    """
    X = check_array(X, names[0], ndim=2, width=dim_in, allow_float32=False)
    if Y is None:
        return X
    Y = check_array(Y, names[1], ndim=2, width=dim_out, allow_float32=False)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of rows "
            f"(samples), got {X.shape[0]} and {Y.shape[0]}."
        )
    return X, Y


def check_random_state(random_state):
    """Turn ``None``, an int, a SeedSequence or a Generator into a Generator.

    A legacy ``RandomState`` is accepted too: a Generator is seeded from it.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.SeedSequence):
        return np.random.default_rng(random_state)
    if random_state is None or isinstance(random_state, numbers.Integral):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.RandomState):
        # Derive a Generator deterministically from the legacy state.
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise TypeError(
        "random_state must be None, an int, a numpy.random.SeedSequence or a "
        "numpy.random.Generator, got "
        f"{type(random_state).__name__}."
    )


def check_positive_int(value, name, minimum=1):
    """Return ``value`` as int, raising ``ValueError`` if it is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)
