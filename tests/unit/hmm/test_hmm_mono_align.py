"""Monophone flat start + Viterbi alignment recover a known synthetic segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.hmm.ali import ali_to_pdf, ali_to_phones, read_ali, split_to_phones, write_ali


def test_alignment_recovers_true_segmentation(synth, mono_trained):
    model, alis, hist = mono_trained
    assert len(alis) == len(synth.feats)
    assert hist[-1]["like_per_frame"] > hist[0]["like_per_frame"] + 3.0
    for utt, ali in alis.items():
        segs = split_to_phones(model, ali)
        assert [p for p, _, _ in segs] == synth.texts[utt]
        assert [s for _, s, _ in segs] == synth.phone_starts[utt]
        # HMM-state boundaries too: a new state visit starts where the hmm_state changes
        st = model.tid2hmm_state[ali]
        starts = [0] + [t for t in range(1, len(st)) if st[t] != st[t - 1]]
        assert starts == synth.state_starts[utt]


def test_ali_to_phones_and_pdf(synth, mono_trained):
    model, alis, _ = mono_trained
    utt = sorted(alis)[0]
    ali = alis[utt]
    assert ali_to_phones(model, ali).tolist() == synth.texts[utt]
    per_frame = ali_to_phones(model, ali, per_frame=True)
    assert len(per_frame) == len(ali)
    pdf = ali_to_pdf(model, ali)
    assert pdf.min() >= 0 and pdf.max() < model.num_pdfs
    # monophone: 3 pdfs per phone, in phone order
    assert np.all(pdf // 3 == per_frame - 1)


def test_ali_archive_roundtrip(tmp_path, mono_trained):
    _, alis, _ = mono_trained
    for name in ("ali.ark", "ali.1.gz"):
        write_ali(tmp_path / name, alis)
        back = read_ali(tmp_path / name)
        assert sorted(back) == sorted(alis)
        assert all(np.array_equal(back[u], alis[u]) for u in alis)
    scp = read_ali(tmp_path / "ali.scp")
    assert all(np.array_equal(scp[u], alis[u]) for u in alis)


def test_failed_alignment_is_reported_not_misaligned(synth, mono_trained):
    from pykaldi2.hmm.align import AlignConfig, compile_train_graphs, gmm_align_compiled

    model, _, _ = mono_trained
    utts = sorted(synth.feats)[:3]
    texts = {u: synth.texts[u] for u in utts}
    graphs = compile_train_graphs(model, synth.lex, [], texts)
    feats = {u: synth.feats[u] for u in utts}
    bad = utts[0]
    feats[bad] = feats[bad][:5]  # far fewer frames than 3 states x #phones
    res = gmm_align_compiled(model, graphs, feats, AlignConfig(beam=10, retry_beam=40))
    assert res.failed == [bad]
    assert sorted(res.alis) == utts[1:]


def test_transcript_outside_lexicon_is_skipped(synth, mono_trained, caplog):
    from pykaldi2.hmm.align import compile_train_graphs

    model = mono_trained[0]
    texts = {"ok": [1, 2, 1], "unknown_word": [1, 999, 1], "empty": []}
    graphs = compile_train_graphs(model, synth.lex, [], texts)
    assert sorted(graphs) == ["ok"]
    assert "unknown_word" in caplog.text and "missing from the lexicon" in caplog.text


def test_model_save_load(tmp_path, mono_trained):
    from pykaldi2.hmm.model import GmmModel, gmm_info

    model = mono_trained[0]
    model.save(tmp_path / "final.mdl")
    back = GmmModel.load(tmp_path / "final.mdl")
    assert gmm_info(back) == gmm_info(model)
    assert np.array_equal(back.tid2pdf, model.tid2pdf)


def test_bad_model_file_is_a_clear_error(tmp_path):
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.utils.errors import DataError

    bad = tmp_path / "final.mdl"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataError, match="final.mdl"):
        GmmModel.load(bad)
    with pytest.raises(DataError, match="no such model"):
        GmmModel.load(tmp_path / "missing.mdl")


def test_cli_bad_config_is_a_clear_error(tmp_path, capsys):
    from pykaldi2.cli.main import main

    bad = tmp_path / "mono.yaml"
    bad.write_text("num_iters: 40\ntotgaus: 1000\n")
    assert (
        main(
            [
                "train-mono",
                str(tmp_path),
                str(tmp_path),
                str(tmp_path / "exp"),
                "--config",
                str(bad),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "totgaus" in err and "mono.yaml" in err and "totgauss" in err  # names the fix
    bad.write_text("num_iters: 10\nmax_iter_inc: 30\n")
    assert (
        main(
            [
                "train-mono",
                str(tmp_path),
                str(tmp_path),
                str(tmp_path / "exp"),
                "--config",
                str(bad),
            ]
        )
        == 1
    )
    assert "max_iter_inc" in capsys.readouterr().err
