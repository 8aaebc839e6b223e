"""One BLAS thread for GMM training's many small matrix products.

GMM statistics are sums of (G, N) x (N, D) products with small G and D. A multi-threaded
OpenBLAS spins its threads on every one of them; on a loaded machine that made
:func:`~pykaldi2.hmm.gmm.gmm_acc_stats_ali` 25x slower (1.8 s instead of 0.07 s for 26k AN4
frames). Parallelism belongs to processes (one per job), as in Kaldi.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Limit BLAS (OpenBLAS/MKL) to one thread inside the ``with`` block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
