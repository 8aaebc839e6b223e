"""LF-MMI (Kaldi "chain") objective: batched numerator and denominator forward-backward.

Dimension legend: N sequences, T frames (at the subsampled, output frame rate), P pdfs,
S states, A arcs. ``nnet_output`` is (N, T, P), unnormalized log-likelihoods (no log-softmax),
padded after ``lengths[n]`` frames.

For one sequence the objective is ``log p_num(O) - log p_den(O)`` where

    log p_G(O) = log sum over paths of G of  prod_t  w(arc_t) * exp(nnet_output[t, pdf(arc_t)])

and its derivative with respect to ``nnet_output[t, p]`` is the occupancy of pdf ``p`` at frame
``t``, so the gradient of the objective is ``num_occ - den_occ`` (both sum to one per frame).

Denominator (:class:`DenLogLikelihood`): probability domain, the den graph shared by the batch,
as in Kaldi's chain-denominator.cc, with the leaky HMM: before every frame a fraction
``leaky_hmm_coefficient`` of the total mass is redistributed over the states in proportion to the
graph's ``initial_probs``::

    alpha(0)      = initial_probs
    alpha'(t)     = alpha(t) + c * sum(alpha(t)) * initial_probs
    alpha(t+1)[j] = sum_{arcs i->j, pdf p} alpha'(t)[i] / s(t) * w * exp(x[t, p] - m(t))
    log p_den     = sum_t (log s(t) + m(t)) + log sum(alpha(T))

with ``s(t) = sum(alpha'(t))`` (Kaldi's "arbitrary scale") and ``m(t) = max_p x[t, p]`` (an
exact shift: every path takes one pdf per frame), so nothing overflows. Only the normalized
``alpha'`` of every frame is kept; the backward pass recomputes the arc terms frame by
frame and accumulates the occupancies directly, never storing per-arc values for all frames.
States are rows (alpha is (S, N) per frame, (T, S, N) in all), so the per-arc gathers and
scatters move contiguous rows of N values. On CPU the recursion runs in a compiled kernel
(``pykaldi2.losses._den``, losses/csrc/den.cc: one fused pass over the arcs a frame); the torch
recursion here is its reference and the path on other devices.

Numerator (:class:`NumLogLikelihood`): log domain (the numerator graphs are small and
may contain paths of very different weight), all sequences' graphs concatenated into one arc
list (:class:`pykaldi2.lang.chain_supervision.NumeratorGraphs`) and run together; on frame t
only the arcs that can be taken at t are visited (alignment supervision is time-layered).

:func:`chain_loss` combines them as Kaldi's chain-training.cc does, with the ``l2_regularize``
and ``xent_regularize`` options.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from pykaldi2.lang.chain_supervision import NumeratorGraphs
from pykaldi2.lang.den_fst import DenGraph
from pykaldi2.utils.config import ConfigMixin
from pykaldi2.utils.errors import Pykaldi2Error

__all__ = [
    "ChainLoss",
    "ChainTrainingOptions",
    "DenLogLikelihood",
    "NumLogLikelihood",
    "chain_loss",
    "den_log_likelihood",
    "num_log_likelihood",
    "scatter_logsumexp",
]


#: Kaldi's limit of PenalizeOutOfRange (chain-training.cc).
OUT_OF_RANGE_LIMIT = 30.0


def scatter_logsumexp(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``out[i] = logsumexp(values[index == i])`` (``-inf`` where nothing is scattered).

    values: (..., A), index: (A,) int64 into [0, size); returns (..., size).
    """
    shape = values.shape[:-1] + (size,)
    idx = index.expand_as(values)
    m = torch.full(shape, float("-inf"), dtype=values.dtype, device=values.device)
    m = m.scatter_reduce(-1, idx, values, reduce="amax", include_self=True)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(values - m_safe.gather(-1, idx))
    s = torch.zeros(shape, dtype=values.dtype, device=values.device).scatter_add_(-1, idx, e)
    return torch.log(s) + m_safe


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 outputs (autocast) are computed in float32; autograd casts the gradient back."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_inputs(nnet_output: torch.Tensor, lengths: torch.Tensor, num_pdfs: int) -> None:
    if nnet_output.dim() != 3:
        raise Pykaldi2Error(f"nnet_output must be (N, T, P), got shape {tuple(nnet_output.shape)}")
    n, t, p = nnet_output.shape
    if p != num_pdfs:
        raise Pykaldi2Error(
            f"nnet_output has {p} outputs but the chain graph has {num_pdfs} pdfs. Fix: build the "
            "den/num graphs with the transition model of this nnet"
        )
    if lengths.shape != (n,):
        raise Pykaldi2Error(f"lengths must be ({n},), got {tuple(lengths.shape)}")
    if n and (int(lengths.min()) < 1 or int(lengths.max()) > t):
        raise Pykaldi2Error(f"lengths must be in [1, {t}], got {lengths.tolist()}")


