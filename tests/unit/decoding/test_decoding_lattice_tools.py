"""lattice-best-path, lattice-to-nbest, lattice-to-ctm and lattice-copy on Kaldi's own lattices
(../shared/data/kaldi_reference/an4/exp/tri1/decode_test/lat.1.gz) and on ours."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.cli.main import main
from pykaldi2.decoding.compact_lattice import CompactLattice
from pykaldi2.decoding.lattice import best_path, nbest_paths
from pykaldi2.decoding.lattice_io import decompressed, read_lattices
from pykaldi2.decoding.word_align import (
    align_words_boundary,
    align_words_lexicon,
    ctm_lines,
    lattice_to_ctm,
    read_align_lexicon,
    read_word_boundary,
    split_to_phones,
)
from pykaldi2.hmm.decoder_reference import word_sequences
from pykaldi2.utils.errors import DataError


@pytest.fixture(scope="module")
def tri1(kaldi_ref):
    an4 = kaldi_ref / "an4"
    exp = an4 / "exp" / "tri1"
    lats = list(read_lattices(exp / "decode_test" / "lat.1.gz"))
    words = {int(i): w for w, i in (line.split() for line in open(exp / "graph" / "words.txt"))}
    from pykaldi2.hmm.model import GmmModel

    return an4, exp, lats, GmmModel.load(exp / "final.mdl"), words


def test_lattice_best_path_writes_kaldis_scoring_files(tri1, tmp_path, capsys):
    """score_kaldi.sh's scoring_kaldi/penalty_WIP/LMWT.txt, byte for byte, for every LMWT/WIP."""
    _, exp, _, _, _ = tri1
    d = exp / "decode_test"
    for wip in ("0.0", "0.5", "1.0"):
        for lmwt in (5, 10, 16, 20):
            out = tmp_path / f"{wip}_{lmwt}.txt"
            argv = ["lattice-best-path", "--lmwt", str(lmwt), "--word-ins-penalty", wip,
                    "--word-symbol-table", str(exp / "graph" / "words.txt"), str(d / "lat.1.gz"),
                    "-o", str(out)]  # fmt: skip
            assert main(argv) == 0
            assert (
                out.read_bytes()
                == (d / "scoring_kaldi" / f"penalty_{wip}" / f"{lmwt}.txt").read_bytes()
            )
    assert (
        main(["lattice-best-path", "--lmwt", "10", str(d), "--ali-out", str(tmp_path / "ali.gz")])
        == 0
    )
    from pykaldi2.hmm.ali import read_ali

    alis = dict(read_ali(tmp_path / "ali.gz"))
    assert len(alis) == 130 and all(len(a) > 0 for a in alis.values())


def test_nbest_paths_are_the_best_word_sequences(tri1):
    _, _, lats, _, _ = tri1
    for _, lat in lats[:40]:
        want = sorted(word_sequences(lat, 0.1).values())[:5]
        got = nbest_paths(lat, 5, lmwt=10.0)
        assert len(got) == len(want)
        np.testing.assert_allclose([p.graph_cost + p.ac_cost / 10 for p in got], want, atol=2e-3)
        assert len({tuple(p.words) for p in got}) == len(got)  # determinized: distinct words
        assert got[0].words == best_path(lat, 10.0).words


def test_lattice_to_nbest_command(tri1, tmp_path):
    _, exp, lats, _, _ = tri1
    nb = tmp_path / "nbest.gz"
    argv = ["lattice-to-nbest", "--n", "3", "--acoustic-scale", "0.1",
            str(exp / "decode_test" / "lat.1.gz"), "--nbest-out", str(nb), "-o", str(tmp_path / "n.txt")]  # fmt: skip
    assert main(argv) == 0
    lines = (tmp_path / "n.txt").read_text().splitlines()
    paths = dict(read_lattices(nb))
    assert len(paths) == len(lines) and lines[0].split()[0] == f"{lats[0][0]}-1"
    first = paths[f"{lats[0][0]}-1"]
    assert first.num_arcs == first.num_states - 1  # linear
    assert best_path(first, 10.0).words == best_path(lats[0][1], 10.0).words


