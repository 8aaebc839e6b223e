"""The RNN-Transducer loss: exact log-space forward-backward with a fused gradient.

Dimension legend
----------------
- ``B``: batch size
- ``T``: encoder frames (after time reduction), the longest in the batch
- ``U``: target symbols, the longest in the batch; the lattice has ``U + 1`` columns
- ``V``: vocabulary size, blank included

The lattice (Graves 2012)
-------------------------
For one utterance with ``T_b`` frames and targets ``y_1 .. y_{U_b}``, node ``(t, u)`` means "at
frame ``t``, ``u`` symbols emitted". With ``lp(t, u, v) = log_softmax(logits[t, u])[v]``:

- ``blank(t, u) = lp(t, u, blank)``: go to ``(t + 1, u)``;
- ``emit(t, u) = lp(t, u, y_{u+1})``: go to ``(t, u + 1)`` (``u < U_b``).

Every path starts at ``(0, 0)`` and ends with the blank out of ``(T_b - 1, U_b)``::

    alpha(0, 0) = 0
    alpha(t, u) = logaddexp(alpha(t - 1, u) + blank(t - 1, u), alpha(t, u - 1) + emit(t, u - 1))
    log P(y | x) = alpha(T_b - 1, U_b) + blank(T_b - 1, U_b)
    beta(T_b - 1, U_b) = blank(T_b - 1, U_b)
    beta(t, u) = logaddexp(beta(t + 1, u) + blank(t, u), beta(t, u + 1) + emit(t, u))

and the loss is ``-log P(y | x)``. Its gradient with respect to the log-probs of the two arcs
out of a node is minus the arc's posterior (occupation) probability::

    g_blank(t, u) = exp(alpha(t, u) + blank(t, u) + beta(t + 1, u) - log P)  (1 at the last node)
    g_emit(t, u)  = exp(alpha(t, u) + emit(t, u) + beta(t, u + 1) - log P)

and, through the log-softmax, with respect to the logits (``gamma = g_blank + g_emit`` is the
node occupancy)::

    d loss / d logits(t, u, v) = softmax(t, u)[v] * gamma(t, u)
                                 - g_blank(t, u) [v == blank] - g_emit(t, u) [v == y_{u+1}]

How it is computed
------------------
1. Forward: ``logsumexp`` over ``V`` in chunks (bounded temporary memory), then only the
   ``(B, T, U+1)`` blank and ``(B, T, U)`` target log-probs are gathered. The full
   ``(B, T, U+1, V)`` log-softmax is never stored.
2. ``alpha`` and ``beta`` by a loop over the ``T + U`` anti-diagonals ``t + u = n``: all nodes of a
   diagonal depend only on the previous diagonal, so each step is a few element-wise ops on a
   ``(B, U+1)`` slice, vectorized over the batch. The lattice tensors are stored "skewed"
   (``skew[b, n, u] = x[b, n - u, u]``) so that every diagonal is a contiguous slice. Unlike a
   loop over ``t`` with a cumulative ``logsumexp`` along ``u``, no large partial sums are added
   and subtracted again, so fp32 precision does not degrade with ``U``.
3. The posteriors ``g_blank``, ``g_emit`` are computed in the forward (they are small) and the
   ``(B, T, U+1, V)`` gradient is written in one fused pass in the backward
   (``exp(logits - lse) * gamma``, then the two sparse corrections), scaled by ``grad_output``.

Precision: everything is computed in float32 (float64 stays float64), whatever the input dtype
(fp16/bf16 under AMP); the gradient is returned in the input dtype.

Entry points: :func:`rnnt_loss` (from logits, fused gradient) and :func:`rnnt_loss_from_lattice`
(from already-normalized blank/target log-probs, e.g. gathered by the caller; it can also return
the arc posteriors). Pruned RNN-T is built on the latter in :mod:`pykaldi2.losses.rnnt_pruned`.

A slow, obviously-correct version is in :mod:`pykaldi2.losses.rnnt_reference`; the tests compare
both, plus brute-force path enumeration and ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pykaldi2.utils.errors import Pykaldi2Error

__all__ = [
    "compute_dtype",
    "rnnt_loss",
    "rnnt_loss_from_lattice",
    "rnnt_lattice_log_probs",
    "RnntLatticeStats",
    "rnnt_forward_backward",
]

#: How many logits one chunk of the log-softmax / gradient pass touches at once. On CPU a
#: chunk of 4 MiB stays in cache between the ops on it (measured about 4x faster than one
#: pass over the whole tensor); on GPUs big chunks, bounding the temporary memory to 64 MiB.
CHUNK_ELEMS = 1 << 24
CHUNK_ELEMS_CPU = 1 << 20

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------
# Input checks


def _check_lengths(
    lattice_shape: tuple[int, int, int],
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    reduction: str,
) -> None:
    """Clear errors for lengths and reduction (never an index error from inside)."""
    B, T, U1 = lattice_shape
    if reduction not in _REDUCTIONS:
        raise Pykaldi2Error(f"rnnt loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    for name, t in (("logit_lengths", logit_lengths), ("target_lengths", target_lengths)):
        if t.dim() != 1 or t.shape[0] != B:
            raise Pykaldi2Error(f"rnnt loss: {name} must be ({B},), got {tuple(t.shape)}")
        if t.is_floating_point():
            raise Pykaldi2Error(f"rnnt loss: {name} must be an integer tensor, got {t.dtype}")
    if B == 0:
        return
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > T:
        raise Pykaldi2Error(
            f"rnnt loss: logit_lengths must be in [1, T={T}], got {logit_lengths.tolist()}; "
            "drop utterances with no frames and pass the encoder's output lengths"
        )
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > U1 - 1:
        raise Pykaldi2Error(
            f"rnnt loss: target_lengths must be in [0, U={U1 - 1}], got {target_lengths.tolist()}"
        )


def _check_targets(targets: torch.Tensor, target_lengths: torch.Tensor, V: int, blank: int) -> None:
    """Targets must be (B, U) and, within each length, non-blank symbols in [0, V)."""
    if not 0 <= blank < V:
        raise Pykaldi2Error(f"rnnt loss: blank={blank} is not a symbol of a V={V} vocabulary")
    if targets.numel() == 0:
        return
    U = targets.shape[1]
    valid = torch.arange(U, device=targets.device)[None, :] < target_lengths[:, None]
    bad = valid & ((targets < 0) | (targets >= V) | (targets == blank))
    if bool(bad.any()):
        b, u = (int(i) for i in bad.nonzero()[0])
        raise Pykaldi2Error(
            f"rnnt loss: targets[{b}, {u}] = {int(targets[b, u])} is not a non-blank symbol in "
            f"[0, {V}) (blank = {blank}); map the transcript with the same token table as the model"
        )


# --------------------------------------------------------------------------------------------
# Skewed (anti-diagonal) layout


def _skew(x: torch.Tensor, fill: float) -> torch.Tensor:
    """(B, T, U1) -> (B, T + U1 - 1, U1) with ``out[b, n, u] = x[b, n - u, u]`` (else ``fill``).

    Built with one padded copy and ``as_strided``: in the (B, U1, W = T + U1) transposed, padded
    layout the element (u, n - u) sits at flat offset ``u * (W - 1) + n``.
    """
    B, T, U1 = x.shape
    W = T + U1
    xt = torch.full((B, U1, W), fill, dtype=x.dtype, device=x.device)
    xt[:, :, :T] = x.transpose(1, 2)
    return xt.as_strided((B, T + U1 - 1, U1), (U1 * W, 1, W - 1)).contiguous()


def _unskew(s: torch.Tensor, T: int) -> torch.Tensor:
    """Inverse of :func:`_skew`: (B, T + U1 - 1, U1) contiguous -> (B, T, U1) (a strided view)."""
    B, N, U1 = s.shape
    return s.as_strided((B, T, U1), (N * U1, U1, U1 + 1))


# --------------------------------------------------------------------------------------------
# Forward-backward on the (B, T, U+1) lattice


@dataclass
class RnntLatticeStats:
    """What the forward-backward returns (all float32/float64, on the input device).

    - ``log_prob`` (B,): ``log P(y | x)`` per utterance
    - ``g_blank`` (B, T, U+1): posterior of the blank arc out of each node (0 outside lengths)
    - ``g_emit`` (B, T, U): posterior of the target arc out of each node (0 outside lengths)
    - ``alpha``, ``beta`` (B, T, U+1): the forward/backward log scores (-inf outside lengths)
    """

    log_prob: torch.Tensor
    g_blank: torch.Tensor
    g_emit: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor


def _length_masks(
    B: int, T: int, U1: int, logit_lengths: torch.Tensor, target_lengths: torch.Tensor, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the arcs inside each utterance's lattice.

    Returns ``blank_ok`` (B, T, U+1): blank arcs from t to t+1 with ``t + 1 < T_b, u <= U_b``
    (the final blank out of ``(T_b - 1, U_b)`` is handled apart), and ``emit_ok`` (B, T, U+1):
    ``t < T_b, u < U_b`` (the last column is always False).
    """
    t = torch.arange(T, device=device)[None, :, None]
    u = torch.arange(U1, device=device)[None, None, :]
    Tb = logit_lengths.to(device)[:, None, None]
    Ub = target_lengths.to(device)[:, None, None]
    blank_ok = (t + 1 < Tb) & (u <= Ub)
    emit_ok = (t < Tb) & (u < Ub)
    return blank_ok, emit_ok


