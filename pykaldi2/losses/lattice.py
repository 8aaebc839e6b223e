"""Lattice-based sequence training: MMI, boosted MMI, sMBR and MPFE over raw lattices.

Dimension legend: N sequences, T frames, C pdfs (the network's outputs), A arcs and S states of
all lattices of a batch together. ``loglik`` is (N, T, C): the network's (pseudo)
log-likelihoods, e.g. ``log_softmax(logits) - log_priors``.

A raw lattice (Kaldi's ``Lattice``) is acyclic and time-synchronous: every arc with a
transition_id consumes one frame, epsilon arcs (transition_id 0) none. As in Kaldi's nnet
discriminative training the lattice's own acoustic costs are *replaced* by the current
network's: arc ``a`` leaving a state at frame ``t`` with pdf ``p`` scores::

    s_a = kappa * loglik[n, t, p] - graph_cost_a          (epsilon arcs: - graph_cost_a)

with the acoustic scale ``kappa`` (0.1 for CE-trained hybrid nets); a path scores the sum of its
arcs' ``s_a`` minus its final cost. For one utterance with alignment ``ali`` (pdf ``r_t``):

- **MMI**: ``F = kappa * sum_t loglik[t, r_t] - log sum_paths exp(score)`` (Kaldi's objective
  with numerator alignments; a numerator *lattice* replaces the first term by its own
  log-sum). ``dF/dloglik[t, p] = kappa * (num_occ[t, p] - den_occ[t, p])``.
- **boosted MMI** (boost ``b``): before the log-sum every arc's score gets ``+ b * err_a``,
  Kaldi's ``LatticeBoost``: ``err_a`` is 0 when the arc's phone is the reference phone at its
  frame, ``max_silence_error`` when the arc is silence, else 1. Since every path has T frames
  this equals ``- b * acc_a`` up to a constant per utterance.
- **sMBR / MPFE**: ``F = E[A]``, the expected frame accuracy of a lattice path, where the
  accuracy of an arc is 1 when its pdf (sMBR) or phone (MPFE) equals the reference's at its
  frame; silence is handled like Kaldi's ``--one-silence-class``: when false, silence arcs
  never count as correct; when true, silence for silence counts as correct.
  ``dF/dloglik[t, p] = kappa * sum_{a at (t, p)} gamma_a * (c_a - E[A])`` where ``gamma_a`` is
  the arc's posterior and ``c_a`` the expected accuracy of the paths through it (Kaldi's
  ``LatticeForwardBackwardMpeVariants``).

The forward-backward is vectorized over arcs and over the batch: states are grouped by their
topological level (longest path from the start) and all lattices' states of one level are
processed together, so the Python loop runs once per level (about T plus the epsilon depth),
not once per arc. Statistics are computed in float64; the gradients are returned by custom
autograd Functions (never by back-propagating through the loop) and honour ``grad_output``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pykaldi2.hmm.lattice_arrays import LatticeArrays, TransitionInfo, lattice_state_times
from pykaldi2.losses.ce import frame_ce
from pykaldi2.losses.lfmmi import scatter_logsumexp
from pykaldi2.losses.output import LossOutput
from pykaldi2.utils.config import ConfigMixin, option
from pykaldi2.utils.errors import DataError, Pykaldi2Error

__all__ = [
    "CRITERIA",
    "LatticeArrays",
    "LatticeBatch",
    "SequenceConfig",
    "SequenceTask",
    "TransitionInfo",
    "alignment_log_likelihood",
    "boost_errors",
    "drop_frames_mask",
    "forward_backward",
    "frame_accuracy",
    "lattice_expected_accuracy",
    "lattice_log_likelihood",
    "lattice_state_times",
    "sequence_objective",
]

CRITERIA = ("mmi", "bmmi", "smbr", "mpfe")


# --------------------------------------------------------------------------------------------
# A batch of lattices, level-grouped for the vectorized forward-backward
# --------------------------------------------------------------------------------------------


@dataclass
class _Levels:
    """Arcs grouped by the level of one end. ``arcs[b[l]:b[l+1]]`` are level ``l``'s arcs;
    ``states[sb[l]:sb[l+1]]`` its states; ``local[i]`` the position of arc i's end among them."""

    arcs: torch.Tensor
    local: torch.Tensor
    bounds: list[int]


