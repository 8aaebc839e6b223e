"""Kaldi's UtteranceSplitter: candidate splits against a brute-force enumeration, chunk
positions and widths as nnet3-chain-get-egs makes them."""

from __future__ import annotations

import numpy as np

from pykaldi2.training.utterance_splitter import (
    UtteranceSplitter,
    round_up_num_frames,
    splits_reference,
)


def test_widths_round_up_to_the_subsampling_factor():
    assert round_up_num_frames([140, 100, 160], 3) == [141, 102, 162]  # Kaldi's log line
    assert round_up_num_frames([150], 3) == [150]


def test_candidate_splits_equal_brute_force():
    for widths in ([140, 100, 160], [150], [9, 6, 12]):
        s = UtteranceSplitter(widths, 3)
        for length in range(0, s.max_length + 1):
            repeats, cands = s.candidate_splits(length)
            assert repeats == 0
            assert set(cands) == splits_reference(widths, 3, length), (widths, length)


def test_chunks_cover_utterances_as_kaldi_does():
    s = UtteranceSplitter([140, 100, 160], 3)
    rng = np.random.default_rng(0)
    assert s.chunks(101, rng) == []  # shorter than every chunk: dropped
    for length in list(range(102, 700, 7)) + [1500, 4000]:
        chunks = s.chunks(length, rng)
        assert chunks
        starts = [b for b, _ in chunks]
        assert starts == sorted(starts) and starts[0] >= 0
        assert all(b % 3 == 0 and w in (141, 102, 162) for b, w in chunks)
        end = chunks[-1][0] + chunks[-1][1]
        assert end - length < 3  # at most factor - 1 frames past the end
        # at most two chunks that are not of the principal width
        assert sum(w != 141 for _, w in chunks) <= 2
        # chunks overlap only when their total exceeds the utterance
        total = sum(w for _, w in chunks)
        gaps = [chunks[i + 1][0] - (chunks[i][0] + chunks[i][1]) for i in range(len(chunks) - 1)]
        if total > length:
            assert all(g <= 0 for g in gaps) and starts[0] == 0
        else:
            assert all(g >= 0 for g in gaps)