def test_word_alignment_by_lexicon_equals_by_word_boundaries(tri1):
    """Two independent aligners (lattice-align-words-lexicon, lattice-align-words) agree on all
    130 of Kaldi's 1-best paths, and the segments tile each utterance's frames."""
    an4, _, lats, arrays, words = tri1
    lexicon = read_align_lexicon(an4 / "lang" / "phones" / "align_lexicon.int")
    boundary = read_word_boundary(an4 / "lang" / "phones" / "word_boundary.int")
    for utt, lat in lats:
        path = best_path(lat, 16.0, 1.0)
        phones = split_to_phones(arrays, path.ali)
        a = align_words_lexicon(phones, path.words, lexicon, utt)
        b = align_words_boundary(phones, path.words, boundary, utt)
        assert a == b
        assert [s.word for s in a if s.word] == path.words
        ends = [s.start + s.length for s in a]
        assert [s.start for s in a] == [0, *ends[:-1]] and ends[-1] == len(path.ali)
    lines, failed = lattice_to_ctm(lats[:1], arrays, lmwt=16, word_ins_penalty=1.0,
                                   lexicon=lexicon, words=words)  # fmt: skip
    assert not failed and lines[0] == "fcaw-an406-fcaw-b 1 0.26 0.64 RUBOUT\n"
    with pytest.raises(DataError, match="utterance u1.*do not spell"):
        align_words_lexicon(phones, [9999], lexicon, "u1")


def test_ctm_times_as_nbest_to_ctm():
    from pykaldi2.decoding.word_align import WordSegment

    segs = [WordSegment(0, 0, 26), WordSegment(68, 26, 64), WordSegment(3, 90, 7)]
    assert ctm_lines("u", segs) == ["u 1 0.26 0.64 68\n", "u 1 0.90 0.07 3\n"]
    assert ctm_lines("u", segs, print_silence=True)[0] == "u 1 0.00 0.26 0\n"
    assert ctm_lines("u", segs[1:2], frame_shift=0.005)[0] == "u 1 0.130 0.320 68\n"


def test_lattice_copy_text_and_back(tri1, tmp_path):
    _, exp, _, _, _ = tri1
    src = exp / "decode_test" / "lat.1.gz"
    assert main(["lattice-copy", str(src), "--text", "-o", str(tmp_path / "t.ark")]) == 0
    assert main(["lattice-copy", str(src), "-o", str(tmp_path / "b.gz")]) == 0
    assert decompressed(tmp_path / "b.gz") == decompressed(src)
    text = dict(read_lattices(tmp_path / "t.ark"))
    assert len(text) == 130 and all(isinstance(v, CompactLattice) for v in text.values())
    assert (
        main(
            ["lattice-copy", str(src), "--write-compact", "false", "-o", str(tmp_path / "raw.ark")]
        )
        == 0
    )
    raw = dict(read_lattices(tmp_path / "raw.ark"))
    utt = next(iter(raw))
    assert best_path(raw[utt], 10.0).words == best_path(text[utt], 10.0).words
    assert best_path(raw[utt], 10.0).ali == best_path(text[utt], 10.0).ali


