"""nnet3-chain-combine: the final chain model as the average of the last n models, n chosen by
the chain objective (steps/nnet3/chain/train.py's combine stage, src/chainbin/
nnet3-chain-combine.cc).

Kaldi's train.py hands the models of the last ``--trainer.max-models-combine`` (20) iterations
to nnet3-chain-combine, newest first, which

1. evaluates the chain objective of the newest model on the combine examples;
2. adds the older models one at a time to a running average (UpdateNnetMovingAverage) and
   evaluates the average after every ``ceil(N / max_objective_evaluations)`` additions (and
   after the last one), with batchnorm in training mode (``--batchnorm-test-mode false``,
   batch statistics) and dropout in test mode;
3. keeps the average with the best objective (the newest model alone when no average is
   better) and recomputes its batchnorm statistics on the combine examples (RecomputeStats:
   the statistics of all their frames, as the model's test-mode mean and variance).

Here the models are the checkpoints the trainer kept (``trainer.keep_last``, one every
``trainer.checkpoint_every`` steps and at every epoch end), and the combine examples the held-out
egs (valid.npz; Kaldi's combine.cegs are a training subset, the binary takes either).
:func:`moving_averages` is the running average, :func:`recompute_batchnorm_stats` the
statistics pass; :func:`chain_combine` the selection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["CombineResult", "chain_combine", "moving_averages", "recompute_batchnorm_stats"]


@dataclass
class CombineResult:
    """What nnet3-chain-combine logs: the objective of each evaluated average."""

    num_models: int
    objf: float
    objf_last: float
    evaluated: list[tuple[int, float]] = field(default_factory=list)


def moving_averages(
    states: Sequence[dict[str, torch.Tensor]],
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """``(n, mean of states[:n])`` for n = 1, 2, ...: UpdateNnetMovingAverage (avg_n =
    avg_{n-1} + (model_n - avg_{n-1}) / n) on the floating-point tensors, in float64; integer
    buffers (batchnorm counters) are the newest model's."""
    avg: dict[str, torch.Tensor] = {}
    for n, sd in enumerate(states, start=1):
        for k, v in sd.items():
            if not v.is_floating_point():
                avg.setdefault(k, v.clone())
            elif n == 1:
                avg[k] = v.detach().double().clone()
            else:
                avg[k] += (v.double() - avg[k]) / n
        yield (
            n,
            {k: v.to(states[0][k].dtype) if v.is_floating_point() else v for k, v in avg.items()},
        )


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _batchnorm_train_mode(model: nn.Module) -> None:
    """Test mode everywhere (no dropout, spec-augment, frame shift or l2) except batchnorm, which
    uses the batch's statistics (Kaldi's combine default)."""
    model.eval()
    for m in _batchnorms(model):
        m.train()


@torch.no_grad()
def recompute_batchnorm_stats(
    model: nn.Module, batches: Iterable, forward: Callable[[nn.Module, object], object]
) -> int:
    """Kaldi's RecomputeStats: every batchnorm's test-mode mean and variance become those of all
    frames it sees while ``forward(model, batch)`` runs over ``batches`` (batchnorm in training
    mode, everything else in test mode). The frames of a batchnorm's input past a sequence's
    end (its ``mask`` argument) are left out, as in training. Returns the batches seen."""
    norms = _batchnorms(model)
    sums: dict[int, list] = {id(m): [0.0, 0.0, 0.0] for m in norms}

    def hook(m, args):
        x = args[0].double()
        if x.dim() == 2:  # (N, C): one frame per row
            x = x[:, :, None]
        mask = args[1] if len(args) > 1 else None
        w = torch.ones(x.shape[0], x.shape[2], dtype=x.dtype) if mask is None else mask.double()
        w = w[:, None, :]
        s = sums[id(m)]
        s[0] = s[0] + (x * w).sum((0, 2))
        s[1] = s[1] + (x * x * w).sum((0, 2))
        s[2] = s[2] + float(w.sum())

    handles = [m.register_forward_pre_hook(hook) for m in norms]
    _batchnorm_train_mode(model)
    seen = 0
    try:
        for batch in batches:
            forward(model, batch)
            seen += 1
    finally:
        for h in handles:
            h.remove()
    for m in norms:
        s1, s2, count = sums[id(m)]
        if count == 0:
            continue
        mean = s1 / count
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_((s2 / count - mean * mean).clamp_min(0.0).to(m.running_var.dtype))
    model.eval()
    return seen


@torch.no_grad()
def chain_combine(
    model: nn.Module,
    states: Sequence[dict[str, torch.Tensor]],
    objf: Callable[[nn.Module], float],
    batches: Callable[[], Iterable],
    forward: Callable[[nn.Module, object], object],
    max_objective_evaluations: int = 30,
) -> CombineResult:
    """nnet3-chain-combine on ``states`` (model state dicts, newest first): loads the best
    average into ``model`` and recomputes its batchnorm statistics.

    Args:
        objf: the chain objective per frame of a model on the combine examples (higher is
            better); called with batchnorm in training mode.
        batches: a fresh iterator over the combine examples (for the statistics pass).
        forward: runs the model on one batch.
    """
    if not states:
        raise ValueError("chain_combine: no models")
    num = len(states)
    every = (num + max_objective_evaluations - 1) // max_objective_evaluations
    best_n, best, best_state, first, evaluated = 1, None, None, None, []
    for n, avg in moving_averages(states):
        if not (n == 1 or (n - 2) % every == every - 1 or n == num):
            continue
        model.load_state_dict(avg)
        _batchnorm_train_mode(model)
        value = float(objf(model))
        evaluated.append((n, value))
        log.info("nnet3-chain-combine: the last %d model(s): objective %.5f", n, value)
        if n == 1:
            first = best = value
            best_state = avg
        elif value > best:
            best_n, best, best_state = n, value, avg
    model.load_state_dict(best_state)
    recompute_batchnorm_stats(model, batches(), forward)
    log.info(
        "nnet3-chain-combine: combining %d models, objective %.5f -> %.5f",
        best_n, first, best,
    )  # fmt: skip
    return CombineResult(best_n, best, first, evaluated)
