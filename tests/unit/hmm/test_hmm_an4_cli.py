"""train-mono, align-si and ali-to-phones on real AN4 speech (a small subset, few iterations)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pykaldi2.cli.main import main


def _run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.mark.slow
def test_an4_mono_train_and_align(an4_dir, tmp_path):
    data, lang = tmp_path / "data", tmp_path / "data" / "lang"
    _run("prepare", "an4", "--corpus-dir", an4_dir, data)
    _run("subset-data-dir", "--first", 40, data / "train", data / "sub")
    _run("compute-feats", "--feat-type", "mfcc", "--format", "ark", data / "sub", tmp_path / "mfcc")
    _run("compute-cmvn", data / "sub")
    _run("prepare-dict", "an4", an4_dir, data / "local" / "dict")
    _run("prepare-lang", data / "local" / "dict", "<UNK>", lang)
    exp = tmp_path / "exp" / "mono"
    _run(
        "train-mono",
        data / "sub",
        lang,
        exp,
        "--num-iters",
        8,
        "--totgauss",
        300,
        "--max-iter-inc",
        6,
    )
    hist = [json.loads(x) for x in (exp / "log" / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 8
    # flat start to trained model: the per-frame log-likelihood rises clearly
    assert hist[-1]["like_per_frame"] > hist[0]["like_per_frame"] + 5.0
    from pykaldi2.hmm.kaldi_io import read_tree

    # a Kaldi exp dir: binary final.mdl and tree with Kaldi's header
    assert (exp / "tree").read_bytes().startswith(b"\0BContextDependency ")
    assert (exp / "final.mdl").read_bytes().startswith(b"\0B<TransitionModel> <Topology> ")
    from pykaldi2.hmm.model import GmmModel

    assert read_tree(exp / "tree").num_pdfs == GmmModel.load(exp / "final.mdl").num_pdfs
    # Kaldi's exp dir layout, per-job logs
    for name in ("ali.1.gz", "num_jobs", "final.occs", "log/acc.7.1.log", "log/update.7.log"):
        assert (exp / name).is_file(), name
    # no intermediate model (N.mdl) or its side file (N.mdl.json) is left behind
    assert sorted(p.name for p in exp.glob("*.mdl*")) == ["final.mdl", "final.mdl.json"]

    assert GmmModel.load(exp / "final.mdl").feat_type == "delta"  # what decoding rebuilds
    _run("align-si", data / "sub", lang, exp, tmp_path / "exp" / "mono_ali")
    _run(
        "ali-to-phones",
        exp / "final.mdl",
        tmp_path / "exp" / "mono_ali",
        tmp_path / "phones.txt",
    )
    from pykaldi2.hmm.ali import read_ali

    alis = read_ali(tmp_path / "exp" / "mono_ali" / "ali.1.gz")
    assert len(alis) >= 38  # at most a couple may fail to align
    feats_scp = (data / "sub" / "utt2num_frames").read_text().split()
    nframes = dict(zip(feats_scp[::2], map(int, feats_scp[1::2])))
    assert all(len(a) == nframes[u] for u, a in alis.items())
    # every aligned utterance starts and ends in silence (AN4 has leading/trailing silence)
    phones = {}
    for line in (lang / "phones.txt").read_text().splitlines():
        sym, i = line.split()
        phones[int(i)] = sym
    seqs = [line.split()[1:] for line in (tmp_path / "phones.txt").read_text().splitlines()]
    starts_sil = np.mean([phones[int(s[0])].startswith("SIL") for s in seqs])
    assert starts_sil > 0.8

    # triphones on top: deltas, then LDA+MLLT (MLLT at iteration 2), a few iterations each
    small = tmp_path / "small.yaml"
    small.write_text("num_iters: 4\nmax_iter_inc: 3\nmllt_iters: [2]\n")
    deltas = tmp_path / "deltas.yaml"
    deltas.write_text("num_iters: 4\nmax_iter_inc: 3\n")
    tri1, tri2 = tmp_path / "exp" / "tri1", tmp_path / "exp" / "tri2"
    _run(
        "train-deltas",
        data / "sub",
        lang,
        exp,
        tri1,
        "--config",
        deltas,
        "--num-leaves",
        150,
        "--tot-gauss",
        600,
    )
    _run(
        "train-lda-mllt",
        data / "sub",
        lang,
        tri1,
        tri2,
        "--config",
        small,
        "--num-leaves",
        150,
        "--tot-gauss",
        600,
    )
    from pykaldi2.hmm.kaldi_io import read_tree

    for d in (tri1, tri2):
        model = GmmModel.load(d / "final.mdl")
        cd = read_tree(d / "tree")
        assert cd.context_width == 3 and 40 < cd.num_pdfs <= 150, cd.num_pdfs
        assert cd.num_pdfs == model.num_pdfs
        assert len(read_ali(d / "ali.1.gz")) >= 38
    lda_model = GmmModel.load(tri2 / "final.mdl")
    assert lda_model.feat_type == "lda" and lda_model.transform.shape == (40, 13 * 9)
    assert lda_model.dim == 40
    # what Kaldi's tools and scripts read in an LDA+MLLT exp dir, in Kaldi's formats
    from pykaldi2.hmm import kaldi_io

    for d in (exp, tri1, tri2):
        tm, am = kaldi_io.read_kaldi_model(d / "final.mdl")  # gmm-info, show-transitions
        assert am.num_pdfs == tm.num_pdfs == kaldi_io.read_tree(d / "tree").num_pdfs
        assert (d / "phones.txt").read_bytes() == (lang / "phones.txt").read_bytes()
        assert (d / "num_jobs").read_text() == "1\n" and (d / "cmvn_opts").read_text() == "\n"
        assert len(kaldi_io.read_vector(d / "final.occs")) == tm.num_pdfs
    assert (tri2 / "final.mat").read_bytes().startswith(b"\0BFM ")
    assert (tri2 / "splice_opts").read_text() == "--left-context=4 --right-context=4\n"
    assert not (tri1 / "final.mat").exists()
    # every exp/ali dir names the transition model its alignments were made with (#18 item 11)
    from pykaldi2.hmm.ali import MODEL_ID, transition_model_id

    for d in (exp, tmp_path / "exp" / "mono_ali", tri1, tri2):
        want = transition_model_id(GmmModel.load(d / "final.mdl").tm)
        assert (d / MODEL_ID).read_text().strip() == want, d
    # the parallel aligner (2 jobs by speaker, the classic `align` name) gives the same
    # alignments, in Kaldi's layout (ali.1.gz, ali.2.gz, num_jobs)
    _run("align", "--nj", 2, data / "sub", lang, exp, tmp_path / "exp" / "mono_ali2")
    ali2 = tmp_path / "exp" / "mono_ali2"
    assert (ali2 / "num_jobs").read_text().strip() == "2" and (
        ali2 / "log" / "align.2.log"
    ).is_file()
    alis2 = {**read_ali(ali2 / "ali.1.gz"), **read_ali(ali2 / "ali.2.gz")}
    assert alis2.keys() == alis.keys()
    assert all(np.array_equal(alis[u], alis2[u]) for u in alis)
