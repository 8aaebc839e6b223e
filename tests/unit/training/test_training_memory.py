"""The trainers' targets live on disk (training/data.py alignment_store, shared_store): Kaldi's
own ali dir read into a store, reuse of a finished store, and what train-ce and
train-transducer keep in memory as the corpus grows 4x (bench/train_memory.py's corpus and its
tracemalloc measurement; the bench also samples the real CLI's RSS)."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from bench_modules import load_bench

from pykaldi2.data.vector_store import VectorStore, read_store_meta
from pykaldi2.training.data import alignment_store, load_pdf_targets, shared_store


def _bench():
    return load_bench("train_memory")


def _kaldi_tri1_ali(kaldi_ref: Path, out: Path) -> Path:
    """Kaldi's exp/tri1_ali as align_si.sh leaves it: tri1's final.mdl and tree, ali.1.gz."""
    exp = kaldi_ref / "an4" / "exp"
    out.mkdir()
    for name in ("final.mdl", "tree"):
        shutil.copyfile(exp / "tri1" / name, out / name)
    for name in ("ali.1.gz", "num_jobs"):
        shutil.copyfile(exp / "tri1_ali" / name, out / name)
    return out


def test_alignment_store_of_kaldis_ali_dir(kaldi_ref, tmp_path):
    """Kaldi's tri1_ali (ali.1.gz, the text ark of align_si.sh) streamed into a
    store: the first 20 alignments equal Kaldi's own text dump of them (ali.first20.txt), the
    pdf store is ali-to-pdf through Kaldi's final.mdl, and both equal the dict readers."""
    ali = _kaldi_tri1_ali(kaldi_ref, tmp_path / "tri1_ali")
    tids, model = alignment_store([ali], tmp_path / "egs" / "ali")
    pdfs, _ = alignment_store([ali], tmp_path / "egs" / "pdf", to_pdf=True)
    text = (kaldi_ref / "an4" / "exp" / "tri1_ali" / "ali.first20.txt").read_text().splitlines()
    assert len(text) == 20
    for line in text:
        utt, *ids = line.split()
        assert tids[utt].tolist() == [int(x) for x in ids]
    with gzip.open(ali / "ali.1.gz", "rt") as f:  # every entry of the archive, once
        assert len(tids) == len(f.read().splitlines()) > 900
    ref, _ = load_pdf_targets([ali])
    assert sorted(ref) == list(pdfs) == list(tids)
    for utt in ref:
        np.testing.assert_array_equal(pdfs[utt], ref[utt])
        np.testing.assert_array_equal(pdfs[utt], model.tid2pdf[tids[utt]])
    assert int(pdfs.meta["num_values"]) == sum(len(v) for v in ref.values())


def test_a_store_is_made_once_per_source(tmp_path):
    calls = []

    def build(w):
        calls.append(1)
        w.add("a", [1, 2, 3])

    path = tmp_path / "s"
    s1 = shared_store(path, {"inputs": [1]}, build)
    s2 = shared_store(path, {"inputs": [1]}, build)  # a resumed run: reused
    assert len(calls) == 1 and s1["a"].tolist() == s2["a"].tolist() == [1, 2, 3]
    shared_store(path, {"inputs": [2]}, build)  # other inputs: made again
    assert len(calls) == 2 and read_store_meta(path)["source"] == {"inputs": [2]}


def test_alignment_store_is_remade_when_an_alignment_changes(tmp_path):
    from pykaldi2.hmm.ali import read_ali, write_ali

    bench = _bench()
    _, ali = bench.make_corpus(tmp_path / "c", 6, 200)
    store, _ = alignment_store([ali], tmp_path / "egs" / "ali")
    made = read_store_meta(tmp_path / "egs" / "ali")["source"]
    alis = read_ali(ali / "ali.ark")
    first = sorted(alis)[0]
    alis[first] = alis[first][:-3]
    write_ali(ali / "ali.ark", alis)
    store, _ = alignment_store([ali], tmp_path / "egs" / "ali")
    assert read_store_meta(tmp_path / "egs" / "ali")["source"] != made
    assert store[first].tolist() == alis[first].tolist()


