"""Parallel jobs the way Kaldi's ``run.pl`` and ``slurm.pl`` run them: ``JOB=1:N``, one process
and one log file per job, one BLAS thread each, locally or on a cluster (``--cmd``).

>>> with JobRunner(nj=4) as run:
...     results = run(acc_job, [args_1, args_2, args_3, args_4], log="exp/tri1/log/acc.3.JOB.log")

``run(fn, jobs, log=...)`` calls ``fn(job)`` for every job (``fn`` a module-level function,
``job`` picklable) and returns the results in job order. Each job logs to ``log`` with ``JOB``
replaced by its 1-based number, framed like run.pl's logs (``# Started at``,
``# Accounting: time=``, ``# Ended (code 0)``). A job that fails is reported with its log file
after the others have finished (Kaldi's ``N / M failed, log is in ...``).

Where the jobs run is Kaldi's ``--cmd`` (``cmd.sh``'s ``train_cmd`` / ``decode_cmd``), given to
every ``--nj`` command as ``--cmd`` or, by default, in the environment variable
``PYKALDI2_CMD`` (else ``run.pl``):

=================================  =========================================================
``run.pl [--max-jobs-run N]``      this machine: spawned worker processes that live as long
                                   as the runner (a training command reuses them every
                                   iteration), at most N at a time (default: the number of
                                   CPUs, as run.pl); one job runs in this process. Queue
                                   options (``--mem``, ``--num-threads``, ``--gpu``,
                                   ``--time``) are accepted and ignored, as run.pl does.
``slurm.pl [--mem 4G] [--time T]   one SLURM array job per call, submitted with ``sbatch``
[--num-threads N] [--gpu N]        and waited for (:mod:`pykaldi2.utils.slurm`): the options
[--max-jobs-run N] [--config F]    map to sbatch options through Kaldi's ``conf/slurm.conf``
[-p PARTITION ...]``               format; single-dash options go to sbatch as they are.
=================================  =========================================================

Local workers die with their parent (:func:`~pykaldi2.utils.proc.die_with_parent`) and use one BLAS/OpenMP
thread (the parallelism is the jobs). A job may report progress in units of work
(:func:`job_progress`, e.g. one per utterance) for a progress bar over ``total`` units.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import shlex
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.log import progress
from pykaldi2.utils.proc import die_with_parent

log = logging.getLogger(__name__)

#: Environment variables that pin BLAS/OpenMP libraries to one thread in a job.
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
#: The environment variable that holds the default ``--cmd`` (Kaldi's cmd.sh ``train_cmd``).
CMD_ENV = "PYKALDI2_CMD"
#: The ``--cmd`` programs understood (Kaldi's names).
BACKENDS = ("run.pl", "slurm.pl")
_LOG_FMT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


class JobError(Pykaldi2Error):
    """A job failed; the message names its log file."""


# ---------------------------------------------------------------------------------------------
# --cmd
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobCmd:
    """A parsed ``--cmd`` string, e.g. ``slurm.pl --mem 4G --max-jobs-run 20 -p cpu``.

    Attributes:
        backend: ``"run.pl"`` or ``"slurm.pl"``.
        options: the ``--name value`` options with Kaldi's key spelling (``--max-jobs-run 20``
            -> ``{"max_jobs_run": "20"}``), mapped to queue options by the backend's config.
        extra: single-dash options passed to the queue as they are (``-p cpu``).
        text: the string it was parsed from.
    """

    backend: str = "run.pl"
    options: dict[str, str] = field(default_factory=dict)
    extra: tuple[str, ...] = ()
    text: str = "run.pl"

    @property
    def max_jobs_run(self) -> int | None:
        """``--max-jobs-run`` (GridEngine's ``-tc``): how many jobs run at a time, or None."""
        v = self.options.get("max_jobs_run")
        return None if v is None else int(v)


def default_cmd() -> str:
    """The ``--cmd`` used when a command is given none: ``$PYKALDI2_CMD``, else ``run.pl``."""
    return os.environ.get(CMD_ENV, "").strip() or "run.pl"


def parse_cmd(cmd: str | JobCmd | None) -> JobCmd:
    """Parse a ``--cmd`` string the way run.pl / slurm.pl read their options (None: the
    default, :func:`default_cmd`). The program may be given as a path (``utils/run.pl``)."""
    if isinstance(cmd, JobCmd):
        return cmd
    text = default_cmd() if cmd is None or not str(cmd).strip() else str(cmd).strip()
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise Pykaldi2Error(f"--cmd {text!r}: {e}") from None
    prog = os.path.basename(words[0])
    fix = "use run.pl (this machine) or slurm.pl (sbatch), e.g. --cmd 'slurm.pl --mem 4G'"
    if prog not in BACKENDS:
        raise Pykaldi2Error(f"--cmd {text!r}: {prog!r} is not a known job runner. Fix: {fix}")
    options: dict[str, str] = {}
    extra: list[str] = []
    rest = words[1:]
    while rest:
        w = rest.pop(0)
        if w == "-V":  # GridEngine's export-the-environment flag: taken, as Kaldi's scripts do
            extra.append(w)
            continue
        if not w.startswith("-"):
            raise Pykaldi2Error(
                f"--cmd {text!r}: unexpected {w!r} (the command gives JOB=1:N and the log "
                f"files itself). Fix: {fix}"
            )
        if not rest:
            raise Pykaldi2Error(f"--cmd {text!r}: option {w} has no value")
        value = rest.pop(0)
        if w == "-tc":
            options["max_jobs_run"] = value
        elif w.startswith("--"):
            options[w[2:].replace("-", "_")] = value
        else:
            extra += [w, value]
    if "max_jobs_run" in options:
        v = options["max_jobs_run"]
        if not v.isdigit() or int(v) < 1:
            raise Pykaldi2Error(f"--cmd {text!r}: --max-jobs-run must be a positive int, got {v}")
    return JobCmd(prog, options, tuple(extra), text)


def cpu_count() -> int:
    """CPUs this process may run on (run.pl's default number of jobs at a time)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# What a job does around ``fn(job)``: its log, its progress
# ---------------------------------------------------------------------------------------------
_LIMITS: list = []
#: Where :func:`job_progress` sends its counts in this process (None: nowhere).
_PROGRESS: list[Callable[[int], Any] | None] = [None]


def job_progress(n: int = 1) -> None:
    """Report ``n`` more units of work done (e.g. utterances) from inside a job, for the
    progress bar of a runner call with ``total``; a no-op where no bar listens (a cluster job,
    a call without ``total``)."""
    sink = _PROGRESS[0]
    if sink is not None and n:
        sink(n)


def _init_worker(parent_pid: int, level: int, progress_queue=None) -> None:
    die_with_parent(parent_pid)
    os.environ.update(ONE_THREAD_ENV)
    os.environ["PYKALDI2_NO_PROGRESS"] = "1"
    from threadpoolctl import threadpool_limits

    _LIMITS.append(threadpool_limits(limits=1))
    logging.getLogger().setLevel(level)
    _PROGRESS[0] = None if progress_queue is None else progress_queue.put


def memory_mb() -> dict[str, float]:
    """This process's resident set now (``rss``) and its high-water mark so far (``peak``), in
    MB, from /proc/self/status (Linux); the peak alone from getrusage elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            kv = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return {
            "rss": int(kv["VmRSS"].split()[0]) / 1024,
            "peak": int(kv["VmHWM"].split()[0]) / 1024,
        }
    except (OSError, KeyError, ValueError):
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"rss": float("nan"), "peak": r}


