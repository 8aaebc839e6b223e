"""The RNN-T loss with the joiner run on groups of utterances: memory bounded by a node budget.

Dimension legend: B batch, T encoder frames, U symbols (U+1 lattice columns), V vocabulary,
J the joiner's hidden size (``joint_n_hid``), He / Hp encoder / predictor output sizes.

Why: the full (not pruned) RNN-T loss needs the joiner at every lattice node (t, u). On a
padded batch that is a (B, T_max, U_max + 1, J) hidden tensor and (B, T_max, U_max + 1, V)
logits, and autograd keeps for the backward pass the activation, the dropout mask and output,
the logits and then their gradient: measured 10 J + 12 V bytes per node in float32 without
joiner dropout, 15 J + 12 V with it (mask and output). The demo's RNN-T (egs/asterisk: J = 192,
V = 32, joint dropout 0.1, batch 16, prompts up to 31 s / 430 letters) padded its batch of the
16 longest prompts to 520 x 434 frames x columns = 3.6M nodes, i.e. about 12 GB: the 12.4 GB
peak RSS of ``make demo`` (egs/asterisk/RESULTS.md). The memory is in the lattice, not in the
data or the encoder.

How: :func:`rnnt_loss_chunked` sorts the batch's utterances by frames and cuts it into groups
whose padded lattice (group size x the group's longest T_b x its longest U_b + 1) holds at most
``max_nodes`` nodes (an utterance larger than that is a group of its own), each group trimmed
to its own longest T and U (less padding than the whole batch). Each group's joiner and loss
run under activation checkpointing (:func:`group_loss_recomputed`, what
:func:`torch.utils.checkpoint.checkpoint` does): the forward keeps only the group's inputs and
loss, and the backward recomputes one group's joiner and loss at a time (autograd finishes the
group made last before it starts the one before: its nodes carry the higher sequence numbers),
so the peak is one group's lattice instead of the whole batch's. The price is a second joiner
and loss forward per group (skipped when the whole batch fits the budget, and under
``torch.no_grad``); on the demo's worst batch the time was the same as the whole batch's, the
groups' trimmed padding paying for it. Dropout in the joiner is replayed identically in the
recomputation (the RNG state is saved per group), and so is autocast.

The result is the sum over utterances of ``-log P(y | x)``, equal to
``rnnt_loss(joiner(enc, pred), ..., reduction="sum")`` up to float summation order (the test
compares losses and gradients with it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pykaldi2.losses.rnnt import rnnt_loss
from pykaldi2.utils.errors import Pykaldi2Error

#: Default node budget of one group: 0.23 GB (0.33 GB with dropout) at J = 192, V = 32.
DEFAULT_MAX_NODES = 100_000


def lattice_groups(
    logit_lengths: torch.Tensor, target_lengths: torch.Tensor, max_nodes: int
) -> list[list[int]]:
    """Utterance indices in groups whose padded lattice holds at most ``max_nodes`` nodes.

    Utterances are taken by decreasing ``T_b`` (ties by index); a group grows while
    ``len(group) * max T_b * (max U_b + 1) <= max_nodes``. An utterance whose own lattice is
    larger than ``max_nodes`` is a group of its own. Every index appears exactly once.
    """
    if max_nodes < 1:
        raise Pykaldi2Error(f"rnnt loss: max_nodes must be >= 1, got {max_nodes}")
    T = logit_lengths.tolist()
    U1 = [u + 1 for u in target_lengths.tolist()]
    order = sorted(range(len(T)), key=lambda b: (-T[b], b))
    groups: list[list[int]] = []
    cur: list[int] = []
    t_max = u_max = 0
    for b in order:
        t_new, u_new = max(t_max, T[b]), max(u_max, U1[b])
        if cur and (len(cur) + 1) * t_new * u_new > max_nodes:
            groups.append(cur)
            cur, t_new, u_new = [], T[b], U1[b]
        cur.append(b)
        t_max, u_max = t_new, u_new
    if cur:
        groups.append(cur)
    return groups


def rnnt_loss_chunked(
    joiner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    enc: torch.Tensor,
    pred: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> torch.Tensor:
    """Sum over the batch of the RNN-T loss of ``joiner(enc, pred)``, with at most about
    ``max_nodes`` lattice nodes of joiner activations alive at a time (see the module doc).

    Args:
        joiner: enc (b, T', He), pred (b, U'+1, Hp) -> logits (b, T', U'+1, V), e.g. a
            :class:`~pykaldi2.nnet.transducer.joiner.TransducerJoiner`.
        enc: (B, T, He) encoder output; pred: (B, U+1, Hp) predictor output.
        targets: (B, U) int (padding: any value in range); logit_lengths: (B,) int in [1, T];
            target_lengths: (B,) int in [0, U].
        blank: the blank symbol.
        max_nodes: the node budget of one group.

    Returns:
        a scalar: the summed negative log-likelihood (``reduction="sum"``).
    """
    B, T = enc.shape[:2]
    if pred.shape[0] != B or targets.shape[0] != B or pred.shape[1] != targets.shape[1] + 1:
        raise Pykaldi2Error(
            f"rnnt loss: enc (B, T, He), pred (B, U+1, Hp), targets (B, U) expected, got "
            f"{tuple(enc.shape)}, {tuple(pred.shape)}, {tuple(targets.shape)}"
        )
    U1 = pred.shape[1]
    if B * T * U1 <= max_nodes:
        return rnnt_loss(joiner(enc, pred), targets, logit_lengths, target_lengths, blank, "sum")
    recompute = torch.is_grad_enabled() and (enc.requires_grad or pred.requires_grad)
    total = None
    for group in lattice_groups(logit_lengths, target_lengths, max_nodes):
        idx = torch.tensor(group, device=enc.device)
        tl, ul = logit_lengths[idx], target_lengths[idx]
        t_g, u_g = int(tl.max()), int(ul.max())
        args = (enc[idx, :t_g], pred[idx, : u_g + 1], targets[idx, :u_g], tl, ul)
        loss = (
            group_loss_recomputed(joiner, blank, *args)
            if recompute
            else _group_loss(joiner, blank, *args)
        )
        total = loss if total is None else total + loss
    return total


def _group_loss(joiner, blank: int, enc, pred, targets, logit_lengths, target_lengths):
    """The summed RNN-T loss of one group: enc (b, T', He), pred (b, U'+1, Hp)."""
    logits = joiner(enc, pred)
    return rnnt_loss(logits, targets, logit_lengths, target_lengths, blank, "sum")


def group_loss_recomputed(joiner, blank: int, enc, pred, targets, logit_lengths, target_lengths):
    """:func:`_group_loss` that keeps only its inputs for the backward pass and recomputes the
    joiner there (activation checkpointing), with the forward's RNG state (dropout) and
    autocast settings. Differentiable in ``enc``, ``pred`` and the joiner's parameters."""
    params = [p for p in joiner.parameters() if p.requires_grad]
    return _RecomputedGroupLoss.apply(
        joiner, blank, len(params), enc, pred, targets, logit_lengths, target_lengths, *params
    )