def _growth(bench, tmp_path, trainer: str, utts: int, frames: int) -> tuple[float, float]:
    """(bytes per added utterance, bytes per added frame) that ``trainer``'s data loading keeps
    when the corpus grows from ``utts`` to 4 x ``utts`` utterances of ``frames`` frames."""
    held, total = {}, {}
    for size in (0, 1, 4):  # 0: a warm-up on the 1x corpus (one-time allocations, caches)
        root = tmp_path / f"x{max(size, 1)}"
        if size != 1:
            data, ali = bench.make_corpus(root, utts * max(size, 1), frames)
            confs = bench.write_configs(root, data, ali, steps=1)
        held[size] = bench.held_bytes(trainer, confs[trainer], root / f"work{size}")
        total[size] = sum(int(n) for n in _frames(data))
    grow = held[4] - held[1]
    return grow / (3 * utts), grow / (total[4] - total[1])


def _frames(data: Path):
    from pykaldi2.features.storage import open_features

    feats = open_features(data)
    return [feats.shape(u)[0] for u in feats]


def test_train_ce_data_memory_does_not_grow_per_frame(tmp_path, one_thread):
    """train-ce's data loading keeps no per-frame state: targets are in the store (before:
    {utt: int32 pdf targets} and a list of (utt, start, frames) tuples per chunk, measured
    10.4 kB per 1,500-frame utterance, 6.8 B per frame; now about 0.6 kB per utterance: the
    feature index, the chunk index arrays)."""
    per_utt, per_frame = _growth(_bench(), tmp_path, "ce", utts=30, frames=1500)
    assert per_utt < 2500 and per_frame < 1.5, (per_utt, per_frame)


def test_train_transducer_data_memory_keeps_no_token_lists(tmp_path, one_thread):
    """train-transducer's token ids are in the store (before: a dict of Python int lists,
    measured 1.8 kB per utterance of ~150 letters; now about 0.35 kB: the feature index)."""
    per_utt, per_frame = _growth(_bench(), tmp_path, "transducer", utts=30, frames=1500)
    assert per_utt < 900 and per_frame < 0.6, (per_utt, per_frame)


def test_train_ce_dataset_pickles_without_targets(tmp_path):
    """What a DataLoader worker gets of the training chunks (under spawn, a pickle; under fork,
    the same objects) holds the store's path, not the targets."""
    from pykaldi2.training.ce import TrainCEConfig
    from pykaldi2.training.ce_egs import load_ce_data

    bench = _bench()
    data, ali = bench.make_corpus(tmp_path / "c", 40, 1500)
    conf = bench.write_configs(tmp_path / "c", data, ali, steps=1)["ce"]
    ce = load_ce_data(TrainCEConfig.load(conf), tmp_path / "egs")
    assert isinstance(ce.train.targets, VectorStore) and isinstance(ce.targets, VectorStore)
    frames = sum(_frames(data))
    assert len(pickle.dumps(ce.train)) < 0.5 * frames  # int32 targets alone: 4 B a frame
    utt, x, y = ce.train[5]
    assert y.dtype == np.int64 and len(x) == 40


@pytest.mark.parametrize("numerator", ["online"])
def test_train_se_data_uses_stores(numerator, tmp_path):
    """train-se's numerator alignments and transcripts (numerator: online) are stores too."""
    from pykaldi2.training.se_egs import transcript_store

    bench = _bench()
    data, ali = bench.make_corpus(tmp_path / "c", 5, 100)
    words = tmp_path / "words.txt"
    vocab = sorted(
        {w for line in (data / "text").read_text().splitlines() for w in line.split()[1:]}
    )
    words.write_text("<eps> 0\n" + "".join(f"{w} {i + 1}\n" for i, w in enumerate(vocab)))
    utts = [line.split()[0] for line in (data / "text").read_text().splitlines()]
    store = transcript_store([str(data)], words, utts[:4], tmp_path / "egs" / "words")
    assert isinstance(store, VectorStore) and list(store) == sorted(utts[:4])
    first = (data / "text").read_text().splitlines()[0].split()
    assert store[first[0]].tolist() == [vocab.index(w) + 1 for w in first[1:]]
    alis, _ = alignment_store([ali], tmp_path / "egs" / "ali")
    assert isinstance(alis, VectorStore) and len(alis) == 5