class LatticeBatch:
    """N lattices as one graph of torch tensors (global state ids), ready for
    :func:`forward_backward`.

    Per arc (A,): ``src, dst, seq`` (which lattice), ``frame``, ``pdf`` (0 on epsilon arcs),
    ``phone`` (0 on epsilon arcs), ``emitting`` (bool), ``graph_cost`` (float64). Per state
    (S,): ``final_cost`` (float64, inf: not final), ``state_seq``. Per lattice (N,): ``start``,
    ``num_frames``.
    """

    def __init__(
        self, lattices: Sequence[LatticeArrays], info: TransitionInfo, device="cpu"
    ) -> None:
        if not lattices:
            raise Pykaldi2Error("LatticeBatch: no lattices")
        for lat in lattices:
            info.check_tids(lat.tid, "lattice", lat.utt)
        offsets = np.cumsum([0] + [lat.num_states for lat in lattices])
        cat = np.concatenate
        src = cat([lat.src + o for lat, o in zip(lattices, offsets)])
        dst = cat([lat.dst + o for lat, o in zip(lattices, offsets)])
        tid = cat([lat.tid for lat in lattices])
        level = cat([lat.level for lat in lattices])
        self.num_seqs = len(lattices)
        self.num_states = int(offsets[-1])
        self.utts = [lat.utt for lat in lattices]
        seq = np.repeat(np.arange(len(lattices)), [lat.num_arcs for lat in lattices])
        self.max_level = int(level.max())
        dev = torch.device(device)

        def t(x, dtype=torch.int64):
            return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=dev)

        self.src, self.dst, self.seq = t(src), t(dst), t(seq)
        self.frame = t(cat([lat.frame for lat in lattices]))
        self.emitting = t(tid != 0, torch.bool)
        self.pdf = t(np.where(tid != 0, info.tid2pdf[tid], 0))
        self.phone = t(info.tid2phone[tid])
        self.graph_cost = t(cat([lat.graph_cost for lat in lattices]), torch.float64)
        self.final_cost = t(cat([lat.final_cost for lat in lattices]), torch.float64)
        self.state_seq = t(np.repeat(np.arange(len(lattices)), np.diff(offsets)))
        self.start = t([lat.start + o for lat, o in zip(lattices, offsets)])
        self.num_frames = t([lat.num_frames for lat in lattices])
        # States sorted by level; the arcs grouped by the level of their dst (forward) or
        # src (backward), each with its end's position within that level's states.
        by_level = np.argsort(level, kind="stable")
        self.level_states = t(by_level)
        self.state_bounds = np.searchsorted(level[by_level], np.arange(self.max_level + 2)).tolist()
        pos = np.empty(self.num_states, dtype=np.int64)
        pos[by_level] = np.arange(self.num_states)
        sb = np.asarray(self.state_bounds)
        self.fwd = self._group(level[dst], pos[dst] - sb[level[dst]], t)
        self.bwd = self._group(level[src], pos[src] - sb[level[src]], t)

    def _group(self, arc_level: np.ndarray, local: np.ndarray, t) -> _Levels:
        order = np.argsort(arc_level, kind="stable")
        bounds = np.searchsorted(arc_level[order], np.arange(self.max_level + 2)).tolist()
        return _Levels(t(order), t(local[order]), bounds)

    @property
    def device(self) -> torch.device:
        return self.src.device

    def states_of_level(self, lvl: int) -> torch.Tensor:
        return self.level_states[self.state_bounds[lvl] : self.state_bounds[lvl + 1]]

    def check_frames(self, lengths: torch.Tensor | Sequence[int]) -> None:
        """Raise a DataError naming the utterance when a lattice's frames != its length."""
        lengths = torch.as_tensor(lengths).tolist()
        for n, (have, want) in enumerate(zip(self.num_frames.tolist(), lengths)):
            if have != want:
                raise DataError(
                    f"lattice has {have} frames, the network output {want}",
                    utt=self.utts[n] or None,
                    fix="generate lattices from the same features and model frame rate",
                )


