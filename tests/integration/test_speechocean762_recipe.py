"""egs/speechocean762/run.sh data stages (prepare, features, dict/lang/LM/G) on a tiny made-up
copy of the corpus layout (real AN4 speech; tests/conftest.py), in a temporary copy of egs/."""

from __future__ import annotations

import subprocess
from pathlib import Path

from recipe_utils import EGS, copy_egs, sh

from pykaldi2.data.datadir import read_data_dir
from pykaldi2.features.storage import open_features


def test_recipe_parses() -> None:
    subprocess.run(["bash", "-n", str(EGS / "speechocean762/run.sh")], check=True)


def test_speechocean762_data_stages(tiny_speechocean762: Path, tmp_path: Path) -> None:
    recipe = copy_egs(tmp_path, "speechocean762") / "speechocean762"
    args = ["bash", "run.sh", "--corpus-dir", str(tiny_speechocean762), "--nj", "1"]
    r = sh([*args, "--mono-utts", "4", "--stop-stage", "2"], cwd=recipe)
    assert r.returncode == 0, r.stderr
    data = recipe / "data"
    sizes = {n: len(read_data_dir(data / n)) for n in ("train", "dev", "test", "test_full")}
    assert sizes == {"train": 8, "dev": 4, "test": 4, "test_full": 8}
    for name, dim in (("train", 13), ("dev", 13), ("test_fbank", 80), ("train_fbank", 80)):
        feats = open_features(data / name)  # MFCC for the GMMs, fbank for the nnets
        assert len(feats) == sizes[name.removesuffix("_fbank")]
        assert all(feats[u].shape[1] == dim for u in feats)
        assert (data / name / "cmvn.scp").is_file()
    mono = read_data_dir(data / "train_mono")  # the shortest utterances, with features
    assert len(mono) == 4 and "feats.scp" in mono.utt_tables
    # the trigram saw the train transcripts only: a test-only word is in the vocabulary (its
    # unigram) but in no bigram; every lexicon word is in words.txt
    arpa = (data / "local/lm/3gram.arpa").read_text()
    train_words = {w for t in read_data_dir(data / "train").text.values() for w in t.split()}
    test_only = {w for t in read_data_dir(data / "test").text.values() for w in t.split()}
    test_only -= train_words
    assert test_only, "the made-up corpus should have a test-only word"
    bigrams = arpa.split("\\2-grams:")[1].split("\\3-grams:")[0]
    for w in test_only:
        assert f"\t{w}\t" in arpa.split("\\2-grams:")[0] or f"\t{w}\n" in arpa
        assert f" {w}\t" not in bigrams and f"\t{w} " not in bigrams
    assert (data / "lang_test/G.fst").is_file()
    assert (data / "local/dict/lexicon.txt").read_text().startswith("!SIL SIL\n")
    # a rerun skips the finished stages
    r = sh([*args, "--mono-utts", "4", "--stop-stage", "2"], cwd=recipe)
    assert r.returncode == 0 and r.stderr.count("done already") == 3, r.stderr
