"""Slow, obviously-correct RNN-T losses to test :mod:`pykaldi2.losses.rnnt` against.

- :func:`rnnt_loss_reference`: Python loops over utterances, ``t`` and ``u`` with scalar
  ``torch.logaddexp``; autograd gives the gradient. Use on tiny inputs only.
- :func:`rnnt_loss_brute_force`: sums the probabilities of every alignment path explicitly
  (``C(T - 1 + U, U)`` paths per utterance). Use on tiny inputs only.
- :func:`rnnt_loss_naive`: what one would write without a custom kernel: the full
  ``(B, T, U+1, V)`` log-softmax, then the forward recursion vectorized over the batch with a loop
  over ``t`` and a cumulative ``logsumexp`` along ``u``; autograd does the rest. The baseline of
  ``bench/rnnt_loss.py``, and an independent second check of the fast loss.

Shapes (see :mod:`pykaldi2.losses.rnnt`): logits (B, T, U+1, V), targets (B, U),
logit_lengths (B,), target_lengths (B,). All return the per-utterance loss (B,) ``-log P(y|x)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch


def _per_utterance(
    log_prob: Callable[[torch.Tensor, list[int]], torch.Tensor],
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> torch.Tensor:
    """(B,) ``-log_prob(lp, y)``, one utterance at a time: ``lp`` (T_b, U_b+1, V) are its
    log-softmaxed logits inside its lengths, ``y`` its U_b targets."""
    lp = torch.log_softmax(logits, dim=-1)
    losses = []
    for b in range(logits.shape[0]):
        T, U = int(logit_lengths[b]), int(target_lengths[b])
        y = [int(s) for s in targets[b, :U]]
        losses.append(-log_prob(lp[b, :T, : U + 1], y))
    return torch.stack(losses)


def rnnt_loss_reference(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """(B,) losses by the textbook alpha recursion, one node at a time (differentiable)."""

    def log_prob(lp: torch.Tensor, y: list[int]) -> torch.Tensor:
        T, U = lp.shape[0], len(y)
        alpha: dict[tuple[int, int], torch.Tensor] = {}
        for t in range(T):
            for u in range(U + 1):
                if t == 0 and u == 0:
                    alpha[t, u] = lp.new_zeros(())
                    continue
                terms = []
                if t > 0:
                    terms.append(alpha[t - 1, u] + lp[t - 1, u, blank])
                if u > 0:
                    terms.append(alpha[t, u - 1] + lp[t, u - 1, y[u - 1]])
                alpha[t, u] = terms[0] if len(terms) == 1 else torch.logaddexp(*terms)
        return alpha[T - 1, U] + lp[T - 1, U, blank]

    return _per_utterance(log_prob, logits, targets, logit_lengths, target_lengths)


def rnnt_alignments(T: int, U: int) -> list[list[tuple[int, int, bool]]]:
    """Every RNN-T alignment of U symbols to T frames, as lists of arcs ``(t, u, is_blank)``.

    A path takes ``T - 1`` blanks and ``U`` emissions in some order from (0, 0) to (T-1, U), then
    the final blank: ``C(T - 1 + U, U)`` paths.
    """
    paths = []
    steps = T - 1 + U
    for emit_pos in itertools.combinations(range(steps), U):
        t = u = 0
        arcs = []
        emit_set = set(emit_pos)
        for i in range(steps):
            if i in emit_set:
                arcs.append((t, u, False))
                u += 1
            else:
                arcs.append((t, u, True))
                t += 1
        arcs.append((t, u, True))
        paths.append(arcs)
    return paths


def rnnt_loss_brute_force(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """(B,) losses as ``-log sum_paths exp(sum of arc log-probs)`` over all alignments."""

    def log_prob(lp: torch.Tensor, y: list[int]) -> torch.Tensor:
        scores = []
        for arcs in rnnt_alignments(lp.shape[0], len(y)):
            s = lp.new_zeros(())
            for t, u, is_blank in arcs:
                s = s + lp[t, u, blank if is_blank else y[u]]
            scores.append(s)
        return torch.logsumexp(torch.stack(scores), dim=0)

    return _per_utterance(log_prob, logits, targets, logit_lengths, target_lengths)


def rnnt_loss_naive(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """(B,) losses with the full log-softmax and a batched loop over ``t`` (autograd backward).

    Row ``t`` of alpha from row ``t - 1``: with ``a(u) = alpha(t-1, u) + blank(t-1, u)`` and the
    exclusive prefix sum ``c(u) = sum_{j<u} emit(t, j)``,
    ``alpha(t, u) = c(u) + logcumsumexp_u(a(u) - c(u))``.
    """
    B, T, U1, V = logits.shape
    lp = torch.log_softmax(logits.float() if logits.dtype != torch.float64 else logits, dim=-1)
    blank_lp = lp[..., blank]  # (B, T, U+1)
    idx = targets.long()[:, None, :, None].expand(B, T, U1 - 1, 1)
    emit_lp = lp[:, :, :-1].gather(-1, idx).squeeze(-1)  # (B, T, U)
    zero = emit_lp.new_zeros(B, T, 1)
    c = torch.cat([zero, emit_lp.cumsum(-1)], dim=-1)  # (B, T, U+1)
    rows = [c[:, 0]]  # alpha(0, u) = sum of the first u emissions at t = 0
    for t in range(1, T):
        a = rows[-1] + blank_lp[:, t - 1]
        rows.append(c[:, t] + torch.logcumsumexp(a - c[:, t], dim=-1))
    alpha = torch.stack(rows, dim=1)  # (B, T, U+1)
    bidx = torch.arange(B)
    Tl, Ul = logit_lengths.long() - 1, target_lengths.long()
    return -(alpha[bidx, Tl, Ul] + blank_lp[bidx, Tl, Ul])