# --------------------------------------------------------------------------------------------
# Forward-backward
# --------------------------------------------------------------------------------------------


@dataclass
class FBStats:
    """:func:`forward_backward` results. ``log_z`` (N,); ``gamma`` (A,) arc posteriors; with
    accuracies: ``exp_acc`` (N,) expected accuracy E[A] and ``arc_acc`` (A,) c_a, the expected
    accuracy of the paths through each arc."""

    log_z: torch.Tensor
    gamma: torch.Tensor
    exp_acc: torch.Tensor | None = None
    arc_acc: torch.Tensor | None = None


def _safe_exp(x: torch.Tensor) -> torch.Tensor:
    """exp with NaN (from -inf - -inf: unreachable or dead states) as 0."""
    return torch.nan_to_num(torch.exp(x), nan=0.0)


@torch.no_grad()
def forward_backward(
    lb: LatticeBatch, arc_score: torch.Tensor, acc: torch.Tensor | None = None
) -> FBStats:
    """Log-semiring forward-backward over a :class:`LatticeBatch`, level by level.

    Args:
        arc_score: (A,) float64 log-scores ``s_a`` (final costs are taken from ``lb``).
        acc: (A,) float64 per-arc accuracies for the sMBR-style second pass, or None.
    """
    S, w = lb.num_states, arc_score
    alpha = w.new_full((S,), float("-inf"))
    alpha[lb.start] = 0.0
    a_acc = w.new_zeros(S) if acc is not None else None
    for lvl in range(1, lb.max_level + 1):
        lo, hi = lb.fwd.bounds[lvl], lb.fwd.bounds[lvl + 1]
        states = lb.states_of_level(lvl)
        arcs, loc = lb.fwd.arcs[lo:hi], lb.fwd.local[lo:hi]
        v = alpha[lb.src[arcs]] + w[arcs]
        a = scatter_logsumexp(v, loc, states.numel())
        alpha[states] = a
        if a_acc is not None:
            p = _safe_exp(v - a[loc]) * (a_acc[lb.src[arcs]] + acc[arcs])
            a_acc[states] = w.new_zeros(states.numel()).index_add_(0, loc, p)
    beta = -lb.final_cost
    b_acc = w.new_zeros(S) if acc is not None else None
    for lvl in range(lb.max_level - 1, -1, -1):
        lo, hi = lb.bwd.bounds[lvl], lb.bwd.bounds[lvl + 1]
        if lo == hi:
            continue
        states = lb.states_of_level(lvl)
        arcs, loc = lb.bwd.arcs[lo:hi], lb.bwd.local[lo:hi]
        v = beta[lb.dst[arcs]] + w[arcs]
        b = torch.logaddexp(beta[states], scatter_logsumexp(v, loc, states.numel()))
        beta[states] = b
        if b_acc is not None:
            p = _safe_exp(v - b[loc]) * (b_acc[lb.dst[arcs]] + acc[arcs])
            b_acc[states] = w.new_zeros(states.numel()).index_add_(0, loc, p)
    log_z = beta[lb.start]
    if not torch.isfinite(log_z).all():
        bad = [lb.utts[i] for i in torch.nonzero(~torch.isfinite(log_z)).flatten().tolist()]
        raise DataError(f"no complete path through the lattices of {bad}", fix="regenerate them")
    gamma = _safe_exp(alpha[lb.src] + w + beta[lb.dst] - log_z[lb.seq])
    if acc is None:
        return FBStats(log_z, gamma)
    exp_acc = b_acc[lb.start]
    arc_acc = a_acc[lb.src] + acc + b_acc[lb.dst]
    return FBStats(log_z, gamma, exp_acc, arc_acc)


