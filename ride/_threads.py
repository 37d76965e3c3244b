"""Threads: how ``ride`` uses the cores.

OpenBLAS worker threads keep spinning for a while after a matrix product, and
numba's OpenMP workers do the same after a parallel region; interleaved, the
two pools fight over the cores and both slow down (measured: the MCGSM
log-likelihood ran 2.9 times faster on 2 cores once BLAS was limited to one
thread).  So numerical work runs inside :func:`single_threaded_blas`, and each
of ``numba.get_num_threads()`` Python threads does the matrix products and the
kernels of its own rows.

Work is spread with :func:`run_blocks` over plain Python threads that run
nogil numba kernels, BLAS products and numpy ufuncs (all of which release the
GIL), rather than over numba's ``prange``: numba's OpenMP workers spin after
each parallel region, while threads of a ``ThreadPoolExecutor`` sleep when
idle.  Block boundaries depend only on the number of rows, never on the
number of threads, so every row sees the same arithmetic however many threads
run.
"""

import contextlib
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

__all__ = ["single_threaded_blas", "run_blocks"]

_POOL_LOCK = threading.Lock()
_POOLS = {}


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


def _thread_pool(num_threads):
    """A pool of ``num_threads - 1`` workers (the caller is the last one)."""
    with _POOL_LOCK:
        pool = _POOLS.get(num_threads)
        if pool is None:
            pool = ThreadPoolExecutor(num_threads - 1, thread_name_prefix="ride")
            _POOLS[num_threads] = pool
    return pool


def run_blocks(function, count, block_rows):
    """Call ``function(start, stop)`` once per block of ``range(count)``.

    The blocks have about ``block_rows`` rows each and boundaries that depend
    only on ``count``.  Up to ``numba.get_num_threads()`` threads each take a
    contiguous run of blocks, in order; the calling thread takes the first run.
    ``function`` must write only to its own rows (or to storage keyed by
    ``start``), never accumulate into shared arrays.
    """
    num_blocks = max(1, -(-count // block_rows))
    bounds = [count * b // num_blocks for b in range(num_blocks + 1)]
    num_threads = min(numba.get_num_threads(), num_blocks)

    def run(first, last):
        for b in range(first, last):
            function(bounds[b], bounds[b + 1])

    if num_threads <= 1:
        run(0, num_blocks)
        return
    pool = _thread_pool(num_threads)
    runs = [num_blocks * t // num_threads for t in range(num_threads + 1)]
    futures = [pool.submit(run, runs[t], runs[t + 1]) for t in range(1, num_threads)]
    run(runs[0], runs[1])
    for future in futures:
        future.result()
