"""Jobs on a SLURM cluster the way Kaldi's ``utils/parallel/slurm.pl`` runs them (``--cmd
slurm.pl``): one array job per call, submitted with ``sbatch`` and waited for.

For a call of :class:`~pykaldi2.utils.jobs.JobRunner` with the log pattern
``exp/tri1/log/acc.3.JOB.log`` (slurm.pl's layout: ``q/`` beside ``log/``)::

    exp/tri1/q/acc.3.sh             the job script (bash): cd, one-thread environment, runs
                                    ``python -m pykaldi2.utils.slurm q/acc.3.$TASK.in.pkl``,
                                    then touches q/done.<token>.$TASK; ends with the sbatch
                                    command it was submitted with
    exp/tri1/q/acc.3.log            what sbatch and the jobs' stdout/stderr say
    exp/tri1/q/acc.3.J.in.pkl       job J: the function and its argument (pickled)
    exp/tri1/q/acc.3.J.out.pkl      job J's result, or its exception
    exp/tri1/log/acc.3.J.log        job J's log, as run.pl writes it (``# Running on HOST``)

    sbatch --export=PATH --ntasks-per-node=1 [--mem-per-cpu 4G ...] --open-mode=append \\
        -e exp/tri1/q/acc.3.log -o exp/tri1/q/acc.3.log --array=1-4[%MAX] exp/tri1/q/acc.3.sh

The ``--cmd`` options map to sbatch options through a config file in Kaldi's format
(``conf/slurm.conf`` in the current dir if there is one, or ``--config FILE``; else
:data:`DEFAULT_CONFIG`): ``command sbatch ...``, ``option mem=* --mem-per-cpu $0`` (a value put
in), ``option mem=0`` (that value adds nothing), ``default gpu=0``; ``--max-jobs-run N`` is the
array's ``%N``; single-dash options (``-p cpu``) go to sbatch as they are. Kaldi's own
conf/slurm.conf files work unchanged. The default differs from slurm.pl's in one line: no
partition is named for ``--gpu 0`` (slurm.pl's ``-p shared`` is one site's).

Waiting is slurm.pl's: poll for the done files (0.1 s, growing to 3 s); every tenth poll ask
``squeue -j JOBID`` whether the job is still there; when it is gone and a task's done file has
not appeared within :data:`GONE_GRACE` seconds (NFS delays), that task is reported as killed
(time or memory limit, a node failure), naming its log. Interrupting the command (Ctrl-C,
SIGTERM) cancels the job (``scancel``). The scheduling is SLURM's; this module only writes
scripts, submits and waits. The job script runs this interpreter (``sys.executable``) in this
working dir, so the cluster's nodes must see the same paths (Kaldi's assumption too).
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.jobs import ONE_THREAD_ENV, JobCmd, JobError, run_job

#: slurm.pl's default configuration, without its ``gpu=0 -p shared`` (a site's partition).
DEFAULT_CONFIG = """\
command sbatch --export=PATH --ntasks-per-node=1
option time=* --time $0
option mem=* --mem-per-cpu $0
option mem=0
option num_threads=* --cpus-per-task $0
option num_threads=1 --cpus-per-task 1
default gpu=0
option gpu=0
option gpu=* --gres=gpu:$0
"""
#: Seconds a task's done file may lag behind its job leaving the queue (slurm.pl: ~75 s).
GONE_GRACE = 60.0
#: Longest wait between two polls of the done files, seconds (slurm.pl: 3).
POLL_MAX = 3.0
#: Environment variables written into the job script (besides the one-thread ones): the
#: job's Python must find the same modules and settings as this process.
_PASS_ENV = ("PYTHONPATH", "PYKALDI2_SHARED_DATA", "HDF5_USE_FILE_LOCKING")


@dataclass
class SlurmConf:
    """A slurm.pl config file: the submit command and how ``--name value`` options map."""

    command: list[str]
    templates: dict[str, str] = field(default_factory=dict)  # option=* ... $0
    fixed: dict[tuple[str, str], str] = field(default_factory=dict)  # option=value ...
    defaults: dict[str, str] = field(default_factory=dict)  # default option=value
    source: str = "the default config"

    @classmethod
    def parse(cls, text: str, source: str) -> SlurmConf:
        command: list[str] | None = None
        cfg = cls(command=[], source=source)
        for n, raw in enumerate(text.splitlines(), 1):
            line = re.sub(r"\s*#.*", "", raw).strip()
            if not line:
                continue
            if m := re.fullmatch(r"command\s+(.+)", line):
                command = shlex.split(m.group(1))
            elif m := re.fullmatch(r"option\s+([^=\s]+)=\*\s+(.+)", line):
                cfg.templates[m.group(1)] = m.group(2)
            elif m := re.fullmatch(r"option\s+([^=\s]+)=(\S+)\s*(.*)", line):
                cfg.fixed[(m.group(1), m.group(2))] = m.group(3)
            elif m := re.fullmatch(r"default\s+([^=\s]+)=(\S+)", line):
                cfg.defaults[m.group(1)] = m.group(2)
            else:
                raise Pykaldi2Error(f"{source}:{n}: cannot parse {raw!r} (slurm.pl's format)")
        if command is None:
            raise Pykaldi2Error(f"{source}: no 'command sbatch ...' line")
        cfg.command = command
        return cfg

    @classmethod
    def load(cls, cmd: JobCmd) -> SlurmConf:
        """``--config FILE`` of ``cmd``, else ./conf/slurm.conf, else :data:`DEFAULT_CONFIG`."""
        path = cmd.options.get("config")
        if path is not None and not os.path.isfile(path):
            raise Pykaldi2Error(f"--cmd {cmd.text!r}: no config file {path}")
        path = path or ("conf/slurm.conf" if os.path.isfile("conf/slurm.conf") else None)
        if path is None:
            return cls.parse(DEFAULT_CONFIG, "the default slurm config")
        return cls.parse(Path(path).read_text(encoding="utf-8"), path)

    def options(self, cmd: JobCmd) -> list[str]:
        """sbatch options for the ``--name value`` options of ``cmd`` (slurm.pl's rules)."""
        values = {**self.defaults, **cmd.options}
        out: list[str] = []
        for name, value in values.items():
            if name in ("config", "max_jobs_run"):
                continue
            if (name, value) in self.fixed:
                arg = self.fixed[(name, value)]
            elif name in self.templates:
                arg = self.templates[name].replace("$0", value)
            else:
                raise Pykaldi2Error(
                    f"--cmd {cmd.text!r}: option --{name.replace('_', '-')} {value} is not "
                    f"described in {self.source}. Fix: add 'option {name}=* <sbatch options "
                    "with $0>' to conf/slurm.conf, or pass sbatch options with one dash"
                )
            out += shlex.split(arg)
        return out


def queue_paths(log_pattern: str) -> tuple[Path, str]:
    """slurm.pl's ``q/`` dir and base name for a log pattern: ``exp/x/log/acc.3.JOB.log`` ->
    (``exp/x/q``, ``acc.3``)."""
    log_dir = os.path.dirname(os.path.abspath(log_pattern))
    qdir = re.sub(r"/(log|LOG)/*$", "", log_dir) + "/q"
    base = re.sub(r"\.?JOB", "", os.path.basename(log_pattern))
    base = re.sub(r"\.[A-Za-z]{1,5}$", "", base) or "job"
    return Path(qdir), base


def array_spec(ids: Sequence[int], max_run: int | None) -> str:
    """sbatch's ``--array`` value: ranges of ``ids`` (``1-4``, ``2,5-7``), ``%max_run``."""
    parts, ids = [], sorted(ids)
    start = prev = ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts) + (f"%{max_run}" if max_run else "")


