"""--cmd (Kaldi's run.pl / slurm.pl): parsing, the local runner, and SLURM jobs built and run
through stand-ins for sbatch / squeue / scancel (the ``fake_slurm`` fixture)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import job_fns
import pytest

from pykaldi2.utils import slurm
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.jobs import JobError, JobRunner, parse_cmd
from pykaldi2.utils.slurm import SlurmBackend, SlurmConf, array_spec, queue_paths


def test_parse_cmd_as_run_pl_and_slurm_pl_read_options(monkeypatch):
    c = parse_cmd("utils/parallel/slurm.pl --mem 4G --max-jobs-run 20 -p cpu --num-threads 2")
    assert c.backend == "slurm.pl" and c.max_jobs_run == 20
    assert c.options == {"mem": "4G", "max_jobs_run": "20", "num_threads": "2"}
    assert c.extra == ("-p", "cpu")
    assert parse_cmd("run.pl -tc 3").max_jobs_run == 3  # GridEngine's spelling, as run.pl
    monkeypatch.delenv("PYKALDI2_CMD", raising=False)
    assert parse_cmd(None).backend == "run.pl"
    monkeypatch.setenv("PYKALDI2_CMD", "slurm.pl --mem 2G")  # cmd.sh's export train_cmd=...
    assert parse_cmd(None).options == {"mem": "2G"}
    with pytest.raises(Pykaldi2Error, match="'queue.pl' is not a known job runner.*slurm.pl"):
        parse_cmd("queue.pl --mem 2G")
    with pytest.raises(Pykaldi2Error, match="unexpected 'JOB=1:4'"):
        parse_cmd("run.pl JOB=1:4")
    with pytest.raises(Pykaldi2Error, match="--max-jobs-run must be a positive int"):
        parse_cmd("run.pl --max-jobs-run 0")
    with pytest.raises(Pykaldi2Error, match="--mem has no value"):
        parse_cmd("slurm.pl --mem")


def test_slurm_options_map_as_slurm_pl_maps_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = SlurmConf.load(parse_cmd("slurm.pl"))
    assert cfg.command == ["sbatch", "--export=PATH", "--ntasks-per-node=1"]
    opts = cfg.options(parse_cmd("slurm.pl --mem 4G --time 2:00:00 --gpu 1 --num-threads 1"))
    assert opts == ["--gres=gpu:1", "--mem-per-cpu", "4G", "--time", "2:00:00",
                    "--cpus-per-task", "1"]  # fmt: skip
    assert cfg.options(parse_cmd("slurm.pl --mem 0 --gpu 0")) == []  # values that add nothing
    with pytest.raises(Pykaldi2Error, match="--matylda 0.2 is not described in the default"):
        cfg.options(parse_cmd("slurm.pl --matylda 0.2"))
    # a site's conf/slurm.conf in Kaldi's format is read from the current dir
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "slurm.conf").write_text(
        "# site config\ncommand sbatch --export=PATH --account asr\n"
        "option mem=* --mem $0  # per job\noption gpu=0 -p cpu\noption gpu=* -p gpu --gres=gpu:$0\n"
        "default gpu=0\n"
    )
    site = SlurmBackend(parse_cmd("slurm.pl --mem 8G -q high"))
    assert site.config.source == "conf/slurm.conf"
    argv = site.sbatch_argv(Path("/e/q"), "acc.3", [1, 2, 3, 5])
    assert argv == ["sbatch", "--export=PATH", "--account", "asr", "-p", "cpu", "--mem", "8G",
                    "-q", "high", "--open-mode=append", "-e", "/e/q/acc.3.log", "-o",
                    "/e/q/acc.3.log", "--array=1-3,5", "/e/q/acc.3.sh"]  # fmt: skip
    (tmp_path / "conf" / "slurm.conf").write_text("option mem=* --mem $0\n")
    with pytest.raises(Pykaldi2Error, match="no 'command sbatch"):
        SlurmBackend(parse_cmd("slurm.pl"))
    with pytest.raises(Pykaldi2Error, match="no config file nope.conf"):
        SlurmBackend(parse_cmd("slurm.pl --config nope.conf"))


def test_queue_files_go_where_slurm_pl_puts_them():
    assert queue_paths("/x/exp/tri1/log/acc.3.JOB.log") == (Path("/x/exp/tri1/q"), "acc.3")
    assert queue_paths("/x/fbank/log/make_raw_fbank_train.JOB.log")[1] == "make_raw_fbank_train"
    assert array_spec([1, 2, 3, 4], None) == "1-4"
    assert array_spec([5, 2, 3, 9], 2) == "2-3,5,9%2"


def test_local_runner_max_jobs_run_and_progress(tmp_path):
    from tqdm import tqdm

    counted = []
    real = tqdm.update
    tqdm.update = lambda self, n=1: counted.append(n) or real(self, n)
    try:
        with JobRunner(3, cmd="run.pl --max-jobs-run 2 --mem 4G") as run:  # --mem: ignored
            assert run.workers == 2
            out = run(job_fns.square, [1, 2, 3], log=tmp_path / "sq.JOB.log", total=6)
    finally:
        tqdm.update = real
    assert [o[0] for o in out] == [1, 4, 9] and sum(counted) == 6  # the jobs' progress units
    assert "# Ended (code 0)" in (tmp_path / "sq.3.log").read_text()


def test_job_logs_record_the_memory_a_job_raised(tmp_path):
    import re

    with JobRunner(1) as run:
        run(job_fns.hold_mb, [1, 200], log=tmp_path / "m.JOB.log")
    lines = []
    for j in (1, 2):
        m = re.search(
            r"# Memory: rss (\d+) -> (\d+) MB, process peak (\d+) MB \(pid \d+\)",
            (tmp_path / f"m.{j}.log").read_text(),
        )
        assert m, f"m.{j}.log has no memory line"
        lines.append([int(g) for g in m.groups()])
    # the second job touched 200 MB more than it started with: its peak shows it
    (_, _, peak1), (start2, end2, peak2) = lines
    assert peak2 >= start2 + 190 and peak2 >= peak1, lines
    assert end2 < start2 + 100, lines  # freed by the job's end


def _calls(fake: Path, tool: str) -> list[list[str]]:
    path = fake / f"{tool}.calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def task_path(monkeypatch):
    """The tasks import job_fns: its dir on the PYTHONPATH the job script exports."""
    here = str(Path(job_fns.__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))


def test_slurm_jobs_are_built_submitted_and_collected(fake_slurm, task_path, tmp_path):
    exp = tmp_path / "exp" / "tri1"
    with JobRunner(3, cmd="slurm.pl --mem 2G --max-jobs-run 2 -p cpu") as run:
        assert not run.inline
        out = run(job_fns.square, [3, 4, 5], log=exp / "log" / "sq.JOB.log", ids=[1, 2, 4])
    assert [o[0] for o in out] == [9, 16, 25]
    assert {o[1] for o in out} == {"1"}  # the script pins one BLAS/OpenMP thread
    (argv,) = _calls(fake_slurm, "sbatch")
    q = exp / "q"
    assert argv == ["--export=PATH", "--ntasks-per-node=1", "--mem-per-cpu", "2G", "-p", "cpu",
                    "--open-mode=append", "-e", f"{q}/sq.log", "-o", f"{q}/sq.log",
                    "--array=1-2,4%2", f"{q}/sq.sh"]  # fmt: skip
    script = (q / "sq.sh").read_text()
    assert script.startswith("#!/bin/bash\n") and f"cd {os.getcwd()}\n" in script
    assert "-m pykaldi2.utils.slurm" in script and "${SLURM_ARRAY_TASK_ID}.in.pkl" in script
    assert "export OMP_NUM_THREADS=1" in script and "touch " in script
    assert script.rstrip().splitlines()[-1].startswith("# sbatch --export=PATH")
    log4 = (exp / "log" / "sq.4.log").read_text()
    assert log4.startswith("# square JOB=4\n# Running on ") and "job 5" in log4
    assert "# Ended (code 0)" in log4
    assert "Submitted batch job 4242" in (q / "sq.log").read_text()
    assert not list(q.glob("done.*")) and not list(q.glob("*.pkl"))  # cleaned up


def test_slurm_job_failures_name_the_log(fake_slurm, task_path, tmp_path, monkeypatch):
    log = tmp_path / "exp" / "log" / "sq.JOB.log"
    with JobRunner(2, cmd="slurm.pl") as run:
        with pytest.raises(JobError, match=r"square JOB=2 failed \(ValueError: negative\); see "
                           + str(tmp_path / "exp" / "log" / "sq.2.log")):  # fmt: skip
            run(job_fns.square, [1, -1], log=log)
        assert "ValueError: negative" in (tmp_path / "exp" / "log" / "sq.2.log").read_text()
        with pytest.raises(DataError, match="f.txt"):  # bad input: the user's error as it is
            run(job_fns.square, [99, 1], log=log)
        # a task killed (out of memory, time limit): no done file; squeue no longer lists it
        monkeypatch.setattr(slurm, "GONE_GRACE", 0.0)
        with pytest.raises(JobError, match=r"JOB=1: did not finish: SLURM job 4242_1 left the "
                           r"queue.*the time limit.*; see .*sq\.1\.log"):  # fmt: skip
            run(job_fns.square, [-9, 2], log=log)
        assert _calls(fake_slurm, "squeue")[0] == ["-h", "-j", "4242", "-o", "%i %t"]
        monkeypatch.setenv("FAKE_SBATCH_FAIL", "1")
        with pytest.raises(Pykaldi2Error, match="error submitting jobs to SLURM .*invalid "
                           "partition.*queue log .*/exp/q/sq.log"):  # fmt: skip
            run(job_fns.square, [1], log=log)


def test_interrupted_slurm_jobs_are_cancelled(fake_slurm, task_path, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_HOLD", "1")  # submitted, never run
    monkeypatch.setenv("FAKE_SQUEUE_OUT", "4242_[1-2] PD\n")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 3.0)
    try:
        with JobRunner(2, cmd="slurm.pl") as run, pytest.raises(KeyboardInterrupt):
            run(job_fns.square, [1, 2], log=tmp_path / "log" / "sq.JOB.log")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert _calls(fake_slurm, "scancel") == [["4242"]]
    assert _calls(fake_slurm, "squeue")  # asked while waiting, still queued


def test_cluster_jobs_need_a_log_and_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with JobRunner(1, cmd="slurm.pl") as run:
        with pytest.raises(Pykaldi2Error, match="cluster jobs need a log"):
            run(job_fns.square, [1])
        with pytest.raises(Pykaldi2Error, match="sbatch not found.*--cmd run.pl"):
            run(job_fns.square, [1], log=tmp_path / "log" / "x.JOB.log")


def test_every_nj_command_takes_cmd():
    from pykaldi2.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    with_nj = {
        name: {s for a in p._actions for s in a.option_strings}
        for name, p in sub.choices.items()
        if any("--nj" in a.option_strings for a in p._actions)
    }
    assert {"compute-feats", "train-mono", "train-deltas", "train-lda-mllt", "train-sat",
            "align-si", "align-fmllr", "decode", "decode-fmllr", "decode-nnet", "align-nnet",
            "decode-chain", "chain-get-egs"} <= set(with_nj)  # fmt: skip
    assert [n for n, opts in with_nj.items() if "--cmd" not in opts] == []
