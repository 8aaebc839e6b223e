"""Transducer search: batched greedy (streaming-capable) and modified beam search.

Dimension legend: B batch, T' encoder frames, J joiner hidden units, V symbols (blank
included), H predictor units.

- :func:`greedy_search`: batched over utterances; at each frame up to
  ``max_symbols_per_frame`` symbols are emitted until the joiner's argmax is blank. Pass the
  returned :class:`GreedyState` back in to decode a stream chunk by chunk. ``symbol_bonus``
  is added to every non-blank logit before the argmax (icefall's ``blank_penalty``: a
  transducer that deletes too much emits more).
- :func:`greedy_search_reference`: the same for one utterance, unbatched and plain (the check).
- :func:`modified_beam_search`: icefall's "modified beam search": at most one symbol per frame
  (or ``max_sym_per_frame``),
  hypotheses with the same symbol sequence are merged (log-add), the ``beam`` best of all
  (hypothesis, symbol) extensions are kept at each frame. With an ``lm``
  (:class:`~pykaldi2.lang.token_lm.TokenLm`), shallow fusion: every symbol's score is
  ``log p_rnnt + lm_weight * log p_lm(symbol | the hypothesis' last pieces)`` (blank: the
  transducer's alone) and the final choice adds ``lm_weight * log p_lm(</s> | ...)``.
  ``symbol_bonus`` is added to every emitted symbol's score (Kaldi's word insertion penalty,
  negated): it counters the deletions an LM's per-symbol cost brings.

All take a :class:`pykaldi2.nnet.transducer.Transducer` (anything with ``predictor.step``,
``joiner.project_enc/project_pred/joint`` and ``blank``) and the encoder output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pykaldi2.nnet.transducer import PredictorState, Transducer


@dataclass
class GreedyState:
    """The decoder side of a batch of streams between chunks.

    - ``hyps``: B lists of emitted symbols
    - ``pred_p``: (B, J) projected predictor output for the last symbol of each hyp
    - ``pred_state``: the predictor's LSTM state after those symbols
    """

    hyps: list[list[int]]
    pred_p: torch.Tensor
    pred_state: PredictorState


def _start(model: Transducer, batch: int, device, dtype) -> GreedyState:
    blank = torch.full((batch,), model.blank, dtype=torch.long, device=device)
    state = model.predictor.initial_state(batch, device, dtype)
    out, state = model.predictor.step(blank, state)
    return GreedyState([[] for _ in range(batch)], model.joiner.project_pred(out), state)


@torch.no_grad()
def greedy_search(
    model: Transducer,
    enc: torch.Tensor,
    enc_lengths: torch.Tensor,
    max_symbols_per_frame: int = 3,
    state: GreedyState | None = None,
    symbol_bonus: float = 0.0,
) -> tuple[list[list[int]], GreedyState]:
    """Batched greedy search.

    Args:
        model: the transducer (in eval mode)
        enc: (B, T', He) encoder output; enc_lengths: (B,) int valid frames per utterance
        max_symbols_per_frame: most non-blank symbols emitted at one frame (>= 1)
        state: the state returned for the previous chunk of these streams, or None
        symbol_bonus: added to every non-blank logit (the same as subtracting it from the
            blank's log-probability: the argmax of a log-softmax is that of its logits)

    Returns:
        the B symbol sequences so far (blank never included) and the state to continue with.
    """
    if max_symbols_per_frame < 1:
        raise ValueError("max_symbols_per_frame must be >= 1")
    B, T, _ = enc.shape
    if state is None:
        state = _start(model, B, enc.device, enc.dtype)
    enc_p = model.joiner.project_enc(enc)  # (B, T', J)
    lengths = enc_lengths.to(enc.device)
    pred_p, pred_state = state.pred_p, state.pred_state
    hyps = [list(h) for h in state.hyps]
    for t in range(T):
        going = t < lengths  # (B,) rows still decoding this frame
        for _ in range(max_symbols_per_frame):
            logits = model.joiner.joint(enc_p[:, t], pred_p)  # (B, V)
            if symbol_bonus:
                logits = logits + symbol_bonus
                logits[:, model.blank] -= symbol_bonus
            best = logits.argmax(-1)
            going = going & (best != model.blank)
            if not bool(going.any()):
                break
            for b in going.nonzero()[:, 0].tolist():
                hyps[b].append(int(best[b]))
            out, new_state = model.predictor.step(best.masked_fill(~going, model.blank), pred_state)
            keep = going[:, None]
            pred_p = torch.where(keep, model.joiner.project_pred(out), pred_p)
            pred_state = PredictorState(
                *(torch.where(keep[None], n, o) for n, o in zip(new_state, pred_state))
            )
    return hyps, GreedyState(hyps, pred_p, pred_state)


@torch.no_grad()
def greedy_search_reference(
    model: Transducer, enc: torch.Tensor, max_symbols_per_frame: int = 3, symbol_bonus: float = 0.0
) -> list[int]:
    """Greedy search of one utterance, enc (T', He), one joiner call at a time, on
    log-probabilities (``symbol_bonus`` added to each non-blank one)."""
    blank = model.blank
    token = torch.tensor([blank])
    pred, pstate = model.predictor.step(token)
    hyp: list[int] = []
    for t in range(enc.shape[0]):
        for _ in range(max_symbols_per_frame):
            logits = model.joiner(enc[None, t : t + 1], pred[:, None])[0, 0, 0]
            scores = [float(x) + (symbol_bonus if v != blank else 0.0)
                      for v, x in enumerate(torch.log_softmax(logits, -1))]  # fmt: skip
            k = max(range(len(scores)), key=scores.__getitem__)
            if k == blank:
                break
            hyp.append(k)
            pred, pstate = model.predictor.step(torch.tensor([k]), pstate)
    return hyp


@dataclass
class _Hyp:
    ys: tuple[int, ...]
    score: torch.Tensor  # () log-prob (+ lm_weight * LM log-prob), summed over merged paths
    pred_p: torch.Tensor  # (J,)
    state: PredictorState  # (L, 1, H) each
    lm_state: tuple = ()  # the LM's state after ys (TokenLm), () without an LM


@dataclass
class BeamResult:
    """One utterance's best hypothesis: its symbols and its final score (the transducer's
    log-prob, summed over the merged paths, plus ``lm_weight`` times the LM's, ``</s>``
    included; before length normalization)."""

    ys: list[int]
    score: float


@torch.no_grad()
def modified_beam_search(
    model: Transducer,
    enc: torch.Tensor,
    enc_lengths: torch.Tensor,
    beam: int = 4,
    length_norm: bool = True,
    lm=None,
    lm_weight: float = 0.0,
    return_scores: bool = False,
    symbol_bonus: float = 0.0,
    max_sym_per_frame: int = 1,
) -> list[list[int]] | list[BeamResult]:
    """Modified beam search (``max_sym_per_frame`` symbols per frame at most; 1: icefall's),
    utterance by utterance.

    Args:
        enc: (B, T', He) encoder output; enc_lengths: (B,) int
        beam: hypotheses kept per frame
        length_norm: pick the final hypothesis by score / number of symbols (icefall's choice)
        lm, lm_weight: shallow fusion with a :class:`~pykaldi2.lang.token_lm.TokenLm` (see the
            module doc); no LM or weight 0: the transducer alone
        return_scores: return :class:`BeamResult` objects instead of the symbol lists
        symbol_bonus: added to the score of every emitted symbol
        max_sym_per_frame: with 1 (icefall's modified beam search) a symbol moves its
            hypothesis to the next frame; with S > 1 a hypothesis may stay at a frame for up
            to S symbols (each sub-step keeps the ``beam`` best blank and symbol extensions;
            a blank moves on to the next frame, scored) and the S-th symbol moves on without
            a blank, as with 1. Frames where the output is denser than one symbol (spelled
            letters at 60 ms frames) need S > 1 or they become deletions.

    Returns:
        the best symbol sequence of each utterance.
    """
    if beam < 1 or max_sym_per_frame < 1:
        raise ValueError("beam and max_sym_per_frame must be >= 1")
    if lm is not None and lm.vocab_size != model.cfg.vocab_size:
        raise ValueError(f"the LM scores {lm.vocab_size} symbols, the model has "
                         f"{model.cfg.vocab_size}: train it on the model's tokenizer")  # fmt: skip
    fusion = lm if lm is not None and lm_weight != 0.0 else None
    enc_p = model.joiner.project_enc(enc)
    results = []
    for b in range(enc.shape[0]):
        r = _beam_one(model, enc_p[b, : int(enc_lengths[b])], beam, length_norm, fusion,
                      lm_weight, symbol_bonus, max_sym_per_frame)  # fmt: skip
        results.append(r if return_scores else r.ys)
    return results


def _beam_one(
    model: Transducer,
    enc_p: torch.Tensor,
    beam: int,
    length_norm: bool,
    lm,
    lm_weight: float,
    symbol_bonus: float = 0.0,
    max_sym_per_frame: int = 1,
) -> BeamResult:
    """enc_p (T', J) of one utterance -> the best hypothesis."""
    start = _start(model, 1, enc_p.device, enc_p.dtype)
    lm_start = lm.initial_state() if lm is not None else ()
    hyps = [_Hyp((), enc_p.new_zeros(()), start.pred_p[0], start.pred_state, lm_start)]

    def final(h: _Hyp) -> float:
        return float(h.score) + (lm_weight * lm.final_log_prob(h.lm_state) if lm else 0.0)

    last = enc_p.shape[0] - 1
    for t in range(enc_p.shape[0]):
        done: dict[tuple[int, ...], _Hyp] = {}  # the hypotheses that have left frame t
        active = hyps
        for s in range(max_sym_per_frame):
            blanks, symbols = _expand(model, enc_p[t], active, beam, lm, lm_weight, symbol_bonus)
            for h in blanks:
                _merge(done, h)
            if s == max_sym_per_frame - 1:  # the last symbol of a frame moves on with it
                for h in symbols:
                    _merge(done, h)
                break
            staying: dict[tuple[int, ...], _Hyp] = {}
            for h in symbols:
                _merge(staying, h)
            active = list(staying.values())
            if not active:
                break
        # the last frame's beam is ranked with the LM's end of sentence (a word LM: only
        # finished words), which the final choice adds
        rank = final if t == last else lambda h: float(h.score)
        hyps = sorted(done.values(), key=rank, reverse=True)[:beam]

    def key(h: _Hyp) -> float:
        return final(h) / max(1, len(h.ys)) if length_norm else final(h)

    best = max(hyps, key=key)
    return BeamResult(list(best.ys), final(best))


def _expand(model, enc_t, hyps, beam, lm, lm_weight, symbol_bonus):
    """The ``beam`` best one-step extensions of ``hyps`` at one encoder frame (enc_t (J,)):
    (the blank ones: same symbols, score + log p(blank); the symbol ones: one symbol more,
    their predictor stepped, in one batched call)."""
    blank = model.blank
    pred_p = torch.stack([h.pred_p for h in hyps])  # (N, J)
    logp = torch.log_softmax(model.joiner.joint(enc_t[None], pred_p), dim=-1)  # (N, V)
    if lm is not None:  # blank's LM column is 0: only symbols move the LM
        lm_lp = np.stack([lm.log_probs(h.lm_state) for h in hyps])  # (N, V)
        logp = logp + lm_weight * torch.from_numpy(lm_lp).to(logp)
    if symbol_bonus:
        bonus = torch.full_like(logp[0], symbol_bonus)
        bonus[blank] = 0.0
        logp = logp + bonus
    scores = torch.stack([h.score for h in hyps])[:, None] + logp
    V = logp.shape[1]
    top = scores.flatten().topk(min(beam, scores.numel()))
    blanks: list[_Hyp] = []
    extend: list[tuple[tuple[int, ...], torch.Tensor, int, int]] = []
    for score, flat in zip(top.values, top.indices.tolist()):
        i, v = divmod(flat, V)
        if v == blank:
            h = hyps[i]
            blanks.append(_Hyp(h.ys, score, h.pred_p, h.state, h.lm_state))
        else:
            extend.append((hyps[i].ys + (v,), score, i, v))
    symbols: list[_Hyp] = []
    if extend:
        idx = [i for _, _, i, _ in extend]
        state = PredictorState(
            *(torch.cat([hyps[i].state[k] for i in idx], dim=1) for k in range(2))
        )
        tokens = torch.tensor([v for *_, v in extend], device=enc_t.device)
        out, state = model.predictor.step(tokens, state)
        proj = model.joiner.project_pred(out)
        for j, (ys, score, i, v) in enumerate(extend):
            st = PredictorState(state.h[:, j : j + 1], state.c[:, j : j + 1])
            lm_state = lm.advance(hyps[i].lm_state, v) if lm is not None else ()
            symbols.append(_Hyp(ys, score, proj[j], st, lm_state))
    return blanks, symbols


def _merge(merged: dict[tuple[int, ...], _Hyp], hyp: _Hyp) -> None:
    old = merged.get(hyp.ys)
    if old is None:
        merged[hyp.ys] = hyp
    else:
        old.score = torch.logaddexp(old.score, hyp.score)
