"""Pruned RNN-T (Kuang et al. 2022, k2's ``rnnt_loss_pruned``): the full joiner on a band only.

Dimension legend: B batch, T frames, U symbols (U+1 lattice columns), V vocabulary,
J joiner hidden units, R = ``s_range``, the width of the band kept at each frame.

Three steps:

1. :func:`rnnt_loss_simple`: the RNN-T loss with a *simple* joiner, ``logits(t, u) = am(t) +
   lm(u)`` (linear projections of encoder and predictor to V). Its log-softmax normalizer is a
   matrix product, ``lse(t, u) = log sum_v exp(am(t, v)) exp(lm(u, v))`` (B, T, U+1), so the
   (B, T, U+1, V) tensor is never formed. It also returns the arc posteriors.
2. :func:`get_rnnt_prune_ranges`: from the posteriors, for each frame t the first column
   ``s_t`` of the R consecutive columns ``[s_t, s_t + R)`` holding most occupancy, adjusted so
   that the band is a valid lattice: ``s_0 = 0``, ``s_t <= s_{t+1} <= s_t + R - 1`` and the last
   frame's band holds ``U_b``.
3. :func:`do_rnnt_pruning` gathers the joiner inputs on the band (B, T, R, J), the real joiner
   gives (B, T, R, V) logits and :func:`rnnt_loss_pruned` computes the exact loss of the paths
   that stay inside the band (nodes outside it get ``-inf`` arcs).

The loss to train is ``simple_scale * simple + pruned`` (icefall warms up with a larger weight
on the simple loss). :func:`pruned_rnnt_loss` runs all three steps for a
:class:`pykaldi2.nnet.transducer.Transducer` built with ``simple_proj=True``.
"""

from __future__ import annotations

import torch

from pykaldi2.losses.rnnt import compute_dtype, rnnt_loss_from_lattice
from pykaldi2.nnet.transducer import Transducer
from pykaldi2.utils.errors import Pykaldi2Error