def _arc_loglik(loglik: torch.Tensor, lb: LatticeBatch) -> torch.Tensor:
    """(A,) float64 ``loglik[seq, frame, pdf]`` (0 on epsilon arcs)."""
    x = loglik.detach().to(torch.float64)[lb.seq, lb.frame.clamp(max=loglik.shape[1] - 1), lb.pdf]
    return torch.where(lb.emitting, x, torch.zeros_like(x))


def _scatter_arcs(lb: LatticeBatch, values: torch.Tensor, like: tuple) -> torch.Tensor:
    """(A,) per-arc values summed into a dense (N, T, C) tensor; ``like`` = (shape, dtype)."""
    shape, dtype = like
    out = torch.zeros(shape, dtype=torch.float64, device=values.device)
    v = torch.where(lb.emitting, values, torch.zeros_like(values))
    out.index_put_((lb.seq, lb.frame.clamp(max=shape[1] - 1), lb.pdf), v, accumulate=True)
    return out.to(dtype)


class _ArcStatFunction(torch.autograd.Function):
    """Base of the lattice Functions: ``forward`` saves a per-arc derivative ``d`` (A,) of the
    per-sequence output w.r.t. the arc's acoustic score; backward returns
    ``grad_output[n] * kappa * d`` summed into (N, T, C) at each arc's (frame, pdf)."""

    @staticmethod
    def _save(ctx, loglik, lb, kappa, d) -> None:
        ctx.lb, ctx.kappa, ctx.like = lb, kappa, (loglik.shape, loglik.dtype)
        ctx.save_for_backward(d)

    @staticmethod
    def backward(ctx, grad_output):
        (d,) = ctx.saved_tensors
        lb = ctx.lb
        g = ctx.kappa * d * grad_output.to(torch.float64)[lb.seq]
        return _scatter_arcs(lb, g, ctx.like), None, None, None


class _LatticeLogLikelihood(_ArcStatFunction):
    """(N,) log-sum over lattice paths; d/dloglik = grad_output[n] * kappa * gamma (per pdf)."""

    @staticmethod
    def forward(ctx, loglik, lb, kappa, extra):
        score = kappa * _arc_loglik(loglik, lb) - lb.graph_cost + extra
        st = forward_backward(lb, score)
        _ArcStatFunction._save(ctx, loglik, lb, kappa, st.gamma)
        return st.log_z.to(loglik.dtype)


class _LatticeExpectedAccuracy(_ArcStatFunction):
    """(N,) expected accuracy E[A]; d/dloglik = grad_output[n] * kappa * gamma * (c - E[A])."""

    @staticmethod
    def forward(ctx, loglik, lb, kappa, acc):
        score = kappa * _arc_loglik(loglik, lb) - lb.graph_cost
        st = forward_backward(lb, score, acc)
        d = st.gamma * (st.arc_acc - st.exp_acc[lb.seq])
        _ArcStatFunction._save(ctx, loglik, lb, kappa, d)
        return st.exp_acc.to(loglik.dtype)