# --------------------------------------------------------------------------------------------
# Denominator: probability domain, leaky HMM
# --------------------------------------------------------------------------------------------


def _den_frame_terms(nnet_output: torch.Tensor, lengths: torch.Tensor):
    """exp(x - m) as (T, P, N) (padded frames zeroed first) and the per-frame shift m (N, T).

    The (T, P, N) layout makes the per-arc gathers and scatters of the den recursion act on
    contiguous rows of N values (about twice as fast on CPU as (N, ..) rows).
    """
    t_idx = torch.arange(nnet_output.shape[1], device=nnet_output.device)
    valid = (t_idx[None, :] < lengths[:, None])[..., None]
    x = torch.where(valid, nnet_output, torch.zeros_like(nnet_output))
    m = x.amax(dim=-1)
    return torch.exp(x - m[..., None]).permute(1, 2, 0).contiguous(), m


@functools.cache
def _den_kernel():
    """The compiled CPU kernel (pykaldi2.losses._den, built by pip from losses/csrc/den.cc), or
    None where the package was not built (a source checkout without ``pip install``)."""
    try:
        from pykaldi2.losses import _den
    except ImportError:  # pragma: no cover - every install builds it
        return None
    return _den


def _use_kernel(kernel: str, device: torch.device) -> bool:
    if kernel not in ("auto", "torch", "cpu"):
        raise Pykaldi2Error(f"den kernel must be 'auto', 'torch' or 'cpu', got {kernel!r}")
    if kernel == "torch" or device.type != "cpu":
        return False
    if _den_kernel() is None:
        if kernel == "cpu":
            raise Pykaldi2Error(
                "the compiled den kernel pykaldi2.losses._den is not built. Fix: pip install -e ."
            )
        return False
    return True


def _den_forward_torch(x, src, dst, pdf, w, init, leaky, leak_gain, alphas, tots) -> None:
    """The reference recursion (any device): fills alphas (T, S, N) and tots (T + 1, N).

    x (T, P, N) = exp(nnet_output - m); w (A, 1); init (S, 1); leak_gain = sum(alpha'(t)) /
    sum(alpha(t)).
    """
    t_max, s_num, n = alphas.shape
    # a copy: with N = 1 ``expand(...).contiguous()`` is ``init`` itself, which the loop's
    # ``zero_()`` would overwrite (and with float64 outputs the den graph's initial_probs too)
    a = init.expand(s_num, n).clone()
    tiny = torch.finfo(x.dtype).tiny
    # index_select, not a[src]: advanced indexing is ~4x slower per gather on CPU
    for t in range(t_max):
        tot = a.sum(dim=0, keepdim=True)  # (1, N)
        tots[t] = tot[0]
        a_dash = torch.addmm(a, init, tot, alpha=leaky)  # a + c * tot * init
        torch.div(a_dash, (tot * leak_gain).clamp_min_(tiny), out=alphas[t])
        contrib = alphas[t].index_select(0, src).mul_(x[t].index_select(0, pdf).mul_(w))
        a = a.zero_().index_add_(0, dst, contrib)  # a_dash holds what a had
    tots[t_max] = a.sum(dim=0)


