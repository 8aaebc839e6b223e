"""Parallel jobs the way Kaldi's ``run.pl`` runs them: ``JOB=1:N``, one process and one log
file per job, one BLAS thread each.

>>> with JobRunner(nj=4) as run:
...     results = run(acc_job, [args_1, args_2, args_3, args_4], log="exp/tri1/log/acc.3.JOB.log")

``run(fn, jobs, log=...)`` calls ``fn(job)`` for every job (``fn`` a module-level function,
``job`` picklable) and returns the results in job order. Jobs run in spawned worker processes
that live as long as the runner (a training command reuses them every iteration), or in this
process when there is a single job. Each job logs to ``log`` with ``JOB`` replaced by its
1-based number, framed like run.pl's logs (``# Started at``, ``# Accounting: time=``,
``# Ended (code 0)``). A job that fails is reported with its log file after the others have
finished. Workers die with their parent (``PR_SET_PDEATHSIG`` on Linux) and use one BLAS/OpenMP
thread (the parallelism is the jobs).

This is the one entry point for parallel work of the hmm stage; a cluster backend (Kaldi's
``--cmd queue.pl``) would implement the same ``run``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.log import progress

log = logging.getLogger(__name__)

#: Environment variables that pin BLAS/OpenMP libraries to one thread in a job.
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
_LOG_FMT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


class JobError(Pykaldi2Error):
    """A job failed; the message names its log file."""


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


_LIMITS: list = []


def _init_worker(level: int) -> None:
    _die_with_parent()
    os.environ.update(ONE_THREAD_ENV)
    os.environ["PYKALDI2_NO_PROGRESS"] = "1"
    from threadpoolctl import threadpool_limits

    _LIMITS.append(threadpool_limits(limits=1))
    logging.getLogger().setLevel(level)


@contextlib.contextmanager
def job_log(path: str | os.PathLike | None, title: str) -> Iterator[None]:
    """Send this process's log records to ``path`` inside the block, with run.pl's header and
    footer lines; a failure writes its traceback there before it propagates."""
    if path is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LOG_FMT, datefmt="%H:%M:%S"))
    stream = handler.stream
    t0 = time.time()
    stream.write(f"# {title}\n# Started at {time.ctime(t0)}\n#\n")
    stream.flush()
    old_level = root.level
    # the job's INFO records go to its log; handlers already there keep their threshold
    kept = [(h, h.level) for h in root.handlers]
    for h, lvl in kept:
        h.setLevel(max(lvl, root.getEffectiveLevel()))
    root.addHandler(handler)
    root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
    try:
        yield
    except BaseException:
        stream.write(traceback.format_exc())
        stream.write(f"# Accounting: time={time.time() - t0:.0f} threads=1\n")
        stream.write(f"# Ended (code 1) at {time.ctime()}, elapsed {time.time() - t0:.1f} s\n")
        raise
    else:
        stream.write(f"# Accounting: time={time.time() - t0:.0f} threads=1\n")
        stream.write(f"# Ended (code 0) at {time.ctime()}, elapsed {time.time() - t0:.1f} s\n")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for h, lvl in kept:
            h.setLevel(lvl)
        handler.close()


def _call(fn: Callable, job: Any, log_path: str | None, title: str) -> Any:
    with job_log(log_path, title):
        return fn(job)


class JobRunner:
    """Kaldi's run.pl: run ``nj`` jobs at a time, each in its own process with a log file.

    Args:
        nj: the number of jobs (and worker processes) per call.
        inline: run jobs in this process, one after the other (default: only when ``nj == 1``).
    """

    def __init__(self, nj: int = 1, *, inline: bool | None = None) -> None:
        if nj < 1:
            raise Pykaldi2Error(f"--nj must be >= 1, got {nj}")
        self.nj = nj
        self.inline = nj == 1 if inline is None else inline
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            saved = {k: os.environ.get(k) for k in ONE_THREAD_ENV}
            os.environ.update(ONE_THREAD_ENV)  # inherited by the spawned workers
            try:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.nj,
                    mp_context=mp.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(logging.getLogger().getEffectiveLevel(),),
                )
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        return self._pool

    def __call__(
        self,
        fn: Callable[[Any], Any],
        jobs: Sequence[Any],
        *,
        log: str | os.PathLike | None = None,
        desc: str | None = None,
    ) -> list[Any]:
        """Run ``fn(job)`` for each job; results in job order.

        Args:
            fn: a module-level (picklable) function.
            jobs: one picklable argument per job.
            log: log file pattern with ``JOB`` for the 1-based job number.
            desc: progress-bar text (default: the function name).
        """
        desc = desc or fn.__name__
        logs = [
            None if log is None else str(log).replace("JOB", str(j + 1)) for j in range(len(jobs))
        ]
        titles = [f"{desc} JOB={j + 1}" for j in range(len(jobs))]
        results: list[Any] = [None] * len(jobs)
        errors: list[tuple[int, BaseException]] = []
        bar = progress(total=len(jobs), desc=desc, unit="job", leave=False)
        if self.inline:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"):
                for j, job in enumerate(jobs):
                    try:
                        results[j] = _call(fn, job, logs[j], titles[j])
                    except Pykaldi2Error:
                        raise
                    except Exception as e:  # noqa: BLE001 - reported with its log file below
                        errors.append((j, e))
                        break
                    bar.update(1)
        else:
            pool = self._executor()
            futures: list[Future] = [
                pool.submit(_call, fn, job, logs[j], titles[j]) for j, job in enumerate(jobs)
            ]
            for j, fut in enumerate(futures):
                try:
                    results[j] = fut.result()
                except Pykaldi2Error as e:
                    errors.append((j, e))
                except Exception as e:  # noqa: BLE001
                    errors.append((j, e))
                bar.update(1)
        bar.close()
        if errors:
            j, e = errors[0]
            where = f"; see {logs[j]}" if logs[j] else ""
            if isinstance(e, Pykaldi2Error):
                raise e  # bad input: its message names the file/utterance and the fix
            raise JobError(f"{desc} JOB={j + 1} failed ({type(e).__name__}: {e}){where}") from e
        return results

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> JobRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
