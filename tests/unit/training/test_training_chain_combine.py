"""nnet3-chain-combine (train.py's combine stage): the running average against the plain mean,
the choice of the number of models by the objective, Kaldi's evaluation schedule, batchnorm
statistics recomputed over the valid frames, and train-chain's final model = the average of its
last checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from pykaldi2.nnet.tdnn import MaskedBatchNorm1d
from pykaldi2.training.chain_combine import (
    chain_combine,
    moving_averages,
    recompute_batchnorm_stats,
)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.norm = MaskedBatchNorm1d(4)

    def forward(self, batch):
        x, mask = batch
        return self.norm(self.lin(x).transpose(1, 2), mask)


def _states(n: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(n):
        torch.manual_seed(i)
        out.append({k: v.clone() for k, v in _Net().state_dict().items()})
        out[-1]["norm.num_batches_tracked"] += i
    return out


def test_moving_average_is_the_mean_of_the_newest_n():
    states = _states(5)
    for n, avg in moving_averages(states):
        for k, v in avg.items():
            if v.is_floating_point():
                want = torch.stack([s[k].double() for s in states[:n]]).mean(0).float()
                torch.testing.assert_close(v, want, rtol=0, atol=1e-6)
            else:
                assert torch.equal(v, states[0][k])  # the newest model's counters


def test_combine_keeps_the_best_average_and_kaldis_schedule():
    states = _states(6)
    target = torch.stack([s["lin.weight"] for s in states[:3]]).mean(0)
    calls = []

    def objf(m) -> float:
        calls.append(m.norm.training and not m.training)  # batchnorm in training mode only
        return -float((m.lin.weight - target).abs().sum())

    batches = [(torch.randn(2, 5, 3), None)]
    model = _Net()
    res = chain_combine(model, states, objf, lambda: iter(batches), lambda m, b: m(b))
    assert res.num_models == 3 and [n for n, _ in res.evaluated] == [1, 2, 3, 4, 5, 6]
    assert all(calls) and res.objf > res.objf_last
    torch.testing.assert_close(model.lin.weight, target, rtol=0, atol=1e-6)
    assert not model.training
    # N models, 2 objective evaluations at most: after every ceil(N / 2) additions and the last
    res = chain_combine(_Net(), states, objf, lambda: iter(batches), lambda m, b: m(b),
                        max_objective_evaluations=2)  # fmt: skip
    assert [n for n, _ in res.evaluated] == [1, 4, 6]
    # no average better than the newest model: the newest model
    res = chain_combine(_Net(), states, lambda m: -float((m.lin.weight - states[0]["lin.weight"])
                        .abs().sum()), lambda: iter(batches), lambda m, b: m(b))  # fmt: skip
    assert res.num_models == 1


def test_recomputed_batchnorm_stats_are_those_of_the_valid_frames():
    torch.manual_seed(0)
    model = _Net()
    x1, x2 = torch.randn(2, 7, 3), torch.randn(3, 4, 3)
    m1 = torch.arange(7)[None, :] < torch.tensor([7, 3])[:, None]
    batches = [(x1, m1), (x2, None)]
    assert recompute_batchnorm_stats(model, batches, lambda m, b: m(b)) == 2
    with torch.no_grad():
        h1 = model.lin(x1)[m1]  # (valid frames, 4)
        h2 = model.lin(x2).reshape(-1, 4)
    h = torch.cat([h1, h2]).double()
    torch.testing.assert_close(model.norm.running_mean, h.mean(0).float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        model.norm.running_var, h.var(0, unbiased=False).float(), rtol=0, atol=1e-5
    )
    assert not model.training
