"""Transcripts of GMM training and alignment on Kaldi's AN4 data, lang and models (#18 items 3
and 13): utterances without a ``text`` line are listed and, above max_missing_text_fraction,
refused (train-mono, train-deltas, align-si; before, train-mono trained on the rest without a
word); words outside words.txt are named with their utterances."""

from __future__ import annotations

import logging
import shutil

import pytest
from kaldi_reference_data import kaldi_data_subset
from test_hmm_kaldi_dirs import kaldi_ali_dir

from pykaldi2.cli.main import main


@pytest.fixture()
def data30(kaldi_ref, tmp_path):
    """30 AN4 training utterances of Kaldi's data dir; the lines of 10 removed from ``text``
    (every third), a UTF-8 BOM before the first. Returns (data dir, the 10 utts, all 30)."""
    data = kaldi_data_subset(kaldi_ref, tmp_path / "train30", 30)
    lines = (data / "text").read_text().splitlines()
    utts = [ln.split()[0] for ln in lines]
    dropped = utts[2::3]
    kept = [ln for ln in lines if ln.split()[0] not in dropped]
    (data / "text").write_text("\ufeff" + "".join(ln + "\n" for ln in kept), encoding="utf-8")
    return data, dropped, utts


def test_train_mono_refuses_then_lists_untranscribed_utterances(
    kaldi_ref, data30, tmp_path, capsys, caplog
):
    data, dropped, utts = data30
    lang, exp = kaldi_ref / "an4" / "lang", tmp_path / "mono"
    argv = ["train-mono", str(data), str(lang), str(exp), "--num-iters", "1", "--max-iter-inc",
            "0", "--totgauss", "150"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{data / 'text'}: 10 of 30 utterances (33.3%) have no transcript, more than " in err
    assert "max_missing_text_fraction=0.1 allows: " + ", ".join(dropped) in err
    assert "pykaldi2 fix-data-dir DATA), or raise max_missing_text_fraction" in err
    assert not (exp / "final.mdl").exists()

    with caplog.at_level(logging.WARNING, logger="pykaldi2.data.transcripts"):
        assert main([*argv, "--max-missing-text-fraction", "0.5"]) == 0
    assert (
        f"{data / 'text'}: 10 of 30 utterances have no transcript and are left out of "
        f"training: {', '.join(dropped)}" in caplog.text
    )
    # trained on the other 20, the first one (after the BOM) among them
    from pykaldi2.hmm.exp_dir import read_ali_dir

    assert sorted(read_ali_dir(exp)[0]) == sorted(u for u in utts if u not in dropped)
    assert utts[0] not in dropped


def test_train_deltas_and_align_si_check_transcripts(kaldi_ref, data30, tmp_path, capsys, caplog):
    data, dropped, _ = data30
    lang, exp = kaldi_ref / "an4" / "lang", kaldi_ref / "an4" / "exp"
    ali = kaldi_ali_dir(kaldi_ref, tmp_path / "mono_ali", "mono", "mono_ali")
    argv = ["train-deltas", str(data), str(lang), str(ali), str(tmp_path / "tri1")]
    assert main([*argv, "--num-leaves", "50", "--tot-gauss", "100"]) == 1
    assert "10 of 30 utterances (33.3%) have no transcript" in capsys.readouterr().err

    out = tmp_path / "ali"
    argv = ["align-si", str(data), str(lang), str(exp / "mono"), str(out)]
    assert main(argv) == 1
    assert "10 of 30 utterances (33.3%) have no transcript" in capsys.readouterr().err
    # two words of one utterance and one of another outside words.txt: named (item 13)
    lines = (data / "text").read_text(encoding="utf-8").splitlines()
    u1, u2 = lines[1].split()[0], lines[3].split()[0]
    lines[1] = f"{u1} ZYZZYVA QOPH ZYZZYVA"
    lines[3] = f"{u2} ZYZZYVA"
    (data / "text").write_text("".join(ln + "\n" for ln in lines))
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--max-missing-text-fraction", "0.4"]) == 0
    assert "aligned 20 of 20 utterances" in capsys.readouterr().out
    assert f"left out of alignment: {', '.join(dropped)}" in caplog.text
    oov = (
        f"{data / 'text'}: 4 word tokens (2 distinct words) are not in {lang / 'words.txt'}: "
        f"ZYZZYVA (3), QOPH (1); in 2 utterances: {u1}, {u2} (mapped to <UNK>)"
    )
    assert caplog.text.count(oov) == 1, caplog.text
    shutil.rmtree(out)
