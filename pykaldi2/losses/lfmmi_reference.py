"""Slow, obviously-correct LF-MMI forward pass: one sequence, log domain, a Python loop per arc.

Used only by tests to check :mod:`pykaldi2.losses.lfmmi`. Occupancies come from autograd on
these plain tensor operations (d log p / d nnet_output is the pdf occupancy).
"""

from __future__ import annotations

import math

import torch

from pykaldi2.lang.den_fst import ChainGraph, DenGraph

__all__ = [
    "den_log_likelihood_reference",
    "graph_log_likelihood_reference",
    "num_log_likelihood_reference",
]


def graph_log_likelihood_reference(
    nnet_output: torch.Tensor,
    arcs: list[tuple[int, int, int, float]],
    init_log_probs: list[float],
    final_log_probs: list[float],
    leaky_hmm_coefficient: float = 0.0,
    leaky_log_probs: list[float] | None = None,
) -> torch.Tensor:
    """log sum over paths of one sequence; nnet_output (T, P), arcs ``(src, dst, pdf, log_w)``.

    Per frame t (leaky HMM, if ``leaky_hmm_coefficient`` > 0)::

        alpha'(t)[i]  = logaddexp(alpha(t)[i], log c + logsumexp(alpha(t)) + leaky_log_probs[i])
        alpha(t+1)[j] = logsumexp over arcs i->j of alpha'(t)[i] + log_w + nnet_output[t, pdf]

    with ``alpha(0) = init_log_probs`` and the result ``logsumexp(alpha(T) + final_log_probs)``.
    """
    num_states = len(init_log_probs)
    neg_inf = torch.tensor(float("-inf"), dtype=nnet_output.dtype)
    alpha = [torch.tensor(v, dtype=nnet_output.dtype) for v in init_log_probs]
    for t in range(nnet_output.shape[0]):
        if leaky_hmm_coefficient > 0:
            tot = torch.logsumexp(torch.stack(alpha), 0)
            alpha = [
                torch.logaddexp(
                    alpha[i], math.log(leaky_hmm_coefficient) + tot + leaky_log_probs[i]
                )
                for i in range(num_states)
            ]
        incoming: list[list[torch.Tensor]] = [[] for _ in range(num_states)]
        for src, dst, pdf, log_w in arcs:
            if math.isfinite(float(alpha[src].detach())) and math.isfinite(log_w):  # no NaN grads
                incoming[dst].append(alpha[src] + log_w + nnet_output[t, pdf])
        alpha = [torch.logsumexp(torch.stack(v), 0) if v else neg_inf for v in incoming]
    ends = [
        alpha[i] + final_log_probs[i]
        for i in range(num_states)
        if math.isfinite(float(alpha[i].detach())) and math.isfinite(final_log_probs[i])
    ]
    return torch.logsumexp(torch.stack(ends), 0) if ends else neg_inf


def _arcs(g: ChainGraph) -> list[tuple[int, int, int, float]]:
    return list(zip(g.src.tolist(), g.dst.tolist(), g.pdf.tolist(), g.log_weight.tolist()))


def den_log_likelihood_reference(
    nnet_output: torch.Tensor, den_graph: DenGraph, leaky_hmm_coefficient: float = 1e-5
) -> torch.Tensor:
    """log p_den of one sequence, nnet_output (T, P): starts in initial_probs, ends anywhere."""
    init = [math.log(p) if p > 0 else -math.inf for p in den_graph.initial_probs.tolist()]
    return graph_log_likelihood_reference(
        nnet_output, _arcs(den_graph), init, [0.0] * den_graph.num_states,
        leaky_hmm_coefficient, init,
    )  # fmt: skip


def num_log_likelihood_reference(nnet_output: torch.Tensor, graph: ChainGraph) -> torch.Tensor:
    """log p_num of one sequence, nnet_output (T, P): from the start state to final states."""
    init = [-math.inf] * graph.num_states
    init[graph.start] = 0.0
    return graph_log_likelihood_reference(
        nnet_output, _arcs(graph), init, graph.final_log_weight.tolist()
    )
