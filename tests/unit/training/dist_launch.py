"""Launch torchrun / horovodrun from a test: a timeout that fails fast with every rank's Python
stacks, and no process of the launch left behind.

Both launchers start each rank in a session of its own (torch elastic's ``start_new_session``,
Horovod's ``os.setsid``), so killing the launcher, or even its process group, leaves the ranks
running as orphans. Every process of a launch therefore carries a tag in its environment
(``PYKALDI2_TEST_LAUNCH``), and on a timeout :func:`launch` signals SIGUSR1 to the ranks,
whose handler (``PYKALDI2_STACKS_DIR``, registered by
:meth:`pykaldi2.training.distributed.Dist.from_env`) writes all their threads' stacks to a file
each, then finds every process of the launch by its tag in /proc and SIGKILLs them and the
launcher's own process group (``start_new_session``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

TAG = "PYKALDI2_TEST_LAUNCH"


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def tagged_processes(tag: str) -> dict[int, dict[str, str]]:
    """{pid: environment} of every live process whose environment has ``TAG=tag``."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            env = _environ(int(d.name))
            if env.get(TAG) == tag:
                out[int(d.name)] = env
    return out


def _kill(pids, pgids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def _dump_stacks(tag: str, stacks_dir: Path) -> str:
    """Every rank's stacks, as one text: each rank's handler file names its pid on the first
    line; SIGUSR1 makes it append all its threads' stacks."""
    files = sorted(stacks_dir.glob("rank*.stacks"), key=lambda f: int(f.stem[4:]))
    header = {f: f.read_text().split("\n", 1)[0] for f in files}
    for line in header.values():
        try:
            os.kill(int(line.split()[1]), signal.SIGUSR1)
        except (IndexError, ValueError, ProcessLookupError):
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        f.stat().st_size <= len(header[f]) + 1 for f in files
    ):
        time.sleep(0.2)
    time.sleep(0.5)  # let a dump in progress finish
    parts = [f"--- {f.stem}, {f.read_text(errors='replace')}" for f in files]
    procs = "\n".join(f"  {pid}: {_cmdline(pid)}" for pid in sorted(tagged_processes(tag)))
    return (
        "\n".join(parts or ["(no rank has a stack handler: none reached Dist.from_env)"])
        + f"\nprocesses:\n{procs}"
    )


def run_launch(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run the launch ``cmd`` in ``cwd`` (one torch thread per rank, no progress bars) and
    return how it ended; past ``timeout`` seconds fail with every rank's stacks. Either way no
    process of the launch survives it."""
    tag = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="pk2-stacks-") as stacks:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYKALDI2_NO_PROGRESS="1")
        env.update({TAG: tag, "PYKALDI2_STACKS_DIR": stacks})
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, text=True, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            dump = _dump_stacks(tag, Path(stacks))
            left = tagged_processes(tag)
            _kill([proc.pid, *left], {proc.pid, *left})
            out, err = proc.communicate()
            raise AssertionError(
                f"{' '.join(map(str, cmd))}: no exit after {timeout:.0f} s; the stacks of the "
                f"ranks:\n{dump}\n--- stdout ---\n{out[-2000:]}\n--- stderr ---\n{err[-4000:]}"
            ) from None
        finally:
            _kill(tagged_processes(tag), {proc.pid})
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def launch(cmd: list[str], cwd: Path, timeout: float, retries: int = 1) -> None:
    """:func:`run_launch`, asserting exit status 0. After gloo's teardown race at interpreter
    exit ("terminate called without an active exception": a rank aborts after its work is done
    and saved; see test_training_distributed.py) it runs up to ``retries`` more times; anything
    else fails at once."""
    for _attempt in range(retries + 1):
        proc = run_launch(cmd, cwd, timeout)
        if proc.returncode == 0 or "terminate called without" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
