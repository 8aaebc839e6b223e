"""Worker processes that never outlive the command that started them.

Every ``--nj`` command runs its jobs in ``spawn`` processes (the Kaldi bindings do not release
the GIL and their FSTs do not pickle). When the parent is killed with SIGKILL it cannot clean
up, so each worker asks the kernel to kill it when its parent dies (Linux
``prctl(PR_SET_PDEATHSIG, SIGKILL)``; a no-op elsewhere) and checks that the parent is still
there (it may have died before the request). Pass :func:`die_with_parent` as the initializer of
every pool, or call it first thing in a worker:

    >>> ctx = spawn_context()
    >>> ProcessPoolExecutor(nj, mp_context=ctx, initializer=die_with_parent)
    >>> ctx.Pool(nj, initializer=init_worker)   # init_worker calls die_with_parent()
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this process receive SIGKILL when its parent exits (Linux; elsewhere a no-op).

    ``parent_pid``: the expected parent; if the process has already been re-parented (the
    parent died before the request took effect) it exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: nothing to do
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def spawn_context():
    """The ``spawn`` multiprocessing context every pool of the project uses."""
    return multiprocessing.get_context("spawn")
