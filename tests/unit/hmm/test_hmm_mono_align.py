"""Monophone flat start + Viterbi alignment recover a known synthetic segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.hmm.ali import ali_to_pdf, ali_to_phones, read_ali, split_to_phones, write_ali


def test_alignment_recovers_true_segmentation(synth, mono_trained):
    model, alis, hist, exp = mono_trained
    assert len(alis) == len(synth.feats)
    assert hist[-1]["like_per_frame"] > hist[0]["like_per_frame"] + 3.0
    near = total = 0
    for utt, ali in alis.items():
        segs = split_to_phones(model, ali)
        assert [p for p, _, _ in segs] == synth.texts[utt]
        assert [s for _, s, _ in segs] == synth.phone_starts[utt]
        # HMM-state boundaries of the 3-state phones (blurred by the deltas): mostly within 2
        st, ph = model.tid2hmm_state[ali], model.tid2phone[ali]
        change = np.flatnonzero((st[1:] != st[:-1]) | (ph[1:] != ph[:-1])) + 1
        starts = np.concatenate([[0], change])
        for k, (p, _, _) in enumerate(segs):
            if p != 1:
                for t in synth.state_starts[utt][3 * k : 3 * k + 3]:
                    total += 1
                    near += int(np.min(np.abs(starts - t)) <= 2)
    assert near > 0.85 * total, (near, total)


def test_ali_to_phones_and_pdf(synth, mono_trained):
    model, alis, _, _ = mono_trained
    utt = sorted(alis)[0]
    ali = alis[utt]
    assert ali_to_phones(model, ali).tolist() == synth.texts[utt]
    per_frame = ali_to_phones(model, ali, per_frame=True)
    assert len(per_frame) == len(ali)
    pdf = ali_to_pdf(model, ali)
    assert pdf.min() >= 0 and pdf.max() < model.num_pdfs
    # monophone pdfs in phone order: SIL, SPN 5 each, then 3 per nonsilence phone
    first = {1: 0, 2: 5, 3: 10, 4: 13, 5: 16}
    assert np.all(pdf >= np.vectorize(first.get)(per_frame))


def test_ali_archive_roundtrip(tmp_path, mono_trained):
    from pykaldi2.hmm.streams import iter_alis

    _, alis, _, _ = mono_trained
    for name in ("ali.ark", "ali.1.gz"):
        write_ali(tmp_path / name, alis)
        back = read_ali(tmp_path / name)
        assert sorted(back) == sorted(alis)
        assert all(np.array_equal(back[u], alis[u]) for u in alis)
    scp = read_ali(tmp_path / "ali.scp")
    assert all(np.array_equal(scp[u], alis[u]) for u in alis)
    # the streaming reader (binary and Kaldi's text form) gives the same
    (tmp_path / "t.ark").write_text(
        "".join(f"{u} {' '.join(map(str, a))}\n" for u, a in sorted(alis.items()))
    )
    for f in ("ali.1.gz", "t.ark"):
        got = dict(iter_alis([tmp_path / f]))
        assert got.keys() == alis.keys() and all(np.array_equal(got[u], alis[u]) for u in alis)


def test_ali_writer_streams_in_order_and_is_atomic(tmp_path, mono_trained):
    import gzip

    from pykaldi2.hmm.ali import AliWriter
    from pykaldi2.hmm.streams import iter_alis

    _, alis, _, _ = mono_trained
    order = sorted(alis, reverse=True)  # not sorted: written as given
    for name in ("w.ark", "w.1.gz"):
        with AliWriter(tmp_path / name) as w:
            for u in order:
                w.write(u, alis[u])
        assert [u for u, _ in iter_alis([tmp_path / name])] == order
    scp = read_ali(tmp_path / "w.scp")
    assert all(np.array_equal(scp[u], alis[u]) for u in alis)
    # the gzip header names no file (not the temp file it was written as)
    raw = (tmp_path / "w.1.gz").read_bytes()
    assert raw[3] & 0x08 == 0 and gzip.decompress(raw)
    # an exception inside the block leaves nothing behind
    with pytest.raises(RuntimeError), AliWriter(tmp_path / "x.ark") as w:
        w.write(order[0], alis[order[0]])
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("x", ".x"))) == []


def test_failed_alignment_is_reported_not_misaligned(synth, mono_trained):
    from pykaldi2.hmm.align import AlignConfig, compile_train_graphs, gmm_align_compiled
    from pykaldi2.hmm.inputs import feats_for_model, load_texts
    from pykaldi2.lang.lang_dir import load_lang

    model = mono_trained[0]
    lang = load_lang(synth.lang)
    utts = sorted(synth.feats)[:3]
    texts = {u: t for u, t in load_texts(synth.data, lang).items() if u in utts}
    graphs = compile_train_graphs(model, lang.read_L(), lang.disambig_phones, texts)
    feats = feats_for_model(model, synth.data, utts)
    bad = utts[0]
    feats[bad] = feats[bad][:5]  # far fewer frames than 3 states x #phones
    res = gmm_align_compiled(model, graphs, feats, AlignConfig(beam=10, retry_beam=40))
    assert res.failed == [bad]
    assert sorted(res.alis) == utts[1:]


def test_transcript_outside_lexicon_is_skipped(synth, mono_trained, caplog):
    from pykaldi2.hmm.align import compile_train_graphs
    from pykaldi2.lang.lang_dir import load_lang

    model = mono_trained[0]
    lang = load_lang(synth.lang)
    sil, w3 = lang.words.id("sil"), lang.words.id("w3")
    texts = {"ok": [sil, w3, sil], "unknown_word": [sil, 999, sil], "empty": []}
    graphs = compile_train_graphs(model, lang.read_L(), lang.disambig_phones, texts)
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
    argv = ["train-mono", str(tmp_path), str(tmp_path), str(tmp_path / "exp"), "--config", str(bad)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "totgaus" in err and "mono.yaml" in err and "totgauss" in err  # names the fix
    bad.write_text("num_iters: 10\nmax_iter_inc: 30\n")
    assert main(argv) == 1
    assert "max_iter_inc" in capsys.readouterr().err


@pytest.mark.parametrize("text", [False, True])
def test_alignment_ark_reader_at_every_buffer_boundary(text):
    """read_int32_vector_ark on binary and text arks through buffers of every small size, so
    that each byte of each entry (the \\0 B header included) falls on a buffer boundary once
    (a peek there once returned one byte and a binary ark read as text, at 16 h of data)."""
    import io

    import kaldiio

    from pykaldi2.hmm.streams import read_int32_vector_ark

    alis = {"u1": np.array([3, 1, 4, 1, 5], np.int32), "u2": np.array([], np.int32),
            "utt3": np.array([9], np.int32), "u4": np.arange(12, dtype=np.int32)}  # fmt: skip
    if text:  # as Kaldi's BasicVectorHolder writes them (ark,t): no brackets
        data = "".join(f"{k} " + "".join(f"{x} " for x in v) + "\n" for k, v in alis.items())
        data = data.encode()
    else:
        buf = io.BytesIO()
        kaldiio.save_ark(buf, alis)
        data = buf.getvalue()
    for size in range(1, 60):
        f = io.BufferedReader(io.BytesIO(data), buffer_size=size)
        got = list(read_int32_vector_ark(f, "x.ark"))
        assert [k for k, _ in got] == list(alis), size
        for k, v in got:
            assert v.tolist() == alis[k].tolist(), (size, k)