def _den_backward_torch(x, src, dst, pdf, w, init, leaky, alphas, scale, ends_at, lengths):
    """The reference backward recursion: d log p_den / d x-terms as (T, P, N) occupancies.

    scale (T, N) = 1 / s(t); ends_at (N,) = 1 / sum(alpha(T_n)); lengths (N,).
    """
    t_max, s_num, n = alphas.shape
    grad = x.new_zeros(x.shape)
    beta = x.new_zeros((s_num, n))
    b_dash = torch.empty_like(beta)
    ends = ends_at[None, :]
    ending = set((lengths - 1).tolist())  # frames after which some sequence ends
    init_row = init.T  # (1, S)
    for t in range(t_max - 1, -1, -1):
        if t in ending:
            # beta(T_n) = d log p / d alpha(T_n) = 1 / sum(alpha(T_n)), for every state.
            beta = torch.where((lengths == t + 1)[None, :], ends.expand_as(beta), beta)
        prod = x[t].index_select(0, pdf).mul_(w).mul_(beta.index_select(0, dst))  # (A, N)
        grad[t].index_add_(0, pdf, alphas[t].index_select(0, src).mul_(prod))
        b_dash = b_dash.zero_().index_add_(0, src, prod).mul_(scale[t])
        beta = b_dash.add(init_row @ b_dash, alpha=leaky)
    return grad


class DenLogLikelihood(torch.autograd.Function):
    """log p_den per sequence, (N,); backward gives ``grad_output[n] * den_occ[n]``.

    Args (to ``apply``): nnet_output (N, T, P); lengths (N,) int64 on the output's device;
    src, dst, pdf (A,) int64; weight (A,) arc probabilities; initial_probs (S,);
    leaky_hmm_coefficient float; kernel ("auto": the compiled kernel on CPU, the torch
    recursion elsewhere; "torch"; "cpu"). Internally states are rows: alpha is (S, N).
    """

    @staticmethod
    def forward(ctx, nnet_output, lengths, src, dst, pdf, weight, initial_probs, leaky,
                kernel="auto"):  # fmt: skip
        n, t_max, _ = nnet_output.shape
        s_num = initial_probs.numel()
        dtype = nnet_output.dtype
        use_cpp = _use_kernel(kernel, nnet_output.device)
        w = weight.to(dtype)[:, None]  # (A, 1)
        init = initial_probs.to(dtype)[:, None]  # (S, 1)
        # sum(alpha'(t)) = (1 + c * sum(initial_probs)) * sum(alpha(t)): one reduction a frame
        leak_gain = 1.0 + leaky * float(init.sum())
        with torch.no_grad():
            x, m = _den_frame_terms(nnet_output, lengths)  # (T, P, N), (N, T)
            alphas = nnet_output.new_empty((t_max, s_num, n))  # normalized alpha'(t)
            tots = nnet_output.new_empty((t_max + 1, n))  # sum(alpha(t))
            if use_cpp:
                _den_kernel().forward(
                    x.numpy(), src.numpy(), dst.numpy(), pdf.numpy(), w[:, 0].contiguous().numpy(),
                    init[:, 0].contiguous().numpy(), leaky, alphas.numpy(), tots.numpy(),
                )  # fmt: skip
            else:
                _den_forward_torch(x, src, dst, pdf, w, init, leaky, leak_gain, alphas, tots)
            tiny = torch.finfo(dtype).tiny
            log_sum = tots.clamp_min(tiny).log()  # (T + 1, N) log sum(alpha(t))
            log_scale = (tots[:t_max] * leak_gain).clamp_min(tiny).log()  # (T, N) log s(t)
            # log p = sum_{t < T_n} (log s(t) + m(t)) + log sum(alpha(T_n))
            cum = torch.cumsum(log_scale.T + m, dim=1)  # (N, T)
            ar = torch.arange(n, device=nnet_output.device)
            logprob = cum[ar, lengths - 1] + log_sum.T[ar, lengths]
        ctx.save_for_backward(
            nnet_output, lengths, src, dst, pdf, w, init, alphas, log_scale, log_sum
        )
        ctx.leaky, ctx.use_cpp = leaky, use_cpp
        return logprob

    @staticmethod
    def backward(ctx, grad_output):
        nnet_output, lengths, src, dst, pdf, w, init, alphas, log_scale, log_sum = ctx.saved_tensors
        with torch.no_grad():
            x, _ = _den_frame_terms(nnet_output, lengths)
            ends_at = torch.exp(-log_sum.T.gather(1, lengths[:, None]))[:, 0]  # (N,)
            scale = torch.exp(-log_scale)  # (T, N)
            if ctx.use_cpp:
                grad = torch.zeros_like(x)
                _den_kernel().backward(
                    x.numpy(), src.numpy(), dst.numpy(), pdf.numpy(), w[:, 0].contiguous().numpy(),
                    init[:, 0].contiguous().numpy(), ctx.leaky, alphas.numpy(), scale.numpy(),
                    ends_at.numpy(), lengths.contiguous().numpy(), grad.numpy(),
                )  # fmt: skip
            else:
                grad = _den_backward_torch(
                    x, src, dst, pdf, w, init, ctx.leaky, alphas, scale, ends_at, lengths
                )
            grad = grad.permute(2, 0, 1) * grad_output.to(grad.dtype)[:, None, None]
        return grad, None, None, None, None, None, None, None, None