def _memory_line(before: dict[str, float]) -> str:
    """The job log's memory line: the process's RSS at the job's start and end and its peak so
    far. A worker process runs many jobs, so its peak covers the earlier ones too: the job that
    raised it is the first whose peak is higher than the previous one's."""
    m = memory_mb()
    return (
        f"# Memory: rss {before['rss']:.0f} -> {m['rss']:.0f} MB, process peak {m['peak']:.0f} MB"
        f" (pid {os.getpid()})\n"
    )


@contextlib.contextmanager
def job_log(path: str | os.PathLike | None, title: str, *, host: bool = False) -> Iterator[None]:
    """Send this process's log records to ``path`` inside the block, with run.pl's header and
    footer lines (``host``: also slurm.pl's ``# Running on HOST``); a failure writes its
    traceback there before it propagates."""
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
    where = f"# Running on {socket.gethostname()}\n" if host else ""
    stream.write(f"# {title}\n{where}# Started at {time.ctime(t0)}\n#\n")
    stream.flush()
    old_level = root.level
    # the job's INFO records go to its log; handlers already there keep their threshold
    kept = [(h, h.level) for h in root.handlers]
    for h, lvl in kept:
        h.setLevel(max(lvl, root.getEffectiveLevel()))
    root.addHandler(handler)
    root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
    rss0 = memory_mb()
    try:
        yield
    except BaseException:
        stream.write(traceback.format_exc())
        stream.write(f"# Accounting: time={time.time() - t0:.0f} threads=1\n")
        stream.write(_memory_line(rss0))
        stream.write(f"# Ended (code 1) at {time.ctime()}, elapsed {time.time() - t0:.1f} s\n")
        raise
    else:
        stream.write(f"# Accounting: time={time.time() - t0:.0f} threads=1\n")
        stream.write(_memory_line(rss0))
        stream.write(f"# Ended (code 0) at {time.ctime()}, elapsed {time.time() - t0:.1f} s\n")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for h, lvl in kept:
            h.setLevel(lvl)
        handler.close()