def rnnt_loss_simple(
    am: torch.Tensor,
    lm: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    lm_only_scale: float = 0.0,
    am_only_scale: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The RNN-T loss of the additive joiner ``logits(t, u, v) = am(t, v) + lm(u, v)``.

    Args:
        am: (B, T, V) encoder projected to the vocabulary
        lm: (B, U+1, V) predictor projected to the vocabulary (row 0: after SOS)
        targets: (B, U) int; logit_lengths, target_lengths: (B,) int
        blank: the blank id; reduction: "mean", "sum" or "none"
        lm_only_scale, am_only_scale: k2's ``rnnt_loss_smoothed``: every arc's log-prob is
            ``(1 - l - a) * log p(v | t, u) + l * log softmax(lm(u))[v] + a * log
            softmax(am(t))[v]``, so that the predictor alone (and the encoder alone) also learns
            to predict the symbols (icefall's pruned transducers: ``lm_scale`` 0.25,
            ``am_scale`` 0). 0 and 0: the plain loss of the additive joiner.

    Returns:
        the loss, and the arc posteriors ``g_blank`` (B, T, U+1), ``g_emit`` (B, T, U) (no grad).

    The normalizer: with ``a = am - max_v am`` and ``l = lm - max_v lm`` (per row),
    ``lse(t, u) = log(exp(a) @ exp(l)^T)(t, u) + max am(t) + max lm(u)``.
    """
    B, T, V = am.shape
    U = targets.shape[1]
    if lm.shape != (B, U + 1, V):
        raise Pykaldi2Error(f"simple rnnt loss: lm must be (B, U+1, V) = {(B, U + 1, V)}")
    if lm_only_scale < 0 or am_only_scale < 0 or lm_only_scale + am_only_scale >= 1:
        raise Pykaldi2Error(
            f"simple rnnt loss: lm_only_scale {lm_only_scale} and am_only_scale {am_only_scale} "
            "must be >= 0 with a sum < 1"
        )
    am, lm = am.to(compute_dtype(am.dtype)), lm.to(compute_dtype(am.dtype))
    am_max = am.detach().amax(-1, keepdim=True)  # (B, T, 1)
    lm_max = lm.detach().amax(-1, keepdim=True)  # (B, U+1, 1)
    norm = torch.bmm((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2)).log()
    norm = norm + am_max + lm_max.transpose(1, 2)  # (B, T, U+1)
    blank_lp = am[:, :, blank, None] + lm[:, None, :, blank] - norm
    y = targets.long().clamp(0, V - 1)  # padding may hold anything
    am_y = am.gather(2, y[:, None, :].expand(B, T, U))  # (B, T, U) am(t, y_{u+1})
    lm_y = lm[:, :U].gather(2, y[:, :, None]).squeeze(-1)  # (B, U) lm(u, y_{u+1})
    emit_lp = am_y + lm_y[:, None, :] - norm[:, :, :U]
    if lm_only_scale > 0 or am_only_scale > 0:
        c = 1.0 - lm_only_scale - am_only_scale
        lm_lp = torch.log_softmax(lm, dim=-1)  # (B, U+1, V)
        am_lp = torch.log_softmax(am, dim=-1)  # (B, T, V)
        lm_blank, am_blank = lm_lp[:, None, :, blank], am_lp[:, :, blank, None]
        lm_emit = lm_lp[:, :U].gather(2, y[:, :, None]).squeeze(-1)[:, None, :]  # (B, 1, U)
        am_emit = am_lp.gather(2, y[:, None, :].expand(B, T, U))  # (B, T, U)
        blank_lp = c * blank_lp + lm_only_scale * lm_blank + am_only_scale * am_blank
        emit_lp = c * emit_lp + lm_only_scale * lm_emit + am_only_scale * am_emit
    return rnnt_loss_from_lattice(
        blank_lp, emit_lp, logit_lengths, target_lengths, reduction, return_posteriors=True
    )


def get_rnnt_prune_ranges(
    g_blank: torch.Tensor,
    g_emit: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    s_range: int,
) -> torch.Tensor:
    """The band's first column at each frame, ``ranges`` (B, T) int64 (see the module doc).

    Args:
        g_blank: (B, T, U+1), g_emit: (B, T, U) arc posteriors (from :func:`rnnt_loss_simple`)
        logit_lengths, target_lengths: (B,) int
        s_range: R >= 2, columns kept per frame

    Each frame's band starts where the R-column window holds the most node occupancy, clipped so
    the band stays in ``[0, U_b]``; then ``s_t <= t (R - 1)`` (reachable from (0, 0)), the last
    frames get ``max(U_b - R + 1, 0)``, a running max makes ``s`` non-decreasing and
    ``s_t = max(s_t, s_{t+1} - (R - 1))`` (from the end) keeps consecutive bands overlapping.
    Needs ``U_b <= T_b (R - 1)``, else no path fits in any band: a clear error says so.
    """
    if s_range < 2:
        raise Pykaldi2Error(f"pruned rnnt: s_range must be >= 2, got {s_range}")
    B, T, U1 = g_blank.shape
    R = s_range
    dev = g_blank.device
    Tl = logit_lengths.to(dev).long()
    Ul = target_lengths.to(dev).long()
    bad = Ul > Tl * (R - 1)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        raise Pykaldi2Error(
            f"pruned rnnt: utterance {b} has {int(Ul[b])} symbols in {int(Tl[b])} frames, more than "
            f"T * (s_range - 1) = {int(Tl[b]) * (R - 1)}; raise s_range or drop the utterance"
        )
    with torch.no_grad():
        occ = g_blank.clone()
        occ[:, :, :-1] += g_emit  # node occupancy (B, T, U+1)
        if R >= U1:
            s = torch.zeros(B, T, dtype=torch.long, device=dev)
        else:
            cs = torch.nn.functional.pad(occ.cumsum(-1), (1, 0))  # (B, T, U+2)
            window = cs[:, :, R:] - cs[:, :, :-R]  # (B, T, U+2-R): columns [s, s + R)
            s = window.argmax(-1)
        last = (Ul - R + 1).clamp(min=0)[:, None]  # (B, 1) highest useful start
        t = torch.arange(T, device=dev)[None, :]
        s = torch.minimum(torch.minimum(s, last), t * (R - 1))
        s = torch.where(t >= Tl[:, None] - 1, last, s)
        s = s.cummax(dim=1).values
        # s_t = max_{k >= t} (s_k - (k - t)(R - 1)): a reversed running max
        shifted = s - t * (R - 1)
        s = shifted.flip(1).cummax(dim=1).values.flip(1) + t * (R - 1)
    return s


def do_rnnt_pruning(
    enc_p: torch.Tensor, pred_p: torch.Tensor, ranges: torch.Tensor, s_range: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The joiner inputs on the band: enc_p (B, T, J), pred_p (B, U+1, J), ranges (B, T)
    -> (B, T, R, J) each (columns past U repeat column U; their arcs are dropped later)."""
    B, T, J = enc_p.shape
    U1 = pred_p.shape[1]
    u = (ranges[:, :, None] + torch.arange(s_range, device=ranges.device)).clamp(max=U1 - 1)
    b = torch.arange(B, device=ranges.device)[:, None, None]
    # advanced indexing: its backward adds into a (B, U+1, J) gradient, never (B, T, U+1, J)
    return enc_p[:, :, None].expand(B, T, s_range, J), pred_p[b, u]


def rnnt_loss_pruned(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ranges: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The RNN-T loss of the paths inside the band.

    Args:
        logits: (B, T, R, V) joiner output at columns ``ranges[b, t] + r``
        targets: (B, U) int; ranges: (B, T) int64 from :func:`get_rnnt_prune_ranges`
        logit_lengths, target_lengths: (B,) int; blank; reduction as :func:`rnnt_loss`

    The band's log-probs are scattered into (B, T, U+1) / (B, T, U) lattices filled with ``-inf``
    and handed to :func:`pykaldi2.losses.rnnt.rnnt_loss_from_lattice`.
    """
    B, T, R, V = logits.shape
    U = targets.shape[1]
    lp = torch.log_softmax(logits, dim=-1, dtype=compute_dtype(logits.dtype))  # (B, T, R, V)
    u = ranges[:, :, None] + torch.arange(R, device=ranges.device)  # (B, T, R) lattice column
    y = torch.nn.functional.pad(targets.long().clamp(0, V - 1), (0, 1))  # (B, U+1)
    y_at_u = y[:, None, :].expand(B, T, U + 1).gather(2, u.clamp(max=U))  # y_{u+1}
    blank_r = lp[..., blank]
    emit_r = lp.gather(3, y_at_u[..., None]).squeeze(-1)
    ninf = float("-inf")
    # column U + 1 is a dump for band columns past the lattice; it is cut off after the scatter
    blank_idx = torch.where(u <= U, u, U + 1)
    emit_idx = torch.where(u < U, u, U + 1)
    blank_lp = lp.new_full((B, T, U + 2), ninf).scatter(2, blank_idx, blank_r)[:, :, : U + 1]
    emit_lp = lp.new_full((B, T, U + 2), ninf).scatter(2, emit_idx, emit_r)[:, :, :U]
    return rnnt_loss_from_lattice(blank_lp, emit_lp, logit_lengths, target_lengths, reduction)


def pruned_rnnt_loss(
    model: Transducer,
    feats: torch.Tensor,
    feat_lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    s_range: int = 5,
    reduction: str = "mean",
    lm_only_scale: float = 0.0,
    am_only_scale: float = 0.0,
    encoded: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(simple loss, pruned loss) of a transducer built with ``simple_proj=True``.

    feats (B, T, F), feat_lengths (B,), targets (B, U), target_lengths (B,); ``lm_only_scale``
    and ``am_only_scale`` smooth the simple loss (:func:`rnnt_loss_simple`). ``encoded``: the
    ``model.encode_and_predict`` outputs when the caller has them already (e.g. for a CTC
    head on the same encoder output); then ``feats`` and ``feat_lengths`` are not read.
    """
    if model.simple_am_proj is None or model.simple_lm_proj is None:
        raise Pykaldi2Error(
            "pruned rnnt needs a model built with TransducerConfig(simple_proj=True)"
        )
    if encoded is None:
        encoded = model.encode_and_predict(feats, feat_lengths, targets)
    enc, enc_lengths, pred = encoded
    am, lm = model.simple_am_proj(enc), model.simple_lm_proj(pred)
    simple, g_blank, g_emit = rnnt_loss_simple(
        am, lm, targets, enc_lengths, target_lengths, model.blank, reduction,
        lm_only_scale, am_only_scale,
    )  # fmt: skip
    ranges = get_rnnt_prune_ranges(g_blank, g_emit, enc_lengths, target_lengths, s_range)
    j = model.joiner
    enc_b, pred_b = do_rnnt_pruning(j.project_enc(enc), j.project_pred(pred), ranges, s_range)
    logits = j.joint(enc_b, pred_b)  # (B, T, R, V)
    pruned = rnnt_loss_pruned(
        logits, targets, ranges, enc_lengths, target_lengths, model.blank, reduction
    )
    return simple, pruned