def den_log_likelihood(
    nnet_output: torch.Tensor,
    lengths: torch.Tensor,
    den_graph: DenGraph,
    leaky_hmm_coefficient: float = 1e-5,
    kernel: str = "auto",
) -> torch.Tensor:
    """log p_den(O_n) for each sequence, (N,), differentiable (gradient = den occupancies).

    nnet_output: (N, T, P); lengths: (N,) frames per sequence (<= T); ``den_graph`` is moved to
    the output's device if needed. ``kernel``: "auto" runs the compiled kernel
    (losses/csrc/den.cc) on CPU and the torch recursion on other devices; "torch" forces the
    torch recursion (the reference), "cpu" the kernel.
    """
    _check_inputs(nnet_output, lengths, den_graph.num_pdfs)
    if den_graph.initial_probs is None:
        raise Pykaldi2Error("den_graph has no initial_probs; build it with DenGraph.from_fst")
    if leaky_hmm_coefficient < 0:
        raise Pykaldi2Error(f"leaky_hmm_coefficient must be >= 0, got {leaky_hmm_coefficient}")
    g = den_graph if den_graph.device == nnet_output.device else den_graph.to(nnet_output.device)
    lengths = lengths.to(device=nnet_output.device, dtype=torch.int64)
    nnet_output = _at_least_float32(nnet_output)
    return DenLogLikelihood.apply(
        nnet_output, lengths, g.src, g.dst, g.pdf, g.log_weight.exp(), g.initial_probs,
        float(leaky_hmm_coefficient), kernel,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Numerator: log domain, graphs of all sequences concatenated
# --------------------------------------------------------------------------------------------


def _num_forward_backward(nnet_output, lengths, g: NumeratorGraphs):
    """Log-domain forward-backward: returns log p_num (N,) and occupancies (N, T, P).

    On frame t only the arcs that can be taken at t are visited (``g.arcs_by_frame``).
    """
    n, t_max, p_num = nnet_output.shape
    dtype = nnet_output.dtype
    s_tot = g.num_states
    final = g.final_log_weight.to(dtype)
    flat = nnet_output.reshape(-1)
    state_len = lengths[g.state_seq]
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=nnet_output.device)
    arc_base = g.arc_seq * (t_max * p_num) + g.pdf  # flat index of x[seq, 0, pdf]
    layered, free = g.arcs_by_frame(t_max)
    log_weight = g.log_weight.to(dtype)

    def arcs_at(t: int):
        """(src, dst, log_weight, flat index of x[seq, t, pdf], seq, active) of frame t."""
        idx = torch.cat([layered[t], free]) if free.numel() else layered[t]
        seq = g.arc_seq.index_select(0, idx)
        return (
            g.src.index_select(0, idx), g.dst.index_select(0, idx),
            log_weight.index_select(0, idx), arc_base.index_select(0, idx) + t * p_num, seq,
            lengths.index_select(0, seq) > t,
        )  # fmt: skip

    frames = [arcs_at(t) for t in range(t_max)]  # built once, used forward and backward
    alphas = nnet_output.new_full((t_max + 1, s_tot), float("-inf"))
    alphas[0, g.start_states] = 0.0
    for t in range(t_max):
        src, dst, lw, x_idx, _, active = frames[t]
        v = alphas[t].index_select(0, src) + lw + flat.index_select(0, x_idx)
        v = torch.where(active, v, neg_inf)
        alphas[t + 1] = torch.where(state_len > t, scatter_logsumexp(v, dst, s_tot), alphas[t])
    logprob = scatter_logsumexp(alphas[t_max] + final, g.state_seq, n)

    occ = torch.zeros(n * t_max * p_num, dtype=dtype, device=nnet_output.device)
    beta = final
    # a sequence without any path (-inf) gets zero occupancies, not NaN
    lp_safe = torch.where(torch.isfinite(logprob), logprob, float("inf"))
    for t in range(t_max - 1, -1, -1):
        src, dst, lw, x_idx, seq, active = frames[t]
        v = torch.where(
            active, lw + flat.index_select(0, x_idx) + beta.index_select(0, dst), neg_inf
        )
        post = torch.exp(alphas[t].index_select(0, src) + v - lp_safe.index_select(0, seq))
        occ.index_add_(0, x_idx, torch.where(active, post, torch.zeros_like(post)))
        beta = torch.where(state_len > t, scatter_logsumexp(v, src, s_tot), beta)
    return logprob, occ.view(n, t_max, p_num)


