"""The one place where numba options are set.

Every jitted kernel in ``ride`` is decorated with :data:`jit` or
:data:`jit_parallel`.  ``fastmath`` is deliberately off: the flags that assume
no NaN or inf would make ``np.isnan`` lie and hide numerical trouble.
"""

import numba

jit = numba.njit(cache=True, nogil=True, fastmath=False)
jit_parallel = numba.njit(cache=True, nogil=True, fastmath=False, parallel=True)
prange = numba.prange