def run_job(fn: Callable, job: Any, log_path: str | None, title: str, host: bool = False) -> Any:
    """``fn(job)`` inside its :func:`job_log` (what every backend runs for one job)."""
    with job_log(log_path, title, host=host):
        return fn(job)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------
class JobRunner:
    """Kaldi's run.pl / slurm.pl: run ``nj`` jobs per call, each in its own process (locally
    or as a SLURM task) with a log file.

    Args:
        nj: the number of jobs per call (local worker processes: at most ``--max-jobs-run``,
            default the number of CPUs).
        inline: run jobs in this process, one after the other (default: only when ``nj == 1``
            and the jobs run locally).
        cmd: where the jobs run (``--cmd``; see the module doc). None: :func:`default_cmd`.
    """

    def __init__(
        self, nj: int = 1, *, inline: bool | None = None, cmd: str | JobCmd | None = None
    ) -> None:
        if nj < 1:
            raise Pykaldi2Error(f"--nj must be >= 1, got {nj}")
        self.nj = nj
        self.cmd = parse_cmd(cmd)
        self.cluster = self.cmd.backend != "run.pl"
        self.inline = (nj == 1 if inline is None else inline) and not self.cluster
        self.workers = min(nj, self.cmd.max_jobs_run or cpu_count())
        self._pool: ProcessPoolExecutor | None = None
        self._queue = None
        self._backend = None
        if self.cluster:
            from pykaldi2.utils.slurm import SlurmBackend

            self._backend = SlurmBackend(self.cmd)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            saved = {k: os.environ.get(k) for k in ONE_THREAD_ENV}
            os.environ.update(ONE_THREAD_ENV)  # inherited by the spawned workers
            ctx = mp.get_context("spawn")
            # progress units: a SimpleQueue writes to its pipe in put() (no feeder thread), so
            # a job's units are in the pipe before its result reaches this process
            self._queue = ctx.SimpleQueue()
            try:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=ctx,
                    initializer=_init_worker,
                    initargs=(os.getpid(), logging.getLogger().getEffectiveLevel(), self._queue),
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
        ids: Sequence[int] | None = None,
        total: int | None = None,
        unit: str = "utt",
    ) -> list[Any]:
        """Run ``fn(job)`` for each job; results in job order.

        Args:
            fn: a module-level (picklable) function.
            jobs: one picklable argument per job.
            log: log file pattern with ``JOB`` for the job number (needed on a cluster: the
                queue's files go to ``q/`` beside the log dir, as slurm.pl puts them).
            desc: progress-bar text (default: the function name).
            ids: the jobs' numbers (default 1..len(jobs); e.g. the unfinished jobs of a
                resumed run).
            total: units of work in all jobs (reported by :func:`job_progress`): the bar
                counts those (in ``unit``) instead of jobs.
        """
        desc = desc or fn.__name__
        ids = list(range(1, len(jobs) + 1)) if ids is None else [int(i) for i in ids]
        if len(ids) != len(jobs):
            raise Pykaldi2Error(f"{desc}: {len(ids)} job numbers for {len(jobs)} jobs")
        if not jobs:
            return []
        logs = [None if log is None else str(log).replace("JOB", str(i)) for i in ids]
        titles = [f"{desc} JOB={i}" for i in ids]
        if total is None or self._backend is not None:  # a cluster's tasks report no units
            total = None
            bar = progress(total=len(jobs), desc=desc, unit="job", leave=False)
        else:
            bar = progress(total=total, desc=desc, unit=unit)
        job_done = (lambda: bar.update(1)) if total is None else (lambda: None)
        outcomes: list[tuple[bool, Any]]
        try:
            if self._backend is not None:
                if log is None:
                    raise Pykaldi2Error(f"{desc}: cluster jobs need a log file pattern")
                outcomes = self._backend.run(
                    fn, list(jobs), ids, logs, titles, str(log), desc, on_done=job_done
                )
            elif self.inline:
                outcomes = self._run_inline(fn, jobs, logs, titles, bar, total, job_done)
            else:
                outcomes = self._run_pool(fn, jobs, logs, titles, bar, job_done)
        finally:
            bar.close()
        failed = [(i, lg, e) for i, lg, (ok, e) in zip(ids, logs, outcomes) if not ok]
        if failed:
            i, lg, e = failed[0]
            if isinstance(e, Pykaldi2Error) and not isinstance(e, JobError):
                raise e  # bad input: its message names the file/utterance and the fix
            where = f"; see {lg}" if lg else ""
            more = f" ({len(failed)} of {len(jobs)} jobs failed)" if len(failed) > 1 else ""
            if isinstance(e, JobError):
                raise JobError(f"{desc} JOB={i}: {e}{where}{more}")
            raise JobError(f"{desc} JOB={i} failed ({type(e).__name__}: {e}){where}{more}") from e
        return [r for _, r in outcomes]

    def _run_inline(self, fn, jobs, logs, titles, bar, total, job_done) -> list[tuple[bool, Any]]:
        from threadpoolctl import threadpool_limits

        outcomes: list[tuple[bool, Any]] = []
        _PROGRESS[0] = bar.update if total is not None else None
        try:
            with threadpool_limits(limits=1, user_api="blas"):
                for j, job in enumerate(jobs):
                    try:
                        outcomes.append((True, run_job(fn, job, logs[j], titles[j])))
                    except Pykaldi2Error:
                        raise
                    except Exception as e:  # noqa: BLE001 - reported with its log file
                        outcomes.append((False, e))
                        break
                    job_done()
        finally:
            _PROGRESS[0] = None
        # a job that did not run after a failure is not reported (the first failure is)
        return outcomes + [(True, None)] * (len(jobs) - len(outcomes))

    def _drain(self, bar) -> None:
        while self._queue is not None and not self._queue.empty():
            bar.update(self._queue.get())

    def _run_pool(self, fn, jobs, logs, titles, bar, job_done) -> list[tuple[bool, Any]]:
        pool = self._executor()
        futures: list[Future] = [
            pool.submit(run_job, fn, job, logs[j], titles[j]) for j, job in enumerate(jobs)
        ]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self._drain(bar)
            for _ in done:
                job_done()
        self._drain(bar)
        outcomes: list[tuple[bool, Any]] = []
        for fut in futures:
            try:
                outcomes.append((True, fut.result()))
            except BrokenProcessPool:
                self._pool = None  # unusable now; a later call starts new workers
                outcomes.append(
                    (False, JobError("its process died (killed, or out of memory); run the "
                                     "same command again to resume"))
                )  # fmt: skip
            except Exception as e:  # noqa: BLE001
                outcomes.append((False, e))
        return outcomes

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def __enter__(self) -> JobRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