class NumLogLikelihood(torch.autograd.Function):
    """log p_num per sequence (N,) and the numerator occupancies (N, T, P) (not differentiable).

    Backward gives ``grad_output[n] * num_occ[n]``. The occupancies are computed in the forward
    pass because xent regularization needs them as targets.
    """

    @staticmethod
    def forward(ctx, nnet_output, lengths, graphs):
        with torch.no_grad():
            logprob, occ = _num_forward_backward(nnet_output, lengths, graphs)
        ctx.save_for_backward(occ)
        ctx.mark_non_differentiable(occ)
        return logprob, occ

    @staticmethod
    def backward(ctx, grad_logprob, grad_occ):
        (occ,) = ctx.saved_tensors
        return occ * grad_logprob.to(occ.dtype)[:, None, None], None, None


def num_log_likelihood(
    nnet_output: torch.Tensor, lengths: torch.Tensor, num_graphs: NumeratorGraphs
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p_num(O_n) (N,), differentiable, and the numerator occupancies (N, T, P).

    A sequence whose numerator graph has no path of exactly ``lengths[n]`` frames gets
    ``-inf`` (and zero occupancies); :func:`chain_loss` raises on it.
    """
    _check_inputs(nnet_output, lengths, num_graphs.num_pdfs)
    if num_graphs.num_seqs != nnet_output.shape[0]:
        raise Pykaldi2Error(
            f"{num_graphs.num_seqs} numerator graphs for {nnet_output.shape[0]} sequences"
        )
    g = num_graphs if num_graphs.device == nnet_output.device else num_graphs.to(nnet_output.device)
    lengths = lengths.to(device=nnet_output.device, dtype=torch.int64)
    return NumLogLikelihood.apply(_at_least_float32(nnet_output), lengths, g)


# --------------------------------------------------------------------------------------------
# The chain objective with its regularizers
# --------------------------------------------------------------------------------------------


@dataclass
class ChainTrainingOptions(ConfigMixin):
    """Kaldi's ChainTrainingOptions (chain-training.h).

    leaky_hmm_coefficient: the leaky-HMM mass redistributed per frame (Kaldi default 1e-5;
        every Kaldi chain recipe passes 0.1).
    l2_regularize: adds ``-0.5 * l2_regularize * sum(nnet_output**2)`` to the objective.
    xent_regularize: weight of the cross-entropy objective of a separate output head
        (``xent_output``, log-softmaxed here) trained against the numerator occupancies.
    out_of_range_regularize: adds ``-0.5 * c * sum((|nnet_output| - 30)^2)`` over the outputs
        outside [-30, 30] (Kaldi's PenalizeOutOfRange, default 0.01: keeps the outputs where
        the probability-domain denominator is safe); not part of the reported objective.
    """

    leaky_hmm_coefficient: float = 1e-5
    l2_regularize: float = 0.0
    xent_regularize: float = 0.0
    out_of_range_regularize: float = 0.01

    def __post_init__(self) -> None:
        for name in ("leaky_hmm_coefficient", "l2_regularize", "xent_regularize",
                     "out_of_range_regularize"):  # fmt: skip
            v = getattr(self, name)
            if not isinstance(v, int | float) or v < 0:
                raise Pykaldi2Error(f"ChainTrainingOptions.{name} must be a number >= 0, got {v!r}")
        if self.leaky_hmm_coefficient >= 1:
            raise Pykaldi2Error("ChainTrainingOptions.leaky_hmm_coefficient must be < 1")


@dataclass
class ChainLoss:
    """What :func:`chain_loss` returns; all objective values are sums over the batch.

    loss: the scalar to minimize, ``-(objf + l2_term + xent_regularize * xent_objf) / frames``.
    objf: sum of weighted ``num_logprob - den_logprob``.
    """

    loss: torch.Tensor
    objf: torch.Tensor
    num_logprob: torch.Tensor
    den_logprob: torch.Tensor
    l2_term: torch.Tensor
    xent_objf: torch.Tensor
    num_frames: int

    def per_frame(self) -> dict[str, float]:
        """Kaldi's log-line values: objective terms divided by the number of frames."""
        f = max(self.num_frames, 1)
        return {
            "objf": float(self.objf) / f,
            "l2_term": float(self.l2_term) / f,
            "xent_objf": float(self.xent_objf) / f,
        }


def chain_loss(
    nnet_output: torch.Tensor,
    lengths: torch.Tensor,
    den_graph: DenGraph,
    num_graphs: NumeratorGraphs,
    opts: ChainTrainingOptions | None = None,
    xent_output: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    den_kernel: str = "auto",
) -> ChainLoss:
    """The LF-MMI objective of a batch, as Kaldi's ComputeChainObjfAndDeriv.

    Args:
        nnet_output: (N, T, P) chain output at the subsampled rate (the model subsamples).
        lengths: (N,) valid frames per sequence.
        den_graph: the shared denominator graph.
        num_graphs: the batch's numerator graphs (one per sequence, in order).
        opts: leaky HMM, l2 and xent regularization.
        xent_output: (N, T, P) raw output of the xent head, required if xent_regularize > 0.
        weights: (N,) per-sequence weights (Kaldi's supervision weight); default 1.
        den_kernel: the denominator's implementation (see :func:`den_log_likelihood`).
    """
    opts = opts or ChainTrainingOptions()
    lengths = lengths.to(device=nnet_output.device, dtype=torch.int64)
    if not torch.isfinite(nnet_output.detach()).all():
        raise Pykaldi2Error(
            "nnet_output contains NaN or inf: the model diverged. Fix: lower the learning rate, "
            "raise l2_regularize, or resume from an earlier checkpoint"
        )
    num_lp, num_occ = num_log_likelihood(nnet_output, lengths, num_graphs)
    if not torch.isfinite(num_lp).all():
        bad = torch.nonzero(~torch.isfinite(num_lp)).flatten().tolist()
        raise Pykaldi2Error(
            f"numerator graphs of sequences {bad} accept no path of their length "
            f"{lengths[bad].tolist()}. Fix: check the supervision's frame count and tolerance"
        )
    den_lp = den_log_likelihood(
        nnet_output, lengths, den_graph, opts.leaky_hmm_coefficient, kernel=den_kernel
    )
    if weights is None:
        weights = torch.ones_like(num_lp)
    weights = weights.to(num_lp)
    objf = (weights * (num_lp - den_lp)).sum()
    t_idx = torch.arange(nnet_output.shape[1], device=nnet_output.device)
    valid = (t_idx[None, :] < lengths[:, None]).to(nnet_output.dtype)[..., None]
    frame_w = valid * weights[:, None, None]
    zero = nnet_output.new_zeros(())
    l2_term = zero
    if opts.l2_regularize > 0:
        l2_term = -0.5 * opts.l2_regularize * (frame_w * nnet_output**2).sum()
    xent_objf = zero
    if opts.xent_regularize > 0:
        if xent_output is None or xent_output.shape != nnet_output.shape:
            raise Pykaldi2Error(
                "xent_regularize > 0 needs xent_output with the shape of nnet_output "
                f"{tuple(nnet_output.shape)}"
            )
        logp = torch.log_softmax(xent_output, dim=-1)
        xent_objf = (frame_w * num_occ.detach() * logp).sum()
    num_frames = int(lengths.sum())
    total = objf + l2_term + opts.xent_regularize * xent_objf
    if opts.out_of_range_regularize > 0:
        excess = torch.relu(nnet_output.abs() - OUT_OF_RANGE_LIMIT)
        total = total - 0.5 * opts.out_of_range_regularize * (frame_w * excess**2).sum()
    return ChainLoss(
        loss=-total / max(num_frames, 1),
        objf=objf.detach(),
        num_logprob=num_lp.detach(),
        den_logprob=den_lp.detach(),
        l2_term=l2_term.detach(),
        xent_objf=xent_objf.detach(),
        num_frames=num_frames,
    )
