"""Greedy and modified beam search against plain references and exhaustive search; a tiny
transducer trained with our RNN-T loss must learn to decode its training targets."""

from __future__ import annotations

import itertools

import pytest
import torch
from piece_table import PieceTable

from pykaldi2.decoding.transducer_search import (
    greedy_search,
    greedy_search_reference,
    modified_beam_search,
)
from pykaldi2.losses.rnnt import rnnt_loss
from pykaldi2.nnet.transducer import Transducer, TransducerConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(seed: int = 0, **kw) -> Transducer:
    """A tiny random model whose joiner emits symbols often (not only blanks)."""
    torch.manual_seed(seed)
    m = Transducer(TransducerConfig.preset("tiny", **kw)).eval()
    with torch.no_grad():
        m.joiner.out.weight.mul_(8.0)
        m.joiner.out.bias[m.blank] -= 0.5
    return m


def _enc(m: Transducer, B: int, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, T, m.cfg.in_feats, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    enc, enc_len, _ = m.encoder(feats, lengths)
    return enc, enc_len


def test_greedy_batched_equals_reference():
    m = _model()
    enc, enc_len = _enc(m, 4, 14, seed=1)
    for max_sym in (1, 2, 4):
        hyps, _ = greedy_search(m, enc, enc_len, max_symbols_per_frame=max_sym)
        for b in range(4):
            ref = greedy_search_reference(m, enc[b, : enc_len[b]], max_symbols_per_frame=max_sym)
            assert hyps[b] == ref
        assert all(len(h) <= max_sym * int(n) for h, n in zip(hyps, enc_len))
    assert sum(len(h) for h in hyps) > 0  # the test means something


def test_greedy_symbol_bonus_equals_reference_and_beam_one():
    """The bonus (icefall's blank penalty) on logits in the batched search = on log-probs in
    the reference = beam 1's symbol bonus; a positive one emits more, a negative one fewer."""
    m = _model(seed=6)
    enc, enc_len = _enc(m, 4, 14, seed=7)
    counts = {}
    for bonus in (-2.0, 0.0, 1.5):
        hyps, _ = greedy_search(m, enc, enc_len, max_symbols_per_frame=2, symbol_bonus=bonus)
        for b in range(4):
            ref = greedy_search_reference(m, enc[b, : enc_len[b]], 2, symbol_bonus=bonus)
            assert hyps[b] == ref
        one, _ = greedy_search(m, enc, enc_len, max_symbols_per_frame=1, symbol_bonus=bonus)
        beam = modified_beam_search(m, enc, enc_len, beam=1, length_norm=False,
                                    symbol_bonus=bonus)  # fmt: skip
        assert beam == one
        counts[bonus] = sum(map(len, hyps))
    assert counts[-2.0] < counts[0.0] < counts[1.5]


def test_greedy_streaming_equals_offline():
    m = _model(seed=3)
    enc, _ = _enc(m, 2, 12, seed=2)
    full_len = torch.tensor([enc.shape[1]] * 2)
    full, _ = greedy_search(m, enc, full_len)
    state, start = None, 0
    for n in (2, 1, 3):
        chunk = enc[:, start : start + n]
        hyps, state = greedy_search(m, chunk, torch.tensor([n, n]), state=state)
        start += n
    assert hyps == full and sum(map(len, full)) > 0


def test_beam_one_equals_greedy_one_symbol():
    m = _model(seed=4)
    enc, enc_len = _enc(m, 3, 10, seed=5)
    greedy, _ = greedy_search(m, enc, enc_len, max_symbols_per_frame=1)
    assert modified_beam_search(m, enc, enc_len, beam=1, length_norm=False) == greedy


def _exhaustive_best(m: Transducer, enc: torch.Tensor, lm=None, lm_weight=0.0, bonus=0.0):
    """argmax over symbol sequences of the summed probability of all one-symbol-per-frame paths
    (+ ``lm_weight`` times the LM's sentence log-prob, </s> included); with an LM also the
    best total score."""
    enc_p = m.joiner.project_enc(enc)  # (T, J)
    V = m.cfg.vocab_size
    totals: dict[tuple[int, ...], torch.Tensor] = {}
    with torch.no_grad():
        for path in itertools.product(range(V), repeat=enc.shape[0]):
            ys: tuple[int, ...] = ()
            score = torch.zeros(())
            for t, v in enumerate(path):
                pred, _ = m.predictor(torch.tensor([list(ys)], dtype=torch.long).view(1, -1))
                logp = torch.log_softmax(
                    m.joiner.joint(enc_p[t], m.joiner.project_pred(pred[0, -1])), -1
                )
                score = score + logp[v]
                if v != m.blank:
                    ys = ys + (v,)
            totals[ys] = torch.logaddexp(totals[ys], score) if ys in totals else score
    if lm is None:
        return list(max(totals, key=lambda k: float(totals[k])))
    fused = {ys: float(v) + lm_weight * lm.sentence_log_prob(ys) + bonus * len(ys)
             for ys, v in totals.items()}  # fmt: skip
    best = max(fused, key=fused.get)
    return list(best), fused[best]


def test_beam_search_with_lm_fusion_is_exact():
    """Shallow fusion without pruning: the best of log p_rnnt(y) + w log p_lm(y </s>) over all
    symbol sequences (exhaustive), and that score; weight 0 is the transducer alone."""
    from pykaldi2.lang.kneser_ney import train_kneser_ney
    from pykaldi2.lang.token_lm import TokenLm

    m = _model(seed=6, vocab_size=4)
    enc, _ = _enc(m, 1, 6, seed=7)
    enc = enc[:, :3]
    ngram = train_kneser_ney([["a", "b"], ["a"], ["b", "b", "a"], ["a", "a"]], 2)
    lm = TokenLm(ngram, PieceTable(["a", "b"]))
    plain = modified_beam_search(m, enc, torch.tensor([3]), beam=1000, length_norm=False)
    assert modified_beam_search(m, enc, torch.tensor([3]), beam=1000, length_norm=False, lm=lm,
                                lm_weight=0.0) == plain  # fmt: skip
    outs = set()
    for w in (0.5, 3.0):
        (r,) = modified_beam_search(m, enc, torch.tensor([3]), beam=1000, length_norm=False,
                                    lm=lm, lm_weight=w, return_scores=True)  # fmt: skip
        ys, score = _exhaustive_best(m, enc[0], lm, w)
        assert r.ys == ys
        assert r.score == pytest.approx(score, abs=1e-4)
        outs.add(tuple(ys))
    assert len(outs | {tuple(plain[0])}) > 1  # the LM changes the answer at some weight
    (r,) = modified_beam_search(m, enc, torch.tensor([3]), beam=1000, length_norm=False,
                                lm=lm, lm_weight=3.0, symbol_bonus=2.5, return_scores=True)  # fmt: skip
    ys, score = _exhaustive_best(m, enc[0], lm, 3.0, bonus=2.5)
    assert r.ys == ys and r.score == pytest.approx(score, abs=1e-4)


def test_beam_search_with_word_lm_fusion_is_exact():
    """The same with a word LM spelled by the pieces (WordLm): the exhaustive best of
    log p_rnnt(y) + w * (the words' n-gram score, or INVALID off the vocabulary), and only
    spellings of LM words come out."""
    from pykaldi2.lang.kneser_ney import train_kneser_ney
    from pykaldi2.lang.word_lm import INVALID, WordLm

    m = _model(seed=6, vocab_size=4)
    enc, _ = _enc(m, 1, 6, seed=7)
    enc = enc[:, :3]
    ngram = train_kneser_ney([["A", "AB"], ["AB"], ["A", "A"], ["ABB"]], 2)
    lm = WordLm(ngram, PieceTable(["\u2581A", "B"]))
    for w, bonus in ((0.5, 0.0), (2.0, 1.0)):
        (r,) = modified_beam_search(m, enc, torch.tensor([3]), beam=1000, length_norm=False,
                                    lm=lm, lm_weight=w, symbol_bonus=bonus,
                                    return_scores=True)  # fmt: skip
        ys, score = _exhaustive_best(m, enc[0], lm, w, bonus=bonus)
        assert r.ys == ys and r.score == pytest.approx(score, abs=1e-3)
        assert score > INVALID / 2 and (not ys or ys[0] == 2)  # a word starts with "▁A"


def test_modified_beam_search_without_pruning_is_exact():
    m = _model(seed=6, vocab_size=4)
    enc, _ = _enc(m, 1, 6, seed=7)  # stacking by 2: 3 encoder frames, 4**3 paths
    enc = enc[:, :3]
    best = modified_beam_search(m, enc, torch.tensor([3]), beam=1000, length_norm=False)
    assert best[0] == _exhaustive_best(m, enc[0])


def _exhaustive_best_multi(m: Transducer, enc: torch.Tensor, max_sym: int):
    """argmax over symbol sequences of the summed probability of all paths that emit 0..S
    symbols at each frame, then a blank, the blank left out after S symbols (the semantics of
    ``max_sym_per_frame=S``)."""
    enc_p = m.joiner.project_enc(enc)  # (T, J)
    symbols = [v for v in range(m.cfg.vocab_size) if v != m.blank]
    frame_moves = [seq for k in range(max_sym + 1) for seq in itertools.product(symbols, repeat=k)]

    def logp(t, ys):
        pred, _ = m.predictor(torch.tensor([list(ys)], dtype=torch.long).view(1, -1))
        return torch.log_softmax(m.joiner.joint(enc_p[t], m.joiner.project_pred(pred[0, -1])), -1)

    totals: dict[tuple[int, ...], torch.Tensor] = {}
    with torch.no_grad():
        for path in itertools.product(frame_moves, repeat=enc.shape[0]):
            ys: tuple[int, ...] = ()
            score = torch.zeros(())
            for t, moves in enumerate(path):
                for v in moves:
                    score = score + logp(t, ys)[v]
                    ys = ys + (v,)
                if len(moves) < max_sym:
                    score = score + logp(t, ys)[m.blank]
            totals[ys] = torch.logaddexp(totals[ys], score) if ys in totals else score
    best = max(totals, key=lambda k: float(totals[k]))
    return list(best), float(totals[best])


@pytest.mark.parametrize("seed", [6, 8])
def test_beam_search_with_two_symbols_per_frame_without_pruning_is_exact(seed):
    m = _model(seed=seed, vocab_size=3)
    enc, _ = _enc(m, 1, 6, seed=seed + 1)
    enc = enc[:, :3]  # 3 frames, (1 + 2 + 4) ** 3 paths
    (r,) = modified_beam_search(m, enc, torch.tensor([3]), beam=1000, length_norm=False,
                                max_sym_per_frame=2, return_scores=True)  # fmt: skip
    ys, score = _exhaustive_best_multi(m, enc[0], 2)
    assert r.ys == ys and r.score == pytest.approx(score, abs=1e-4)  # every path summed
    # and S = 1 is the one-symbol-per-frame search
    one = modified_beam_search(m, enc, torch.tensor([3]), beam=1000, length_norm=False,
                               max_sym_per_frame=1)  # fmt: skip
    assert one[0] == _exhaustive_best(m, enc[0])


def test_tiny_transducer_learns_its_targets():
    torch.manual_seed(0)
    cfg = TransducerConfig.preset("tiny", enc_n_hid=24, pred_n_hid=16, joint_n_hid=24)
    m = Transducer(cfg)
    feats = torch.randn(3, 12, cfg.in_feats)
    lengths = torch.tensor([12, 10, 8])
    targets = torch.tensor([[1, 2, 3], [4, 5, 0], [3, 3, 1]])
    target_lengths = torch.tensor([3, 2, 3])
    opt = torch.optim.Adam(m.parameters(), lr=0.03)
    first = None
    for _ in range(120):
        logits, logit_lengths = m(feats, lengths, targets)
        loss = rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=cfg.blank)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.1 * first
    m.eval()
    enc, enc_len, _ = m.encoder(feats, lengths)
    hyps, _ = greedy_search(m, enc, enc_len)
    want = [t[:n].tolist() for t, n in zip(targets, target_lengths)]
    assert hyps == want
    assert modified_beam_search(m, enc, enc_len, beam=4) == want