def lattice_log_likelihood(
    loglik: torch.Tensor,
    lb: LatticeBatch,
    acoustic_scale: float,
    extra_score: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N,) ``log sum_paths exp(sum_a (kappa * loglik[t_a, p_a] - graph_a) - final)``.

    Args:
        loglik: (N, T, C) log-likelihoods (T >= every lattice's frames).
        extra_score: (A,) float64 added to each arc's score (the boost of boosted MMI).
    The gradient is ``kappa * gamma`` summed per (t, pdf), times ``grad_output``.
    """
    extra = extra_score if extra_score is not None else torch.zeros_like(lb.graph_cost)
    return _LatticeLogLikelihood.apply(loglik, lb, float(acoustic_scale), extra)


def lattice_expected_accuracy(
    loglik: torch.Tensor, lb: LatticeBatch, acc: torch.Tensor, acoustic_scale: float
) -> torch.Tensor:
    """(N,) expected accuracy ``E[A] = sum_paths p(path) * sum_{a in path} acc_a`` (sMBR/MPFE).

    ``acc``: (A,) float64 per-arc accuracies (:func:`frame_accuracy`). Path posteriors use
    the scores of :func:`lattice_log_likelihood`. Gradient ``kappa * gamma * (c - E[A])``.
    """
    return _LatticeExpectedAccuracy.apply(loglik, lb, float(acoustic_scale), acc)


def alignment_log_likelihood(
    loglik: torch.Tensor, pdf_ali: torch.Tensor, lengths: torch.Tensor, acoustic_scale: float
) -> torch.Tensor:
    """(N,) ``kappa * sum_{t < length} loglik[n, t, pdf_ali[n, t]]`` (the MMI numerator path)."""
    t = torch.arange(loglik.shape[1], device=loglik.device)
    valid = t[None, :] < lengths.to(loglik.device)[:, None]
    x = loglik.gather(-1, pdf_ali.clamp(min=0)[..., None]).squeeze(-1)
    return acoustic_scale * torch.where(valid, x, torch.zeros_like(x)).sum(-1)


# --------------------------------------------------------------------------------------------
# Frame accuracies, boosting, dropped frames
# --------------------------------------------------------------------------------------------


def _ref_at_arcs(lb: LatticeBatch, ref: torch.Tensor) -> torch.Tensor:
    """(A,) ``ref[seq, frame]`` for per-frame references ``ref`` (N, T)."""
    ref = ref.to(lb.device)
    return ref[lb.seq, lb.frame.clamp(max=ref.shape[1] - 1)]


def frame_accuracy(
    lb: LatticeBatch,
    ref_pdf: torch.Tensor,
    ref_phone: torch.Tensor,
    silence_phones: Sequence[int],
    criterion: str = "smbr",
    one_silence_class: bool = True,
) -> torch.Tensor:
    """(A,) float64 per-arc frame accuracy against the reference alignment (0 on epsilon arcs).

    Args:
        ref_pdf, ref_phone: (N, T) reference pdf_id / phone per frame.
        criterion: "smbr" (pdf match) or "mpfe" (phone match).
        one_silence_class: False: a silence arc is never correct; True: silence for reference
            silence is correct (Kaldi's ``--one-silence-class``).
    """
    if criterion not in ("smbr", "mpfe"):
        raise Pykaldi2Error(f"frame_accuracy: criterion must be smbr or mpfe, got {criterion!r}")
    sil = torch.as_tensor(list(silence_phones), dtype=torch.int64, device=lb.device)
    ref_ph = _ref_at_arcs(lb, ref_phone)
    hyp_sil, ref_sil = torch.isin(lb.phone, sil), torch.isin(ref_ph, sil)
    match = lb.pdf == _ref_at_arcs(lb, ref_pdf) if criterion == "smbr" else lb.phone == ref_ph
    ok = (match | (hyp_sil & ref_sil)) if one_silence_class else (match & ~hyp_sil)
    return (ok & lb.emitting).to(torch.float64)


def boost_errors(
    lb: LatticeBatch,
    ref_phone: torch.Tensor,
    silence_phones: Sequence[int],
    max_silence_error: float = 1.0,
) -> torch.Tensor:
    """(A,) float64 Kaldi ``LatticeBoost`` frame errors: 0 when the arc's phone is the
    reference phone, ``max_silence_error`` for a silence arc, else 1 (0 on epsilon arcs)."""
    sil = torch.as_tensor(list(silence_phones), dtype=torch.int64, device=lb.device)
    wrong = lb.phone != _ref_at_arcs(lb, ref_phone)
    err = torch.where(torch.isin(lb.phone, sil), max_silence_error, 1.0).to(torch.float64)
    return torch.where(wrong & lb.emitting, err, torch.zeros_like(err))


def drop_frames_mask(lb: LatticeBatch, pdf_ali: torch.Tensor, num_pdfs: int) -> torch.Tensor:
    """(N, T) bool: True where the reference pdf appears on some lattice arc at that frame.

    Kaldi's MMI ``--drop-frames`` zeroes the gradient of the other frames (their denominator
    occupancy of the reference pdf is zero, so the numerator can never be matched there).
    """
    N, T = pdf_ali.shape
    present = torch.zeros((N, T, num_pdfs), dtype=torch.bool, device=lb.device)
    e = lb.emitting
    present[lb.seq[e], lb.frame[e], lb.pdf[e]] = True
    return present.gather(-1, pdf_ali.to(lb.device).clamp(min=0)[..., None]).squeeze(-1)


# --------------------------------------------------------------------------------------------
# The criteria and the trainer task
# --------------------------------------------------------------------------------------------


@dataclass
class SequenceConfig(ConfigMixin):
    """Options of lattice sequence training (Kaldi's nnet discriminative-training options).

    Attributes:
        criterion: "mmi" | "bmmi" | "smbr" | "mpfe".
        acoustic_scale: kappa, applied to every acoustic log-likelihood (``--acoustic-scale``).
        boost: b of boosted MMI (``--boost``; "bmmi" only, > 0 there).
        max_silence_error: error of a silence arc when boosting (LatticeBoost).
        silence_phones: phone ids treated as silence (sMBR/MPFE/bMMI).
        one_silence_class: sMBR/MPFE silence handling (``--one-silence-class``).
        drop_frames: MMI: zero the gradient on frames whose reference pdf is not in the
            lattice (``--drop-frames``).
        ce_weight: frame-smoothing lambda: loss = -objective + lambda * CE (0: off).
        prior_scale: loglik = log_softmax(logits) - prior_scale * log_priors (when priors are
            given to the task).
    """

    criterion: str = "smbr"
    acoustic_scale: float = 0.1
    boost: float = 0.0
    max_silence_error: float = 1.0
    silence_phones: list[int] = field(default_factory=list)
    one_silence_class: bool = True
    drop_frames: bool = False
    ce_weight: float = 0.0
    prior_scale: float = option(1.0, ge=0)

    def __post_init__(self) -> None:
        self.silence_phones = [int(p) for p in self.silence_phones]
        problems = []
        if self.criterion not in CRITERIA:
            problems.append(f"criterion {self.criterion!r} not in {CRITERIA}")
        if self.acoustic_scale <= 0:
            problems.append("acoustic_scale must be > 0")
        if self.criterion == "bmmi" and self.boost <= 0:
            problems.append("bmmi needs boost > 0 (Kaldi uses 0.1)")
        if self.criterion != "bmmi" and self.boost != 0:
            problems.append("boost applies to criterion bmmi only")
        if not 0 <= self.max_silence_error <= 1:
            problems.append("max_silence_error must be in [0, 1]")
        if self.ce_weight < 0:
            problems.append("ce_weight must be >= 0")
        if problems:
            raise Pykaldi2Error("SequenceConfig: " + "; ".join(problems))


def sequence_objective(
    loglik: torch.Tensor,
    lb: LatticeBatch,
    ali: torch.Tensor,
    lengths: torch.Tensor,
    info: TransitionInfo,
    cfg: SequenceConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(N,) per-utterance objective to *maximise* (MMI: log-posterior-like; sMBR/MPFE: expected
    frame accuracy) and logging stats.

    Args:
        loglik: (N, T, C) log-likelihoods.  ali: (N, T) reference transition_ids (0: padding).
        lengths: (N,) frames per utterance (must equal the lattices' frames).
    """
    lb.check_frames(lengths)
    ali = ali.to(lb.device)
    tid2pdf = torch.as_tensor(info.tid2pdf, device=lb.device)
    ref_pdf = tid2pdf[ali].clamp(min=0)
    ref_phone = torch.as_tensor(info.tid2phone, device=lb.device)[ali]
    kappa = cfg.acoustic_scale
    stats: dict[str, float] = {}
    if cfg.criterion in ("smbr", "mpfe"):
        acc = frame_accuracy(
            lb, ref_pdf, ref_phone, cfg.silence_phones, cfg.criterion, cfg.one_silence_class
        )
        return lattice_expected_accuracy(loglik, lb, acc, kappa), stats
    if cfg.drop_frames:
        keep = drop_frames_mask(lb, ref_pdf, loglik.shape[-1])  # (N, T)
        t = torch.arange(keep.shape[1], device=keep.device)
        valid = t[None, :] < lengths.to(keep.device)[:, None]
        stats["dropped_frames"] = float((valid & ~keep).sum())
        loglik = torch.where(keep[..., None].to(loglik.device), loglik, loglik.detach())
    extra = None
    if cfg.criterion == "bmmi":
        extra = cfg.boost * boost_errors(lb, ref_phone, cfg.silence_phones, cfg.max_silence_error)
    den = lattice_log_likelihood(loglik, lb, kappa, extra)
    num = alignment_log_likelihood(loglik, ref_pdf, lengths, kappa)
    return num - den, stats


class SequenceTask:
    """Trainer task (``compute_loss(model, batch) -> LossOutput``) for lattice MMI/sMBR/MPFE.

    The batch is a dict with ``feats`` (N, T, D), ``lengths`` (N,), ``ali`` (N, T) reference
    transition_ids (0 on padding), ``lattices`` (a list of N :class:`LatticeArrays`, e.g. from
    :class:`pykaldi2.losses.lattice_gen.LatticePrefetcher`) and optionally ``utt_ids``.
    ``model(feats, lengths)`` returns (N, T, C) logits; the log-likelihoods are
    ``log_softmax(logits) - prior_scale * log_priors``.

    ``LossOutput.loss`` = ``-sum_n F_n + ce_weight * CE`` over ``count`` = frames;
    ``stats["objf"]`` is the true objective sum (MMI value or expected accuracy), so the logged
    ``objf`` per frame is Kaldi's objective per frame; ``stats["ce"]`` the CE sum.
    """

    def __init__(
        self,
        cfg: SequenceConfig,
        info: TransitionInfo,
        *,
        log_priors: torch.Tensor | np.ndarray | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg, self.info = cfg, info
        self.device = torch.device(device)
        self.log_priors = (
            None
            if log_priors is None
            else torch.as_tensor(log_priors, dtype=torch.float32, device=self.device)
        )

    def log_likelihoods(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, T, C) logits -> (N, T, C) float32 log-likelihoods."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        if self.log_priors is None:
            return logp
        return logp - self.cfg.prior_scale * self.log_priors

    def compute_loss(self, model: torch.nn.Module, batch: dict) -> LossOutput:
        feats = batch["feats"].to(self.device, non_blocking=True)
        lengths = torch.as_tensor(batch["lengths"], dtype=torch.int64)
        ali = torch.as_tensor(batch["ali"], dtype=torch.int64)
        logits = model(feats, lengths.to(self.device))
        loglik = self.log_likelihoods(logits)
        lb = LatticeBatch(batch["lattices"], self.info, device=self.device)
        objf, stats = sequence_objective(
            loglik, lb, ali[:, : loglik.shape[1]], lengths, self.info, self.cfg
        )
        total = objf.sum()
        count = float(lengths.sum())
        stats["objf"] = float(total.detach())
        loss = -total
        if self.cfg.ce_weight > 0:
            targets = torch.as_tensor(self.info.tid2pdf, device=self.device)[ali.to(self.device)]
            t = torch.arange(targets.shape[1], device=self.device)
            targets = torch.where(t[None] < lengths.to(self.device)[:, None], targets, -100)
            ce = frame_ce(logits, targets[:, : logits.shape[1]])
            stats["ce"] = float(ce.loss.detach())
            loss = loss + self.cfg.ce_weight * ce.loss
        return LossOutput(loss, count, stats)