def rnnt_forward_backward(
    blank_lp: torch.Tensor,
    emit_lp: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> RnntLatticeStats:
    """alpha, beta, ``log P(y|x)`` and the arc posteriors of a batch of RNN-T lattices.

    Args:
        blank_lp: (B, T, U+1) ``log p(blank | t, u)``
        emit_lp: (B, T, U) ``log p(y_{u+1} | t, u)``
        logit_lengths: (B,) int, ``T_b`` in [1, T]
        target_lengths: (B,) int, ``U_b`` in [0, U]

    No autograd: this is the kernel behind :func:`rnnt_loss` and :func:`rnnt_loss_from_lattice`.
    Values outside an utterance's lengths are ignored (they may be anything finite).
    """
    with torch.no_grad():
        B, T, U1 = blank_lp.shape
        dev, dt = blank_lp.device, blank_lp.dtype
        ninf = float("-inf")
        blank_ok, emit_ok = _length_masks(B, T, U1, logit_lengths, target_lengths, dev)
        emit_pad = torch.nn.functional.pad(emit_lp, (0, 1), value=ninf)  # (B, T, U+1)
        blank_int = blank_lp.masked_fill(~blank_ok, ninf)
        emit_m = emit_pad.masked_fill(~emit_ok, ninf)
        Bs = _skew(blank_int, ninf)  # (B, N, U+1), N = T + U
        Es = _skew(emit_m, ninf)
        N = T + U1 - 1

        # alpha, diagonal by diagonal: (t-1, u) and (t, u-1) are on diagonal n-1.
        A = torch.full((B, N, U1), ninf, dtype=dt, device=dev)
        A[:, 0, 0] = 0.0
        tmp = torch.empty((B, U1 - 1), dtype=dt, device=dev)
        for n in range(1, N):
            prev, cur = A[:, n - 1], A[:, n]
            torch.add(prev, Bs[:, n - 1], out=cur)
            if U1 > 1:
                torch.add(prev[:, :-1], Es[:, n - 1, :-1], out=tmp)
                torch.logaddexp(cur[:, 1:], tmp, out=cur[:, 1:])

        # The last node of utterance b, (T_b - 1, U_b), lies on diagonal T_b - 1 + U_b.
        bidx = torch.arange(B, device=dev)
        Tl = logit_lengths.to(device=dev, dtype=torch.long)
        Ul = target_lengths.to(device=dev, dtype=torch.long)
        final_blank = blank_lp[bidx, Tl - 1, Ul]  # (B,)
        final_diag = Tl - 1 + Ul
        log_prob = A[bidx, final_diag, Ul] + final_blank

        # beta, from the last diagonal back; beta(T_b - 1, U_b) is set when its diagonal comes.
        starts: dict[int, list[int]] = {}
        for b, n in enumerate(final_diag.tolist()):
            starts.setdefault(n, []).append(b)
        starts_t = {n: torch.tensor(bs, device=dev, dtype=torch.long) for n, bs in starts.items()}
        Bt = torch.full((B, N, U1), ninf, dtype=dt, device=dev)
        for n in range(N - 1, -1, -1):
            cur = Bt[:, n]
            if n + 1 < N:
                nxt = Bt[:, n + 1]
                torch.add(nxt, Bs[:, n], out=cur)
                if U1 > 1:
                    torch.add(nxt[:, 1:], Es[:, n, :-1], out=tmp)
                    torch.logaddexp(cur[:, :-1], tmp, out=cur[:, :-1])
            bs = starts_t.get(n)
            if bs is not None:
                Bt[bs, n, Ul[bs]] = final_blank[bs]

        alpha = _unskew(A, T).contiguous()
        beta = _unskew(Bt, T).contiguous()
        lp = log_prob[:, None, None]
        # beta(t + 1, u), -inf past the last frame
        beta_next = torch.nn.functional.pad(beta[:, 1:], (0, 0, 0, 1), value=ninf)
        g_blank = torch.exp(alpha + blank_int + beta_next - lp)
        g_blank[bidx, Tl - 1, Ul] = 1.0  # every path takes the final blank
        g_emit = torch.exp(alpha[:, :, :-1] + emit_m[:, :, :-1] + beta[:, :, 1:] - lp)
        return RnntLatticeStats(log_prob, g_blank, g_emit, alpha, beta)


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    return losses


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the losses compute in: float64 stays float64, all else becomes float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# Loss from the (B, T, U+1) lattice log-probs (autograd flows into blank_lp / emit_lp)


class _RnntLatticeLoss(torch.autograd.Function):
    """(blank_lp, emit_lp) -> (losses (B,), g_blank, g_emit); the posteriors have no gradient."""

    @staticmethod
    def forward(ctx, blank_lp, emit_lp, logit_lengths, target_lengths):
        cdt = compute_dtype(blank_lp.dtype)
        st = rnnt_forward_backward(blank_lp.to(cdt), emit_lp.to(cdt), logit_lengths, target_lengths)
        ctx.save_for_backward(st.g_blank, st.g_emit)
        ctx.dtypes = (blank_lp.dtype, emit_lp.dtype)
        ctx.mark_non_differentiable(st.g_blank, st.g_emit)
        return (-st.log_prob).to(blank_lp.dtype), st.g_blank, st.g_emit

    @staticmethod
    def backward(ctx, grad_out, _gb, _ge):
        g_blank, g_emit = ctx.saved_tensors
        go = grad_out.to(g_blank.dtype)[:, None, None]
        return (-g_blank * go).to(ctx.dtypes[0]), (-g_emit * go).to(ctx.dtypes[1]), None, None


def rnnt_loss_from_lattice(
    blank_lp: torch.Tensor,
    emit_lp: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    reduction: str = "mean",
    return_posteriors: bool = False,
):
    """RNN-T loss from already-normalized lattice log-probs, differentiable in both inputs.

    Use it when the joiner's log-probs are computed another way than a full softmax over a
    ``(B, T, U+1, V)`` tensor (e.g. ``log_softmax`` done by the caller then gathered, or the
    "simple" joiner of pruned RNN-T). Entries may be ``-inf`` (arcs that do not exist).

    Args:
        blank_lp: (B, T, U+1) ``log p(blank | t, u)``
        emit_lp: (B, T, U) ``log p(y_{u+1} | t, u)``
        logit_lengths: (B,) int, frames per utterance
        target_lengths: (B,) int, symbols per utterance
        reduction: "mean" (over the batch), "sum" or "none" (a (B,) tensor)
        return_posteriors: also return the arc posteriors ``g_blank`` (B, T, U+1) and
            ``g_emit`` (B, T, U) (no gradient), e.g. for pruning bounds

    Returns:
        the negative log-likelihood, reduced as asked (and the posteriors if asked).
    """
    B, T, U1 = blank_lp.shape
    if emit_lp.shape != (B, T, U1 - 1):
        raise Pykaldi2Error(
            f"rnnt loss: emit_lp must be (B, T, U) = {(B, T, U1 - 1)}, got {tuple(emit_lp.shape)}"
        )
    _check_lengths((B, T, U1), logit_lengths, target_lengths, reduction)
    losses, g_blank, g_emit = _RnntLatticeLoss.apply(
        blank_lp, emit_lp, logit_lengths, target_lengths
    )
    loss = _reduce(losses, reduction)
    return (loss, g_blank, g_emit) if return_posteriors else loss


# --------------------------------------------------------------------------------------------
# The loss from the joiner's logits, with the fused gradient


def _row_chunks(rows: int, row_elems: int, device: torch.device) -> list[slice]:
    """Slices of ``rows`` rows of ``row_elems`` elements, each about one chunk's worth."""
    budget = CHUNK_ELEMS if device.type != "cpu" else CHUNK_ELEMS_CPU
    step = max(1, budget // max(1, row_elems))
    return [slice(i, min(rows, i + step)) for i in range(0, rows, step)]


def _target_index(targets: torch.Tensor, T: int) -> torch.Tensor:
    """targets (B, U) -> (B * T, U, 1) int64: the index of ``y_{u+1}`` for each lattice row."""
    B, U = targets.shape
    return targets.to(torch.long)[:, None, :, None].expand(B, T, U, 1).reshape(B * T, U, 1)


def rnnt_lattice_log_probs(
    logits: torch.Tensor, targets: torch.Tensor, blank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather the lattice log-probs from joiner logits without storing the full log-softmax.

    The log-softmax is done chunk by chunk (a few MiB on CPU, so a chunk stays in cache while
    the two columns are gathered from it); only the gathered values and the normalizer are kept.

    Args:
        logits: (B, T, U+1, V) unnormalized joiner output (any float dtype)
        targets: (B, U) int
        blank: the blank symbol id

    Returns:
        ``blank_lp`` (B, T, U+1), ``emit_lp`` (B, T, U) and ``lse`` (B, T, U+1), the log-softmax
        normalizer, all in float32 (float64 for float64 logits).
    """
    B, T, U1, V = logits.shape
    cdt = compute_dtype(logits.dtype)
    dev = logits.device
    rows = logits.reshape(B * T, U1, V)
    lse = torch.empty((B * T, U1), dtype=cdt, device=dev)
    blank_lp = torch.empty((B * T, U1), dtype=cdt, device=dev)
    emit_lp = torch.empty((B * T, U1 - 1), dtype=cdt, device=dev)
    idx = _target_index(targets, T)
    for sl in _row_chunks(B * T, U1 * V, dev):
        x = rows[sl]
        ls = torch.log_softmax(x, dim=-1, dtype=cdt)  # (rows, U+1, V), one chunk only
        blank_lp[sl] = ls[:, :, blank]
        emit_lp[sl] = ls[:, :-1].gather(-1, idx[sl]).squeeze(-1)
        torch.sub(x[:, :, blank].to(cdt), blank_lp[sl], out=lse[sl])
    return blank_lp.view(B, T, U1), emit_lp.view(B, T, U1 - 1), lse.view(B, T, U1)


class _RnntLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank):
        blank_lp, emit_lp, lse = rnnt_lattice_log_probs(logits, targets, blank)
        st = rnnt_forward_backward(blank_lp, emit_lp, logit_lengths, target_lengths)
        ctx.save_for_backward(logits, targets, lse, st.g_blank, st.g_emit)
        ctx.blank = blank
        return (-st.log_prob).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        logits, targets, lse, g_blank, g_emit = ctx.saved_tensors
        B, T, U1, V = logits.shape
        go = grad_out.to(lse.dtype)[:, None, None]
        gamma = g_blank.clone()
        gamma[:, :, :-1] += g_emit
        gamma.mul_(go)  # (B, T, U+1) node occupancy times grad_output
        gb = (g_blank * go).reshape(B * T, U1)
        ge = (g_emit * go).reshape(B * T, U1 - 1)
        gamma, lse = gamma.view(B * T, U1, 1), lse.view(B * T, U1, 1)
        idx = _target_index(targets, T)
        rows = logits.reshape(B * T, U1, V)
        grad = torch.empty((B * T, U1, V), dtype=logits.dtype, device=logits.device)
        same = logits.dtype == lse.dtype
        for sl in _row_chunks(B * T, U1 * V, logits.device):
            # softmax * gamma, written in place in the output (or a float32 chunk under AMP)
            g = (
                grad[sl]
                if same
                else torch.empty(rows[sl].shape, dtype=lse.dtype, device=lse.device)
            )
            torch.sub(rows[sl].to(lse.dtype), lse[sl], out=g)
            g.exp_().mul_(gamma[sl])
            g[:, :, ctx.blank] -= gb[sl]
            g[:, :-1, :].scatter_add_(-1, idx[sl], -ge[sl].unsqueeze(-1))
            if not same:
                grad[sl] = g
        return grad.view(B, T, U1, V), None, None, None, None


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The RNN-T loss ``-log P(y | x)`` from the joiner's logits, with a fused gradient.

    Args:
        logits: (B, T, U+1, V) unnormalized joiner output (the log-softmax is done here; passing
            log-probs is also correct, since log_softmax is idempotent). Any float dtype; the
            math is done in float32 (float64 stays float64). Should be contiguous.
        targets: (B, U) int, padded; only ``targets[b, :U_b]`` is read. Must not contain blank.
        logit_lengths: (B,) int, ``T_b`` in [1, T]: encoder frames per utterance
        target_lengths: (B,) int, ``U_b`` in [0, U]: symbols per utterance
        blank: the blank symbol id
        reduction: "mean" (over the batch), "sum" or "none" (a (B,) tensor)

    Returns:
        The loss in ``logits.dtype``. Its gradient is zero for logits outside each utterance's
        ``(T_b, U_b + 1)`` lattice.

    >>> logits = torch.randn(2, 5, 3, 4, requires_grad=True)
    >>> targets = torch.tensor([[1, 2], [3, 0]])
    >>> loss = rnnt_loss(logits, targets, torch.tensor([5, 4]), torch.tensor([2, 1]))
    >>> loss.backward()
    """
    if logits.dim() != 4:
        raise Pykaldi2Error(f"rnnt loss: logits must be (B, T, U+1, V), got {tuple(logits.shape)}")
    B, T, U1, V = logits.shape
    if targets.dim() != 2 or tuple(targets.shape) != (B, U1 - 1):
        raise Pykaldi2Error(
            f"rnnt loss: targets must be (B, U) = ({B}, {U1 - 1}) to match logits with U+1 = {U1} "
            f"columns, got {tuple(targets.shape)}"
        )
    _check_lengths((B, T, U1), logit_lengths, target_lengths, reduction)
    _check_targets(targets, target_lengths, V, blank)
    losses = _RnntLoss.apply(logits, targets, logit_lengths, target_lengths, blank)
    return _reduce(losses, reduction)