class _RecomputedGroupLoss(torch.autograd.Function):
    """What ``torch.utils.checkpoint`` does, for one function of known inputs (without the
    seconds its first call spends importing torch._dynamo)."""

    @staticmethod
    def forward(ctx, joiner, blank, num_params, enc, pred, targets, tl, ul, *params):
        dev = enc.device
        ctx.joiner, ctx.blank, ctx.num_params = joiner, blank, num_params
        ctx.cpu_rng = torch.get_rng_state()
        ctx.cuda_rng = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None
        ctx.autocast = (
            torch.is_autocast_enabled(dev.type),
            torch.get_autocast_dtype(dev.type),
        )
        ctx.save_for_backward(enc, pred, targets, tl, ul)
        return _group_loss(joiner, blank, enc, pred, targets, tl, ul)

    @staticmethod
    def backward(ctx, grad_out):
        enc, pred, targets, tl, ul = ctx.saved_tensors
        dev = enc.device
        params = [p for p in ctx.joiner.parameters() if p.requires_grad]
        if len(params) != ctx.num_params:
            raise Pykaldi2Error("rnnt loss: the joiner's trainable parameters changed")
        cuda = [dev] if ctx.cuda_rng is not None else []
        with torch.random.fork_rng(devices=cuda), torch.enable_grad():
            torch.set_rng_state(ctx.cpu_rng)
            if cuda:
                torch.cuda.set_rng_state(ctx.cuda_rng, dev)
            enabled, dtype = ctx.autocast
            with torch.autocast(dev.type, dtype=dtype, enabled=enabled):
                e = enc.detach().requires_grad_(enc.requires_grad)
                p = pred.detach().requires_grad_(pred.requires_grad)
                loss = _group_loss(ctx.joiner, ctx.blank, e, p, targets, tl, ul)
            inputs = [x for x in (e, p) if x.requires_grad] + params
            # ``loss * grad_out`` rather than ``grad_outputs=grad_out``: the same gradients bit
            # for bit (the product's backward hands ``grad_out`` on unchanged), but
            # torch.autograd.grad checks a given grad_outputs' shape with
            # torch.fx.experimental.symbolic_shapes, whose first import (sympy, mpmath: ~490
            # modules) put ~33 MB of Python heap and ~1.7 s into the first backward.
            grads = list(torch.autograd.grad(loss * grad_out, inputs, allow_unused=True))
        g_enc = grads.pop(0) if e.requires_grad else None
        g_pred = grads.pop(0) if p.requires_grad else None
        return (None, None, None, g_enc, g_pred, None, None, None, *grads)