def test_score_a_kaldi_decode_dir(tri1, tmp_path, capsys):
    """pykaldi2 score on Kaldi's own decode dir (lat.1.gz) gives score_kaldi.sh's best_wer."""
    import shutil

    _, exp, _, _, _ = tri1
    d = tmp_path / "decode_test"
    d.mkdir()
    shutil.copy(exp / "decode_test" / "lat.1.gz", d / "lat.1.gz")
    ref = exp / "decode_test" / "scoring_kaldi" / "test_filt.txt"
    argv = ["score", str(d), "--ref", str(ref), "--words", str(exp / "graph" / "words.txt"),
            "--min-lmwt", "5", "--max-lmwt", "20"]  # fmt: skip
    assert main(argv) == 0
    kaldi = (exp / "decode_test" / "scoring_kaldi" / "best_wer").read_text().split(" exp/")[0]
    assert capsys.readouterr().out.startswith(kaldi)  # %WER 4.27 [ 33 / 773, ... ]
    for name in ("wer_10_0.0", "wer_16_1.0", "wer_20_0.5"):
        assert (d / name).read_text().splitlines()[0] == (
            (exp / "decode_test" / name).read_text().splitlines()[1]
        )


def test_scp_points_into_an_archive(tri1, tmp_path):
    """An scp line ``key ark:offset`` (offset of the lattice after ``key ``), as Kaldi's
    ``ark,scp:`` writers make them."""
    from pykaldi2.decoding.lattice_io import lattice_entry_bytes

    _, _, lats, _, _ = tri1
    ark, lines, pos = bytearray(), [], 0
    for utt, lat in lats[:3]:
        entry = lattice_entry_bytes(utt, lat)
        lines.append(f"{utt} {tmp_path / 'lat.ark'}:{pos + len(utt) + 1}\n")
        ark += entry
        pos += len(entry)
    (tmp_path / "lat.ark").write_bytes(bytes(ark))
    (tmp_path / "lat.scp").write_text("".join(lines[::-1]))
    got = list(read_lattices(tmp_path / "lat.scp"))
    assert [u for u, _ in got] == [u for u, _ in lats[:3]][::-1]
    assert all(g.strings.tolist() == dict(lats)[u].strings.tolist() for u, g in got)
    (tmp_path / "bad.scp").write_text("u1 nowhere.ark\n")
    with pytest.raises(DataError, match="bad.scp:1.*file:offset"):
        list(read_lattices(tmp_path / "bad.scp"))


def test_lattice_to_ctm_command_on_kaldis_lattices_and_model(tri1, tmp_path):
    an4, exp, _, _, _ = tri1
    out = tmp_path / "ctm"
    argv = ["lattice-to-ctm", "--lmwt", "16", "--word-ins-penalty", "1.0",
            "--model", str(exp / "final.mdl"),
            "--align-lexicon", str(an4 / "lang" / "phones" / "align_lexicon.int"),
            "--word-symbol-table", str(exp / "graph" / "words.txt"),
            str(exp / "decode_test" / "lat.1.gz"), "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "fcaw-an406-fcaw-b 1 0.26 0.64 RUBOUT"
    # The CTM's words per utterance are Kaldi's 1-best at LMWT 16, WIP 1.0.
    from pykaldi2.decoding.scoring import read_text

    ctm: dict[str, list[str]] = {}
    for line in lines:
        f = line.split()
        ctm.setdefault(f[0], []).append(f[4])
    kaldi = read_text(exp / "decode_test" / "scoring_kaldi" / "penalty_1.0" / "16.txt")
    assert ctm == {u: w for u, w in kaldi.items() if w}


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_entries_straddling_read_buffers(tri1, monkeypatch, chunk):
    """The archive reader refills its buffer when an entry runs past it: an entry whose
    transition-id string or header string crossed the buffer's end used to be reported as a
    "bad binary lattice: bad string length" (seen on speechocean762's lat.1.gz)."""
    from pykaldi2.decoding import lattice_io

    _, exp, lats, _, _ = tri1
    monkeypatch.setattr(lattice_io, "_CHUNK", chunk)
    again = list(read_lattices(exp / "decode_test" / "lat.1.gz"))
    assert [k for k, _ in again] == [k for k, _ in lats]
    for (_, a), (_, b) in zip(again, lats):
        assert best_path(a, 10.0).ali == best_path(b, 10.0).ali