def _job_script(qdir: Path, base: str, token: str, submit: list[str]) -> str:
    q = shlex.quote
    env = {**ONE_THREAD_ENV, "PYKALDI2_NO_PROGRESS": "1"}
    env.update({k: os.environ[k] for k in _PASS_ENV if k in os.environ})
    task = "${SLURM_ARRAY_TASK_ID}"
    lines = [
        "#!/bin/bash",
        f"# pykaldi2 jobs {base}: one SLURM array task per job (written by pykaldi2.utils.slurm)",
        f"cd {q(os.getcwd())}",
        *(f"export {k}={q(v)}" for k, v in sorted(env.items())),
        f"{q(sys.executable)} -m pykaldi2.utils.slurm {q(str(qdir / base))}.{task}.in.pkl",
        "ret=$?",
        "sync || true",
        "[ $ret -eq 137 ] && exit 100  # killed (out of memory): no done file",
        f"touch {q(str(qdir))}/done.{token}.{task}",
        "exit $(( ret ? 1 : 0 ))",
        "## submitted with:",
        "# " + " ".join(q(a) for a in submit),
    ]
    return "\n".join(lines) + "\n"


def _write_pickle(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _last_line(path: str | None) -> str:
    try:
        with open(path, "rb") as f:
            lines = f.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "(empty)"
    except (OSError, TypeError):
        return "(no log file)"


class SlurmBackend:
    """Submit a runner call's jobs as one SLURM array job and wait for them (module doc)."""

    def __init__(self, cmd: JobCmd) -> None:
        self.cmd = cmd
        self.config = SlurmConf.load(cmd)
        self.queue_options = self.config.options(cmd)  # a bad option fails before any job

    def sbatch_argv(self, qdir: Path, base: str, ids: Sequence[int]) -> list[str]:
        """The sbatch command line for jobs ``ids`` of ``qdir/base.sh``."""
        qlog = str(qdir / f"{base}.log")
        return [
            *self.config.command,
            *self.queue_options,
            *self.cmd.extra,
            "--open-mode=append",
            "-e", qlog,
            "-o", qlog,
            f"--array={array_spec(ids, self.cmd.max_jobs_run)}",
            str(qdir / f"{base}.sh"),
        ]  # fmt: skip

    def run(
        self,
        fn: Callable,
        jobs: list,
        ids: list[int],
        logs: list[str | None],
        titles: list[str],
        log_pattern: str,
        desc: str,
        on_done: Callable[[], Any] = lambda: None,
    ) -> list[tuple[bool, Any]]:
        qdir, base = queue_paths(log_pattern)
        qdir.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:12]
        for i, job, lg, title in zip(ids, jobs, logs, titles):
            (qdir / f"{base}.{i}.out.pkl").unlink(missing_ok=True)
            _write_pickle(qdir / f"{base}.{i}.in.pkl", (fn, job, lg, title))
        argv = self.sbatch_argv(qdir, base, ids)
        script = qdir / f"{base}.sh"
        script.write_text(_job_script(qdir, base, token, argv), encoding="utf-8")
        script.chmod(0o755)
        job_id = self._submit(argv, qdir / f"{base}.log")
        done = {i: qdir / f"done.{token}.{i}" for i in ids}
        try:
            gone = self._wait(job_id, done, on_done)
        except BaseException:
            subprocess.run(["scancel", job_id], capture_output=True, check=False)
            raise
        outcomes = [self._outcome(qdir, base, i, lg, job_id, i in gone) for i, lg in zip(ids, logs)]
        for i, f in done.items():
            f.unlink(missing_ok=True)
            if outcomes[ids.index(i)][0]:
                (qdir / f"{base}.{i}.in.pkl").unlink(missing_ok=True)
        return outcomes

    def _submit(self, argv: list[str], qlog: Path) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise Pykaldi2Error(
                f"--cmd {self.cmd.text!r}: {argv[0]} not found. Fix: run on a machine with "
                "SLURM's tools on PATH, or use --cmd run.pl"
            ) from None
        with open(qlog, "a", encoding="utf-8") as f:
            f.write(p.stdout + p.stderr)
        m = re.search(r"Submitted batch job (\d+)", p.stdout) or re.match(r"(\d+)", p.stdout)
        if p.returncode != 0 or m is None:
            tail = (p.stderr or p.stdout).strip()[-500:]
            raise Pykaldi2Error(
                f"error submitting jobs to SLURM ({argv[0]} exit status {p.returncode}): "
                f"{tail or 'no job id printed'}; queue log {qlog}; command: "
                + " ".join(shlex.quote(a) for a in argv)
            )
        return m.group(1)

    def _in_queue(self, job_id: str) -> bool:
        """Whether ``squeue -j job_id`` still lists a task of the job."""
        try:
            p = subprocess.run(
                ["squeue", "-h", "-j", job_id, "-o", "%i %t"],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return True  # cannot tell: keep waiting for the done files
        return p.returncode == 0 and bool(p.stdout.strip())

    def _wait(self, job_id: str, done: dict[int, Path], on_done) -> set[int]:
        """Wait until every done file exists, or the job has left the queue; the ids of the
        tasks that never reported back."""
        main = threading.current_thread() is threading.main_thread()
        old = signal.getsignal(signal.SIGTERM) if main else None
        if old is signal.SIG_DFL:  # so that `kill` cancels the jobs (slurm.pl's trap)
            signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            waiting, delay, polls, gone_at = set(done), 0.1, 0, None
            while waiting:
                for i in [i for i in waiting if done[i].exists()]:
                    waiting.discard(i)
                    on_done()
                if not waiting:
                    break
                if gone_at is not None and time.monotonic() - gone_at >= GONE_GRACE:
                    return waiting
                time.sleep(delay)
                delay = min(delay * 1.2, POLL_MAX)
                polls += 1
                if gone_at is None and polls % 10 == 0 and not self._in_queue(job_id):
                    gone_at = time.monotonic()
                    try:  # NFS: listing the dir refreshes its cached entries
                        os.listdir(next(iter(done.values())).parent)
                    except OSError:
                        pass
            return set()
        finally:
            if old is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, old)

    @staticmethod
    def _outcome(qdir, base, i, log_file, job_id, gone: bool) -> tuple[bool, Any]:
        out = qdir / f"{base}.{i}.out.pkl"
        if out.is_file():
            try:
                with open(out, "rb") as f:
                    ok, payload = pickle.load(f)
            except Exception as e:  # noqa: BLE001 - a result that does not load
                return False, JobError(f"its result {out} does not load ({e})")
            finally:
                out.unlink(missing_ok=True)
            return ok, payload
        if gone:
            return False, JobError(
                f"did not finish: SLURM job {job_id}_{i} left the queue without reporting "
                f"back (the last line of its log: {_last_line(log_file)!r}). Possible "
                "reasons: the time limit (--time, or more jobs), the memory limit (--mem), "
                f"a node failure; see also {qdir / (base + '.log')}. Run the same command "
                "again"
            )
        return False, JobError(
            f"stopped without a result (crashed?); see the end of its log and "
            f"{qdir / (base + '.log')}"
        )


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling, else a JobError with its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return JobError(f"{type(e).__name__}: {e}")


def task_main(in_path: str) -> int:
    """What a SLURM task runs: load ``q/BASE.J.in.pkl``, run the job under its log, write
    ``q/BASE.J.out.pkl``; exit status 0 (done) or 1 (failed)."""
    import logging

    from threadpoolctl import threadpool_limits

    os.environ.update(ONE_THREAD_ENV)
    logging.getLogger().setLevel(logging.INFO)
    with open(in_path, "rb") as f:
        fn, job, log_file, title = pickle.load(f)
    out = Path(in_path[: -len(".in.pkl")] + ".out.pkl")
    with threadpool_limits(limits=1):
        try:
            payload = (True, run_job(fn, job, log_file, title, host=True))
        except BaseException as e:  # noqa: BLE001 - reported to the submitting command
            payload = (False, _portable(e))
    _write_pickle(out, payload)
    return 0 if payload[0] else 1


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].endswith(".in.pkl"):
        sys.exit("usage: python -m pykaldi2.utils.slurm Q_DIR/BASE.JOB.in.pkl")
    sys.exit(task_main(sys.argv[1]))
