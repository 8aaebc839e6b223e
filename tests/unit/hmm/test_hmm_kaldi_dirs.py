"""Real Kaldi exp dirs as inputs (kaldi_reference/an4: Kaldi 5.5's data, lang, exp/{mono,tri1,
tri2,mono_ali,tri1_ali}): align-si with Kaldi's models and features reproduces Kaldi's own
alignments, train-deltas and train-ce start from Kaldi's ali dirs, and our output dirs carry
Kaldi's side files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from kaldi_reference_data import kaldi_data_subset

from pykaldi2.cli.main import main
from pykaldi2.hmm.ali import read_ali
from pykaldi2.hmm.exp_dir import read_ali_dir
from pykaldi2.utils.errors import DataError


def kaldi_ali_dir(kaldi_ref: Path, out: Path, model: str, ali: str) -> Path:
    """What Kaldi's steps/align_si.sh leaves (the reference keeps only ali.1.gz and num_jobs of
    exp/*_ali; align_si.sh copies final.mdl, tree, cmvn_opts, phones.txt from the model dir)."""
    exp = kaldi_ref / "an4" / "exp"
    out.mkdir(parents=True)
    for name in ("final.mdl", "tree", "cmvn_opts", "phones.txt", "final.occs"):
        shutil.copyfile(exp / model / name, out / name)
    for name in ("ali.1.gz", "num_jobs"):
        shutil.copyfile(exp / ali / name, out / name)
    return out


@pytest.fixture(scope="module")
def data100(kaldi_ref, tmp_path_factory) -> Path:
    return kaldi_data_subset(kaldi_ref, tmp_path_factory.mktemp("kaldi_data") / "train100", 100)


def _agreement(ours: dict, ref: dict) -> float:
    same = total = 0
    for utt, a in ours.items():
        assert len(a) == len(ref[utt]), utt
        same += int((a == ref[utt]).sum())
        total += len(a)
    return same / total


@pytest.mark.parametrize("system,ref_ali", [("mono", "mono_ali"), ("tri1", "tri1_ali")])
def test_align_si_with_kaldi_model_gives_kaldis_alignments(
    kaldi_ref, data100, tmp_path, system, ref_ali
):
    """Kaldi's final.mdl + tree, Kaldi's MFCCs (CMN per speaker, add-deltas as align_si.sh),
    Kaldi's lang: the same transition-ids as Kaldi's align_si.sh on >= 99.5% of the frames."""
    exp = kaldi_ref / "an4" / "exp"
    out = tmp_path / f"{system}_ali"
    assert (
        main(["align-si", str(data100), str(kaldi_ref / "an4/lang"), str(exp / system), str(out)])
        == 0
    )
    ours = read_ali_dir(out)[0]
    assert len(ours) == 100
    agreement = _agreement(ours, read_ali(exp / ref_ali / "ali.1.gz"))
    assert agreement >= 0.995, agreement
    # the output dir is a Kaldi ali dir too: Kaldi's model and tree byte for byte, side files
    for name in ("final.mdl", "tree"):
        assert (out / name).read_bytes() == (exp / system / name).read_bytes()
    assert (out / "phones.txt").read_bytes() == (exp / system / "phones.txt").read_bytes()
    assert (out / "cmvn_opts").read_text() == "\n" and (out / "num_jobs").read_text() == "1\n"
    from pykaldi2.hmm import kaldi_io

    assert len(kaldi_io.read_vector(out / "final.occs")) == len(
        kaldi_io.read_vector(exp / system / "final.occs")
    )


def test_align_si_with_kaldi_lda_mllt_model(kaldi_ref, data100, tmp_path):
    """tri2 (LDA+MLLT, final.mat, empty splice_opts = +-4 frames). Kaldi's tri2/ali.1.gz is
    the training realignment of iteration 30 (30.mdl, not final.mdl), so agreement is high but
    not exact; a wrong feature pipeline (other splicing, no MLLT) would not come close."""
    exp = kaldi_ref / "an4" / "exp"
    out = tmp_path / "tri2_ali"
    assert (
        main(["align-si", str(data100), str(kaldi_ref / "an4/lang"), str(exp / "tri2"), str(out)])
        == 0
    )
    agreement = _agreement(read_ali_dir(out)[0], read_ali(exp / "tri2" / "ali.1.gz"))
    assert agreement > 0.95, agreement
    assert (out / "final.mat").read_bytes() == (exp / "tri2" / "final.mat").read_bytes()


@pytest.mark.parametrize(
    "command,model,ali",
    [("train-deltas", "mono", "mono_ali"), ("train-lda-mllt", "tri1", "tri1_ali")],
)
def test_train_triphones_from_kaldi_ali_dir(kaldi_ref, tmp_path, command, model, ali):
    """train_deltas.sh from Kaldi's mono_ali, train_lda_mllt.sh from Kaldi's tri1_ali."""
    data = kaldi_data_subset(kaldi_ref, tmp_path / "train40", 40)
    ali_dir = kaldi_ali_dir(kaldi_ref, tmp_path / ali, model, ali)
    exp = tmp_path / "exp"
    conf = tmp_path / "tri.yaml"
    conf.write_text(
        yaml.safe_dump({"num_iters": 3, "max_iter_inc": 2, "realign_iters": [2], "mllt_iters": [1]})
        if command == "train-lda-mllt"
        else yaml.safe_dump({"num_iters": 3, "max_iter_inc": 2, "realign_iters": [2]})
    )
    argv = [command, str(data), str(kaldi_ref / "an4/lang"), str(ali_dir), str(exp)]
    assert main([*argv, "--config", str(conf), "--num-leaves", "60", "--tot-gauss", "200"]) == 0
    from pykaldi2.hmm.model import GmmModel

    m = GmmModel.load(exp / "final.mdl")
    assert m.feat_type == ("lda" if command == "train-lda-mllt" else "delta")
    assert m.dim == (40 if command == "train-lda-mllt" else 39) and 20 < m.num_pdfs <= 60
    assert len(read_ali_dir(exp)[0]) >= 38
    assert (exp / "phones.txt").read_bytes() == (kaldi_ref / "an4/lang/phones.txt").read_bytes()


def test_train_ce_on_kaldi_exp_dir(kaldi_ref, tmp_path, one_thread):
    """train-ce takes Kaldi's exp/tri1 as it is (final.mdl, tree, ali.1.gz) for its targets."""
    data = kaldi_data_subset(kaldi_ref, tmp_path / "train12", 12)
    cfg = {
        "train_data": [str(data)],
        "ali_dir": [str(kaldi_ref / "an4/exp/tri1")],
        "valid_fraction": 0.0,
        "features": {"cmvn": "speaker"},
        "model_type": "blstm",
        "model": {"num_layers": 1, "hidden": 8},
        "chunk_size": 20,
        "batch_size": 4,
        "trainer": {"lr": 0.01, "max_steps": 3, "log_every": 1},
    }
    (tmp_path / "ce.yaml").write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "ce"
    assert main(["train-ce", "--config", str(tmp_path / "ce.yaml"), str(exp)]) == 0
    from pykaldi2.training.model_dir import load_final_dir

    md = load_final_dir(exp / "final")
    assert md.ali_model.num_pdfs == 416  # Kaldi's tri1 pdfs are the network's targets
    assert (exp / "final" / "final.mdl").read_bytes() == (
        kaldi_ref / "an4/exp/tri1/final.mdl"
    ).read_bytes()


def test_dir_that_is_neither_is_a_clear_error(kaldi_ref, tmp_path, caplog):
    from pykaldi2.hmm.exp_dir import read_ali_dir

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither pykaldi2's ali.scp / ali.ark nor Kaldi's"):
        read_ali_dir(tmp_path / "empty")
    ali = kaldi_ali_dir(kaldi_ref, tmp_path / "ali", "mono", "mono_ali")
    (ali / "num_jobs").write_text("2\n")  # ali.2.gz is missing
    with pytest.raises(DataError, match=r"ali\.2\.gz is missing"):
        read_ali_dir(ali)
    (ali / "num_jobs").write_text("1\n")
    (ali / "final.mdl").unlink()
    with pytest.raises(DataError, match="without final.mdl"):
        read_ali_dir(ali)
    alis, model = read_ali_dir(ali, model=_load(kaldi_ref / "an4/exp/mono/final.mdl"))
    assert len(alis) == 948 and model.num_pdfs == 109
    ali2 = kaldi_ali_dir(kaldi_ref, tmp_path / "ali2", "tri1", "mono_ali")
    with caplog.at_level(logging.WARNING):
        read_ali_dir(ali2)  # mono's alignments with tri1's model: in range, but no HMM path
    assert "948 of 948 alignments are no path through the HMMs" in caplog.text
    assert "HMM state sequence impossible" in caplog.text
    lang = tmp_path / "lang"
    shutil.copytree(kaldi_ref / "an4/lang", lang)
    text = (lang / "phones.txt").read_text().replace("SIL_B 2", "SIL_B 99")
    (lang / "phones.txt").write_text(text)
    from pykaldi2.hmm.exp_dir import check_phones_compatible

    with pytest.raises(DataError, match="phones.txt differs"):
        check_phones_compatible(lang, kaldi_ref / "an4/exp/mono")
    assert np.all(model.tid2pdf[1:] >= 0)


def _load(path):
    from pykaldi2.hmm.model import GmmModel

    return GmmModel.load(path)


def test_train_chain_with_kaldis_den_fst(kaldi_ref, tmp_path, one_thread, capsys):
    """train-chain on Kaldi's exp/tri1 alignments with the den.fst / normalization.fst that
    Kaldi's chain-make-den-fst made for that tree (kaldi_reference/an4/chain, the tri1 model's
    3-state topology: ``topology: ali``)."""
    data = kaldi_data_subset(kaldi_ref, tmp_path / "train3", 3)
    cfg = {
        "train_data": str(data),
        "ali_dir": str(kaldi_ref / "an4/exp/tri1"),
        "den_fst_dir": str(kaldi_ref / "an4/chain"),
        "topology": "ali",
        "frame_subsampling_factor": 1,
        "valid_fraction": 0.0,
        "features": {"cmvn": "speaker"},
        "model_type": "tdnnf",
        "model": {"hidden": 16, "bottleneck": 8, "prefinal_dim": 8, "time_strides": [1, 1]},
        "batch_size": 3,
        "trainer": {"lr": 0.01, "max_steps": 1, "log_every": 1},
    }
    (tmp_path / "chain.yaml").write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "chain"
    assert main(["train-chain", "--config", str(tmp_path / "chain.yaml"), str(exp)]) == 0
    final = exp / "final"
    for name in ("den.fst", "normalization.fst"):  # Kaldi's, passed through
        assert (final / name).read_bytes() == (kaldi_ref / "an4/chain" / name).read_bytes()
    # a den.fst of another transition model is refused
    cfg["den_fst_dir"] = str(kaldi_ref / "an4/chain_ctree")
    (tmp_path / "chain.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train-chain", "--config", str(tmp_path / "chain.yaml"), str(tmp_path / "x")]) == 1
    assert "0.trans_mdl: its transition model is not the chain model's" in capsys.readouterr().err


def test_decode_with_kaldi_model_and_our_graph(kaldi_ref, tmp_path):
    """decode --data with Kaldi's tri1 dir (final.mdl, tree, cmvn_opts) through mkgraph's HCLG
    of it: the 1-best of 8 test utterances equal Kaldi's gmm-latgen-faster + lattice-best-path
    at the same acoustic scale (LMWT 10, WIP 0: scoring_kaldi/penalty_0.0/10.txt)."""
    exp = kaldi_ref / "an4" / "exp" / "tri1"
    data = kaldi_data_subset(kaldi_ref, tmp_path / "test8", 8, split="test")
    graph, dec = tmp_path / "graph", tmp_path / "decode"
    assert main(["mkgraph", str(kaldi_ref / "an4/lang"), str(exp / "final.mdl"), str(graph)]) == 0
    argv = ["decode", "--data", str(data), str(graph), str(exp / "final.mdl"), str(dec)]
    assert main(argv) == 0
    ours = {ln.split()[0]: ln.split()[1:] for ln in (dec / "hyp.txt").read_text().splitlines()}
    ref_file = exp / "decode_test" / "scoring_kaldi" / "penalty_0.0" / "10.txt"
    ref = {ln.split()[0]: ln.split()[1:] for ln in ref_file.read_text().splitlines()}
    assert len(ours) == 8 and all(ours[u] == ref[u] for u in ours), (ours, ref)


def test_graph_model_pairings_with_kaldis_graphs_and_models(kaldi_ref, tmp_path, capsys, caplog):
    """#18 item 2 on Kaldi's own files. Kaldi's graph dirs (mkgraph.sh) hold num_pdfs, not our
    model_id: Kaldi's mono graph (109 pdfs) with Kaldi's tri1 final.mdl (416) is refused by
    steps/decode.sh's own check, by decode and by export-gmm-model; Kaldi's tri1 graph with its
    model decodes, with a note that only the pdf count was checked. mkgraph of Kaldi's tri1
    records the identity of that model, and Kaldi's tri2 final.mdl is refused with it."""
    import json

    from pykaldi2.features.extractors import MfccConfig
    from pykaldi2.hmm.ali import transition_model_id
    from pykaldi2.hmm.model import GmmModel

    exp = kaldi_ref / "an4" / "exp"
    data = kaldi_data_subset(kaldi_ref, tmp_path / "test2", 2, split="test")
    tri1 = exp / "tri1" / "final.mdl"

    def decode(graph, model, out):
        return main(["decode", "--data", str(data), str(graph), str(model), str(tmp_path / out)])

    assert decode(exp / "mono" / "graph", tri1, "d1") == 1
    err = capsys.readouterr().err
    assert "mono/graph/num_pdfs: the graph" in err
    assert f"was built for a model with 109 pdfs, {tri1} has 416" in err
    assert "Fix: rebuild the graph for this model: pykaldi2 mkgraph LANG_DIR" in err
    (data / "conf").mkdir()  # mfcc.conf: --use-energy=false
    (data / "conf" / "feats.json").write_text(json.dumps(MfccConfig(use_energy=False).to_dict()))
    mono_graph, x = exp / "mono" / "graph", tmp_path / "x"
    argv = ["export-gmm-model", str(tri1), str(mono_graph), str(data), str(x)]
    assert main(argv) == 1 and "109 pdfs" in capsys.readouterr().err
    assert not x.exists()
    with caplog.at_level(logging.INFO, logger="pykaldi2.hmm.graph_model"):
        assert decode(exp / "tri1" / "graph", tri1, "d2") == 0
    assert "only its pdf count (416) was checked" in caplog.text

    graph = tmp_path / "graph"
    assert main(["mkgraph", str(kaldi_ref / "an4/lang"), str(tri1), str(graph)]) == 0
    tm1 = GmmModel.load(tri1).tm
    assert (graph / "model_id").read_text() == transition_model_id(tm1) + "\n"
    assert decode(graph, exp / "tri2" / "final.mdl", "d3") == 1
    assert "was built for another model (model_id " in capsys.readouterr().err


def test_chain_tools_take_kaldi_models(kaldi_ref, tmp_path):
    """chain-est-phone-lm on Kaldi's tri1 model + alignments (Kaldi's options of an4/chain:
    --num-extra-lm-states=1000) has the states of Kaldi's phone_lm.fst; chain-make-den-fst
    takes Kaldi's 0.trans_mdl (a transition model alone) with the tree beside it."""
    from pykaldi2.kaldi import kaldifst

    exp = kaldi_ref / "an4" / "exp"
    lm = tmp_path / "phone_lm.fst"
    argv = ["chain-est-phone-lm", "--num-extra-lm-states", "1000", str(exp / "tri1/final.mdl")]
    assert main([*argv, str(exp / "tri1_ali/ali.1.gz"), str(lm)]) == 0
    ours = kaldifst.StdVectorFst.read(str(lm))
    theirs = kaldifst.StdVectorFst.read(str(kaldi_ref / "an4/chain/phone_lm.fst"))
    assert ours.num_states == theirs.num_states == 1560
    chain = kaldi_ref / "an4" / "chain"
    out = tmp_path / "den"
    assert (
        main(
            [
                "chain-make-den-fst",
                str(chain / "0.trans_mdl"),
                str(chain / "phone_lm.fst"),
                str(out),
            ]
        )
        == 0
    )
    den = kaldifst.StdVectorFst.read(str(out / "den.fst"))
    labels = {a.ilabel for s in range(den.num_states) for a in kaldifst.ArcIterator(den, s)}
    assert max(labels) <= 416 and len(labels) == 415  # pdf-id + 1; SPN's pdf 1 never occurs


def test_fmllr_transforms_from_a_transform_dir(kaldi_ref, tmp_path):
    """align-si --transform-dir applies per-speaker trans.* (Kaldi's transform-feats
    --utt2spk): identity transforms leave the alignments as they are, a real change moves them,
    a speaker without a transform is a clear error."""
    from pykaldi2.hmm import kaldi_io

    data = kaldi_data_subset(kaldi_ref, tmp_path / "train20", 20)
    speakers = sorted({ln.split()[1] for ln in (data / "utt2spk").read_text().splitlines()})
    eye = np.hstack([np.eye(39), np.zeros((39, 1))]).astype(np.float32)
    tdir = tmp_path / "sat"
    tdir.mkdir()
    kaldi_io.write_transforms(tdir / "trans.1", {s: eye for s in speakers})
    (tdir / "num_jobs").write_text("1\n")
    exp, lang = kaldi_ref / "an4/exp/tri1", str(kaldi_ref / "an4/lang")
    assert main(["align-si", str(data), lang, str(exp), str(tmp_path / "a")]) == 0
    argv = ["align-si", "--transform-dir", str(tdir), str(data), lang, str(exp)]
    assert main([*argv, str(tmp_path / "b")]) == 0
    a, b = read_ali_dir(tmp_path / "a")[0], read_ali_dir(tmp_path / "b")[0]
    assert all(np.array_equal(a[u], b[u]) for u in a)
    shift = eye.copy()
    shift[:, -1] = 3.0  # a large offset on every dimension
    kaldi_io.write_transforms(tdir / "trans.1", {s: shift for s in speakers})
    assert main([*argv, str(tmp_path / "c")]) == 0
    c = read_ali_dir(tmp_path / "c")[0]
    assert _agreement({u: c[u] for u in c if u in a}, a) < 0.9
    kaldi_io.write_transforms(tdir / "trans.1", {speakers[0]: eye})
    with pytest.raises(DataError, match="no fMLLR transform for speaker"):
        from pykaldi2.hmm.ali_dir import align_si

        align_si(data, lang, exp, tmp_path / "d", transform_dir=tdir)


def test_build_tree_chain_on_a_sat_ali_dir_uses_its_transforms(kaldi_ref, tmp_path, capsys):
    """build-tree-chain reads an align-fmllr dir's trans.* (build_tree.sh's transform-feats
    --utt2spk): identity transforms give the tree of no transforms, a speaker without one is an
    error naming it (so the statistics are of the adapted features)."""
    from pykaldi2.hmm import kaldi_io

    data = kaldi_data_subset(kaldi_ref, tmp_path / "train40", 40)
    lang = str(kaldi_ref / "an4/lang")
    ali = kaldi_ali_dir(kaldi_ref, tmp_path / "ali", "tri1", "tri1_ali")

    def build(out: str) -> int:
        return main(["build-tree-chain", "--num-leaves", "40", str(data), lang, str(ali),
                     str(tmp_path / out)])  # fmt: skip

    assert build("plain") == 0
    speakers = sorted({ln.split()[1] for ln in (data / "utt2spk").read_text().splitlines()})
    eye = np.hstack([np.eye(39), np.zeros((39, 1))]).astype(np.float32)
    kaldi_io.write_transforms(ali / "trans.1", {s: eye for s in speakers})
    assert build("eye") == 0
    plain, eye_dir = tmp_path / "plain", tmp_path / "eye"
    assert (plain / "tree").read_bytes() == (eye_dir / "tree").read_bytes()
    assert (plain / "ali.ark").read_bytes() == (eye_dir / "ali.ark").read_bytes()
    kaldi_io.write_transforms(ali / "trans.1", {s: eye for s in speakers[1:]})
    capsys.readouterr()
    assert build("missing") == 1
    assert f"no fMLLR transform for speaker {speakers[0]}" in capsys.readouterr().err


def test_decode_never_loads_kaldifst(kaldi_ref, tmp_path):
    """A decoding job needs neither kaldifst nor its OpenFst (11 MB of RSS per job):
    `decode --nj 1` (the job runs in the process) on Kaldi's tri1 graph leaves it unloaded,
    and the first use of `pykaldi2.kaldi.kaldifst` loads it then."""
    import subprocess
    import sys

    exp = kaldi_ref / "an4" / "exp" / "tri1"
    data = kaldi_data_subset(kaldi_ref, tmp_path / "test2", 2, split="test")
    argv = ["decode", "--nj", "1", "--data", str(data), str(exp / "graph"),
            str(exp / "final.mdl"), str(tmp_path / "dec")]  # fmt: skip
    code = (
        "import sys; from pykaldi2.cli.main import main; rc = main(sys.argv[1:]); "
        "print(rc, 'kaldifst' in sys.modules); from pykaldi2.kaldi import kaldifst; "
        "print(kaldifst.StdVectorFst.__name__, 'kaldifst' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "False", "StdVectorFst", "True"], proc.stdout
    assert len((tmp_path / "dec" / "hyp.txt").read_text().splitlines()) == 2


def test_features_only_data_dir_trains_as_one_with_audio(kaldi_ref, tmp_path, capsys):
    """A Kaldi feature dir without its wav.scp (validate_data_dir.sh --no-wav): fix-data-dir
    keeps it whole, train-mono --nj 2 reads and splits it (the splits stay features-only) and gives the same final.mdl as
    the same dir with its wav.scp; validate-data-dir wants --no-wav for it."""
    with_wav = kaldi_data_subset(kaldi_ref, tmp_path / "with_wav", 30)
    no_wav = kaldi_data_subset(kaldi_ref, tmp_path / "no_wav", 30)
    (no_wav / "wav.scp").unlink()
    spks = {line.split()[0] for line in (no_wav / "spk2utt").read_text().splitlines()}
    cmvn = (no_wav / "cmvn.scp").read_text().splitlines(keepends=True)
    (no_wav / "cmvn.scp").write_text("".join(x for x in cmvn if x.split()[0] in spks))
    assert main(["validate-data-dir", str(no_wav)]) == 1
    assert "wav.scp: missing file" in capsys.readouterr().out
    assert main(["validate-data-dir", "--no-wav", str(no_wav)]) == 0
    assert main(["fix-data-dir", str(no_wav)]) == 0  # keeps every utterance, adds no wav.scp
    assert len((no_wav / "utt2spk").read_text().splitlines()) == 30
    assert not (no_wav / "wav.scp").exists()
    (no_wav / "feats.scp").rename(tmp_path / "feats.scp")
    assert main(["validate-data-dir", "--no-wav", str(no_wav)]) == 1
    assert "feats.scp: missing file" in capsys.readouterr().out
    (tmp_path / "feats.scp").rename(no_wav / "feats.scp")
    conf = tmp_path / "mono.yaml"
    conf.write_text(
        yaml.safe_dump({"num_iters": 4, "max_iter_inc": 3, "totgauss": 150, "realign_iters": [2]})
    )
    lang = str(kaldi_ref / "an4/lang")
    for data in (with_wav, no_wav):
        out = str(tmp_path / f"exp_{data.name}")
        assert main(["train-mono", "--nj", "2", "--config", str(conf), str(data), lang, out]) == 0
    assert not (no_wav / "split2" / "1" / "wav.scp").exists()
    assert (no_wav / "split2" / "1" / "feats.scp").is_file()
    assert (with_wav / "split2" / "1" / "wav.scp").is_file()
    ours = (tmp_path / "exp_no_wav" / "final.mdl").read_bytes()
    assert ours == (tmp_path / "exp_with_wav" / "final.mdl").read_bytes()
