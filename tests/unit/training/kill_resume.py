"""Kill a training command the hard way (SIGKILL of its process group, as an OOM killer or a
preempted node does) and let the test resume it; shared by the train-* kill/resume tests.

As a script, runs a ``pykaldi2`` command whose checkpoint ``ckpt-<N>.pt`` write is killed half
written (the torch.save of that file writes half its bytes, then the process SIGKILLs itself):

    python kill_resume.py --kill-in-checkpoint N train-ce --config C EXP
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEOUT_S = 300


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYKALDI2_NO_PROGRESS": "1"}


def _wait(proc: subprocess.Popen, err, what: str) -> None:
    proc.wait(timeout=TIMEOUT_S)
    if proc.returncode != -signal.SIGKILL:
        err.seek(0)
        raise AssertionError(f"{what}: exit {proc.returncode}, not killed:\n{err.read()[-3000:]}")


def training_window(exp: Path, after_step: int) -> float:
    """Seconds from ``ckpt-<after_step>.pt`` to ``final`` in a finished run's exp dir (their
    mtimes): how long a run is still training after that checkpoint."""
    ckpt = exp / "checkpoints" / f"ckpt-{after_step}.pt"
    return max((exp / "final").stat().st_mtime - ckpt.stat().st_mtime, 0.0)


def run_and_kill(argv: list[str], exp: Path, after_step: int, max_delay: float, seed: int) -> None:
    """Run ``pykaldi2 argv`` in a child process (its own session, so DataLoader workers and
    lattice pools go too) and SIGKILL its process group at a random moment: ``uniform(0,
    max_delay)`` seconds after ``exp/checkpoints/ckpt-<after_step>.pt`` appears. If the run
    finishes (writes ``exp/final``) before that moment, it is run again from scratch and killed
    as soon as the checkpoint appears. Asserts that the run was killed before ``exp/final``."""
    delay = random.Random(seed).uniform(0.0, max_delay)
    target = exp / "checkpoints" / f"ckpt-{after_step}.pt"
    for attempt_delay in (delay, 0.0):
        if exp.exists():
            import shutil

            shutil.rmtree(exp)
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pykaldi2", *argv], env=_env(),
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, text=True,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + TIMEOUT_S
                while not target.exists():
                    if proc.poll() is not None:
                        err.seek(0)
                        raise AssertionError(
                            f"ended (exit {proc.returncode}) before {target}:\n{err.read()[-3000:]}"
                        )
                    if time.monotonic() > deadline:
                        raise AssertionError(f"no {target} after {TIMEOUT_S} s")
                    time.sleep(0.005)
                time.sleep(attempt_delay)
                finished = proc.poll() is not None or (exp / "final").exists()
                if not finished:
                    os.killpg(proc.pid, signal.SIGKILL)
                    _wait(proc, err, " ".join(argv))
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if not finished:
            assert not (exp / "final").exists(), "killed after the final dir was written"
            return
    raise AssertionError(f"{' '.join(argv)} finished before it could be killed")


def check_kill_and_resume(cmd: list[str], root: Path, after_step: int, seed: int, weights) -> None:
    """``pykaldi2 cmd root/full`` uninterrupted (in this process); ``pykaldi2 cmd root/parts``
    killed at a random moment after checkpoint ``after_step`` (:func:`run_and_kill`), then the
    same command again (resumes): ``weights(exp)`` (name -> tensor) of both equal bit for bit.
    ``cmd`` should keep every checkpoint (``trainer.keep_last``) to time the window."""
    import torch

    from pykaldi2.cli.main import main

    full, parts = root / "full", root / "parts"
    assert main([*cmd, str(full)]) == 0
    run_and_kill([*cmd, str(parts)], parts, after_step, 0.8 * training_window(full, after_step),
                 seed)  # fmt: skip
    assert main([*cmd, str(parts)]) == 0
    a, b = weights(full), weights(parts)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def run_killed_in_checkpoint(argv: list[str], step: int) -> None:
    """Run ``pykaldi2 argv`` in a child process whose write of ``ckpt-<step>.pt`` dies half
    written (see the module doc)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--kill-in-checkpoint", str(step), *argv], env=_env(),
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, text=True,
        )  # fmt: skip
        _wait(proc, err, " ".join(argv))


def _main() -> None:
    import io

    import torch

    step, argv = int(sys.argv[2]), sys.argv[3:]
    save = torch.save

    def dying_save(obj, f, *args, **kw):
        if os.path.basename(str(getattr(f, "name", ""))).startswith(f".ckpt-{step}.pt."):
            buf = io.BytesIO()
            save(obj, buf, *args, **kw)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, f, *args, **kw)

    torch.save = dying_save
    from pykaldi2.cli.main import main

    sys.exit(main(argv))


if __name__ == "__main__":
    _main()
