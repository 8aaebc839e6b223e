"""egs/librispeech/run.sh data stages on the 4-utterance LibriSpeech sample, and the PyKaldi2
entry points run_ce.sh / run_se.sh / run_chain.sh of egs/an4 and egs/librispeech (POSIX sh).

Everything runs in a temporary copy of egs/ (the recipe writes data/, exp/, mfcc/, fbank/ into
its own dir); no training runs: the entry points are checked with a stand-in ``pykaldi2`` that
records its arguments.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from recipe_utils import EGS, ENTRY_POINTS, copy_egs, fake_pykaldi2, sh, touch

from pykaldi2.features.storage import open_features


def test_recipe_scripts_parse() -> None:
    for script in ("librispeech/run.sh", "librispeech/local/decode.sh"):
        subprocess.run(["bash", "-n", str(EGS / script)], check=True)
    for recipe in ("an4", "librispeech"):
        for f in ENTRY_POINTS:
            subprocess.run(["sh", "-n", str(EGS / recipe / f)], check=True)
    for f in ("entry.sh", "librispeech/local/entry.sh", "librispeech/local/train_nnet.sh"):
        subprocess.run(["sh", "-n", str(EGS / f)], check=True)


def test_librispeech_data_stages(librispeech_sample_dir: Path, tmp_path: Path) -> None:
    recipe = copy_egs(tmp_path, "librispeech") / "librispeech"
    args = ["bash", "run.sh", "--corpus-dir", str(librispeech_sample_dir), "--parts", "test-clean"]
    r = sh([*args, "--stop-stage", "1", "--nj", "1"], cwd=recipe)
    assert r.returncode == 0, r.stderr
    data = recipe / "data"
    utts = [line.split()[0] for line in (data / "test_clean/text").read_text().splitlines()]
    assert len(utts) == 4
    trans = {}
    for tf in (librispeech_sample_dir / "LibriSpeech/test-clean").glob("*/*/*.trans.txt"):
        trans.update(line.split(" ", 1) for line in tf.read_text().splitlines())
    assert (data / "test_clean/text").read_text().splitlines()[0] == f"{utts[0]} {trans[utts[0]]}"
    for name, dim in (("test_clean", 13), ("test_clean_fbank", 80)):  # MFCC / fbank + CMVN
        feats = open_features(data / name)
        assert sorted(feats) == sorted(utts)
        assert all(feats[u].shape[1] == dim and feats[u].shape[0] > 100 for u in utts)
        assert len((data / name / "cmvn.scp").read_text().splitlines()) == 2  # reader-chapters
    assert (recipe / "exp/.features_test_clean.done").is_file()
    # a rerun skips the finished stages; a training stage without training parts fails clearly
    r = sh([*args, "--stop-stage", "1"], cwd=recipe)
    assert r.returncode == 0 and r.stderr.count("done already") == 2, r.stderr
    r = sh([*args, "--stage", "2", "--stop-stage", "2"], cwd=recipe)
    assert r.returncode != 0 and 'no training part in --parts "test-clean"' in r.stderr
    # stage 3 with a lexicon from --lm-dir and no openslr ARPA: train-lm on data/train_960/text
    # (here the sample's transcripts; the pronunciations are made up, only the plumbing counts)
    lm_dir = tmp_path / "lm"
    lm_dir.mkdir()
    words = sorted({w for u in utts for w in trans[u].split()})
    (lm_dir / "librispeech-lexicon.txt").write_text("".join(f"{w}\tAH0 B K\n" for w in words))
    (data / "train_960").mkdir()
    shutil.copy(data / "test_clean/text", data / "train_960/text")
    r = sh([*args, "--lm-dir", str(lm_dir), "--stage", "3", "--stop-stage", "3"], cwd=recipe)
    assert r.returncode == 0, r.stderr
    assert (data / "local/lm/3gram.arpa").is_file() and (data / "lang_test/G.fst").is_file()
    lang_words = {
        line.split()[0] for line in (data / "lang_test/words.txt").read_text().splitlines()
    }
    assert set(words) <= lang_words


@pytest.mark.parametrize(
    "recipe,script,made,missing,stop",
    [
        ("an4", "run_ce.sh", ["data/train_fbank/feats.scp"], "exp/tri3_ali/num_jobs", "6"),
        ("an4", "run_se.sh", ["exp/tri3/graph/HCLG.fst", "exp/tri3_ali/num_jobs"],
         "exp/blstm_ce/final/final.pt", "7"),
        ("an4", "run_chain.sh", ["data/train_sp_fbank/feats.scp"],
         "exp/chain/tree_sp/final.mdl", "11"),
        ("librispeech", "run_ce.sh", ["data/train_960_fbank/feats.scp"],
         "exp/tri3_960_ali_train_960/num_jobs", "8"),
        ("librispeech", "run_chain.sh", [], "data/train_960_fbank/feats.scp", "2"),
        ("librispeech", "run_se.sh", [], "exp/tri3_960/graph/HCLG.fst", "7"),
    ],
)  # fmt: skip
def test_entry_point_without_its_stages_fails_clearly(
    tmp_path: Path, recipe: str, script: str, made: list[str], missing: str, stop: str
) -> None:
    egs = copy_egs(tmp_path, recipe)
    bin_dir, log = fake_pykaldi2(tmp_path)
    touch(egs / recipe, *made)
    r = sh(["sh", f"egs/{recipe}/{script}"], cwd=tmp_path, path_first=bin_dir)
    assert r.returncode == 1
    subset = "--subset 960 " if recipe == "librispeech" else ""
    assert f"{missing} not found: run `bash run.sh {subset}--stop-stage {stop}` first" in r.stderr
    assert not log.exists()  # nothing was started


def test_entry_points_run_the_stage_commands(tmp_path: Path) -> None:
    egs = copy_egs(tmp_path, "an4", "librispeech")
    bin_dir, log = fake_pykaldi2(tmp_path)
    touch(egs / "an4", "data/train_fbank/feats.scp", "exp/tri3_ali/num_jobs",
          "data/train_sp_fbank/feats.scp", "exp/chain/tree_sp/final.mdl")  # fmt: skip
    r = sh(["sh", "egs/an4/run_ce.sh", "--override", "trainer.lr=1"], tmp_path, bin_dir)
    assert r.returncode == 0, r.stderr
    r = sh(["sh", "egs/an4/run_chain.sh"], tmp_path, bin_dir)
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines() == [
        "pykaldi2 train-ce --config conf/ce_blstm.yaml --override trainer.lr=1 exp/blstm_ce",
        "pykaldi2 train-chain --config conf/chain_tdnnf.yaml exp/chain_tdnnf",
    ]
    # librispeech: run_ce.sh --subset 100 and run.sh stage 9 run the same command
    ls = egs / "librispeech"
    touch(ls, "data/train_100_fbank/feats.scp", "exp/tri3_100_ali_train_100/num_jobs")
    touch(ls, "exp/tri3_100_ali_dev_clean/num_jobs")
    log.unlink()
    r = sh(["sh", "run_ce.sh", "--subset", "100"], ls, bin_dir)
    assert r.returncode == 0, r.stderr
    r = sh(["bash", "run.sh", "--subset", "100", "--stage", "9", "--stop-stage", "9"], ls, bin_dir)
    assert r.returncode == 0, r.stderr
    entry, stage = log.read_text().splitlines()
    assert entry == stage
    assert "--override train_data=[data/train_100_fbank]" in entry
    assert "--override ali_dir=[exp/tri3_100_ali_train_100]" in entry
    assert entry.endswith(" exp/blstm_ce_100")
