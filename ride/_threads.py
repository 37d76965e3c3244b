"""Keep BLAS and numba from competing for the same cores.

OpenBLAS worker threads keep spinning for a while after a matrix product.
When a parallel numba kernel runs right after one, the two thread pools fight
over the cores and both slow down (measured: the MCGSM log-likelihood ran
2.9 times faster on 2 cores with BLAS limited to one thread).  Code that
interleaves BLAS calls with parallel numba kernels therefore runs inside
:func:`single_threaded_blas`, and lets numba use the cores.
"""

import contextlib
import functools

__all__ = ["single_threaded_blas"]


@functools.lru_cache(maxsize=1)
def _controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return None
    return ThreadpoolController()


def single_threaded_blas():
    """Context manager limiting BLAS libraries to one thread."""
    controller = _controller()
    if controller is None:  # pragma: no cover
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")
