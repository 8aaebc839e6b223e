"""GMM training the way Kaldi splits it: split_data by speaker, the run.pl-like job runner,
nj=1 vs nj=2 giving the same models (up to summation order), byte-identical reruns, resume."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mono_config
from hmm_job_fns import square as _square

from pykaldi2.data.split import split_speakers
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.jobs import JobError, JobRunner


def test_split_speakers_as_split_scp():
    # 5 speakers into 2: first by speaker count (3 + 2), then the boundary speaker moves to
    # balance the utterances: a(10) b(1) c(1) | d(1) e(1) -> a | b c d e
    spk = [("a", 10), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]
    assert split_speakers(spk, 2) == [["a"], ["b", "c", "d", "e"]]
    assert split_speakers([(s, 1) for s in "abcd"], 2) == [["a", "b"], ["c", "d"]]
    with pytest.raises(DataError, match="speakers"):
        split_speakers(spk, 6)


def test_job_runner_logs_and_errors(tmp_path):
    with JobRunner(2) as run:
        out = run(_square, [3, 4], log=tmp_path / "sq.JOB.log")
        assert [o[0] for o in out] == [9, 16]
        assert all(o[1] == "1" for o in out)  # one BLAS/OpenMP thread per job
        text = (tmp_path / "sq.2.log").read_text()
        assert "job 4" in text and "# Ended (code 0)" in text and text.startswith("# square JOB=2")
        with pytest.raises(JobError, match="JOB=2 failed.*sq.2.log"):
            run(_square, [1, -1], log=tmp_path / "sq.JOB.log")
        assert "ValueError: negative" in (tmp_path / "sq.2.log").read_text()
        with pytest.raises(DataError, match="f.txt"):  # bad input: the user's error as it is
            run(_square, [99, 1])
    with JobRunner(1) as run:  # one job runs in this process, logged the same way
        assert run(_square, [5], log=tmp_path / "one.JOB.log")[0][0] == 25
        assert "job 5" in (tmp_path / "one.1.log").read_text()


@pytest.fixture(scope="module")
def runs(synth, tmp_path_factory):
    """train_mono on the synthetic data: nj=1 twice, nj=2 once."""
    from pykaldi2.hmm.mono import train_mono

    root = tmp_path_factory.mktemp("runs")
    cfg = mono_config()
    out = {}
    for name, nj in (("a", 1), ("b", 1), ("c", 2)):
        model, hist = train_mono(synth.data, synth.lang, root / name, cfg, nj=nj)
        out[name] = (model, hist, root / name)
    return out


def test_reruns_are_byte_identical(runs):
    a, b = runs["a"][2], runs["b"][2]
    assert (a / "final.mdl").read_bytes() == (b / "final.mdl").read_bytes()
    assert (a / "ali.1.gz").read_bytes() == (b / "ali.1.gz").read_bytes()


def test_two_jobs_give_the_same_model(runs, synth):
    from pykaldi2.hmm.ali import read_ali
    from pykaldi2.hmm.gmm import am_arrays

    (m1, h1, d1), (m2, h2, d2) = runs["a"], runs["c"]
    assert (d2 / "num_jobs").read_text().strip() == "2"
    assert (d2 / "log" / "acc.7.2.log").is_file() and (d2 / "log" / "acc.7.1.log").is_file()
    a1, a2 = am_arrays(m1.am), am_arrays(m2.am)
    np.testing.assert_array_equal(a1.offsets, a2.offsets)
    np.testing.assert_allclose(a1.weights, a2.weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a1.means, a2.means, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a1.inv_vars, a2.inv_vars, rtol=1e-4)
    assert [round(h["like_per_frame"], 4) for h in h1] == [
        round(h["like_per_frame"], 4) for h in h2
    ]
    # the two jobs' alignments are the one job's, split by speaker
    one = read_ali(d1 / "ali.1.gz")
    two = {**read_ali(d2 / "ali.1.gz"), **read_ali(d2 / "ali.2.gz")}
    assert one.keys() == two.keys() and all(np.array_equal(one[u], two[u]) for u in one)
    spk1 = {u.split("-")[0] for u in read_ali(d2 / "ali.1.gz")}
    spk2 = {u.split("-")[0] for u in read_ali(d2 / "ali.2.gz")}
    assert not spk1 & spk2  # a speaker's utterances stay in one job


class _Killed(Exception):
    pass


class _DyingRunner(JobRunner):
    """Raises (as a kill would stop the run) at the start of pass ``at``."""

    def __init__(self, at: int) -> None:
        super().__init__(1)
        self.at = at

    def __call__(self, fn, jobs, *, log=None, desc=None):
        if desc == f"pass {self.at}":
            raise _Killed
        return super().__call__(fn, jobs, log=log, desc=desc)


def test_killed_run_resumes_to_the_same_model(runs, synth, tmp_path):
    from pykaldi2.hmm.mono import train_mono

    exp = tmp_path / "mono"
    with pytest.raises(_Killed):
        train_mono(synth.data, synth.lang, exp, mono_config(), runner=_DyingRunner(5))
    assert (exp / "5.mdl").is_file() and not (exp / "final.mdl").exists()
    model, hist = train_mono(synth.data, synth.lang, exp, mono_config())
    assert [h["iter"] for h in hist] == list(range(8))
    assert (exp / "final.mdl").read_bytes() == (runs["a"][2] / "final.mdl").read_bytes()
    assert not list(exp.glob("*.acc")) and not (exp / "5.mdl").exists()


def test_train_mono_on_slurm_equals_run_pl(synth, fake_slurm, tmp_path, monkeypatch):
    """--cmd slurm.pl (sbatch / squeue stand-ins): the same model as run.pl with the same nj,
    Kaldi's per-job logs in log/, the job scripts and sbatch's log in q/."""
    from pykaldi2.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mono.yaml").write_text(
        "num_iters: 2\nmax_iter_inc: 1\ntotgauss: 40\nrealign_iters: [1]\n"
    )
    common = ["train-mono", "--nj", "2", "--config", "mono.yaml", str(synth.data), str(synth.lang)]
    assert main([*common, "local", "--cmd", "run.pl"]) == 0
    assert main([*common, "cluster", "--cmd", "slurm.pl --mem 1G"]) == 0
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    assert (cluster / "final.mdl").read_bytes() == (local / "final.mdl").read_bytes()
    assert (cluster / "ali.2.gz").read_bytes() == (local / "ali.2.gz").read_bytes()
    assert not (local / "q").exists()
    calls = (fake_slurm / "sbatch.calls").read_text().splitlines()
    assert len(calls) >= 3 and all('"--mem-per-cpu", "1G"' in c for c in calls)
    assert {p.name for p in (cluster / "q").glob("*.sh")} >= {"align.0.sh", "acc.1.sh"}
    for j in (1, 2):
        text = (cluster / "log" / f"acc.1.{j}.log").read_text()
        assert "# Running on " in text and "# Ended (code 0)" in text
