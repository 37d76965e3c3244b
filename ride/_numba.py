"""The one place where numba options are set.

Every jitted kernel in ``ride`` is decorated with one of the decorators below.
The fastmath flags that assume no NaN or inf (``nnan``, ``ninf``) are never
used: they would make ``np.isnan`` lie and hide numerical trouble.

No kernel uses ``parallel=True``: work is split over Python threads by
``ride._threads.run_blocks`` instead, because numba's OpenMP workers spin after
each parallel region and starve the BLAS calls and kernels that follow.  All
kernels are ``nogil`` so that those threads run them concurrently.

``jit_reduce`` allows only re-association and fused multiply-add, which lets
LLVM vectorise sums and dot products.  It changes the rounding of a sum, not
its meaning, and the order is fixed by the code, so results stay
deterministic.
"""

import numba

jit = numba.njit(cache=True, nogil=True, fastmath=False)
jit_reduce = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
#: Fused multiply-add only (``contract``): the spatial LSTM's polynomial exp and
#: tanh run 1.4 times faster and round no worse; NaN and inf keep their meaning.
jit_contract = numba.njit(cache=True, nogil=True, fastmath={"contract"})

#: As ``jit_contract``, with numba's "numpy" error model: the default model
#: checks every division for a zero divisor, which stops LLVM from vectorising
#: a loop; the numpy model gives the IEEE result (inf or NaN) instead.
jit_vectorised = numba.njit(
    cache=True, nogil=True, fastmath={"contract"}, error_model="numpy"
)
