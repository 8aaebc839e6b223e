"""LF-MMI forward-backward: brute force, reference, gradcheck, occupancies, regularizers."""

from __future__ import annotations

import math

import pytest
import torch

from pykaldi2.lang.chain_supervision import NumeratorGraphs
from pykaldi2.lang.den_fst import ChainGraph, DenGraph
from pykaldi2.losses.lfmmi import (
    ChainTrainingOptions,
    chain_loss,
    den_log_likelihood,
    num_log_likelihood,
)
from pykaldi2.losses.lfmmi_reference import (
    den_log_likelihood_reference,
    num_log_likelihood_reference,
)
from pykaldi2.utils.errors import Pykaldi2Error


def random_graph(gen: torch.Generator, num_states: int, num_pdfs: int, num_arcs: int):
    """A random epsilon-free acceptor; every state has an arc to the last state, which is final
    and has a self-loop, so there is a path of every length >= 1."""
    last = num_states - 1
    src = torch.cat([torch.randint(0, num_states, (num_arcs,), generator=gen),
                     torch.arange(num_states), torch.tensor([last])])  # fmt: skip
    dst = torch.randint(0, num_states, (src.numel(),), generator=gen)
    dst[num_arcs:] = last
    pdf = torch.randint(0, num_pdfs, (src.numel(),), generator=gen)
    lw = -2 * torch.rand(src.numel(), generator=gen, dtype=torch.float64)
    final = torch.full((num_states,), -math.inf, dtype=torch.float64)
    final[torch.rand(num_states, generator=gen) < 0.5] = -0.3
    final[-1] = 0.0
    return ChainGraph.from_arrays(src, dst, pdf, lw, final, 0, num_pdfs)


def brute_force(x: torch.Tensor, g: ChainGraph, init: list[float], final: list[float]) -> float:
    """log of the sum over every path of len(x) arcs, enumerated one by one (prob domain)."""
    arcs = list(zip(g.src.tolist(), g.dst.tolist(), g.pdf.tolist(), g.log_weight.tolist()))
    total = 0.0

    def walk(state: int, t: int, prob: float) -> None:
        nonlocal total
        if t == x.shape[0]:
            total += prob * math.exp(final[state])
            return
        for s, d, p, w in arcs:
            if s == state:
                walk(d, t + 1, prob * math.exp(w + float(x[t, p])))

    for s0, lp in enumerate(init):
        if lp > -math.inf:
            walk(s0, 0, math.exp(lp))
    return math.log(total)


def random_batch(gen, num_pdfs, den_states, num_states, lengths, dtype=torch.float64):
    """A den graph, one numerator graph per sequence and outputs (N, max(lengths), num_pdfs)."""
    den = DenGraph.from_chain_graph(random_graph(gen, den_states, num_pdfs, 3 * den_states))
    nums = NumeratorGraphs.from_graphs(
        [random_graph(gen, num_states, num_pdfs, 2 * num_states) for _ in lengths]
    )
    x = torch.randn(len(lengths), max(lengths), num_pdfs, generator=gen, dtype=dtype)
    return den, nums, torch.tensor(lengths), x.requires_grad_()


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


def test_den_and_num_equal_brute_force(gen):
    g = random_graph(gen, 3, 4, 4)
    den = DenGraph.from_chain_graph(g)
    x = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([4, 3])
    den_lp = den_log_likelihood(x, lengths, den, leaky_hmm_coefficient=0.0)
    num_lp, _ = num_log_likelihood(x, lengths, NumeratorGraphs.from_graphs([g, g]))
    log_init = [math.log(p) for p in den.initial_probs.tolist()]
    start = [-math.inf] * 3
    start[g.start] = 0.0
    for b in range(2):
        xb = x[b, : lengths[b]]
        assert den_lp[b].item() == pytest.approx(brute_force(xb, g, log_init, [0.0] * 3), abs=1e-9)
        num_bf = brute_force(xb, g, start, g.final_log_weight.tolist())
        assert num_lp[b].item() == pytest.approx(num_bf, abs=1e-9)


@pytest.mark.parametrize("leaky", [0.0, 1e-5, 0.2])
def test_fast_matches_reference_batched(gen, leaky):
    num_pdfs = 6
    den = DenGraph.from_chain_graph(random_graph(gen, 7, num_pdfs, 20))
    nums = [random_graph(gen, n, num_pdfs, 2 * n) for n in (3, 5, 4)]
    lengths = torch.tensor([6, 2, 5])
    x = (3 * torch.randn(3, 6, num_pdfs, generator=gen, dtype=torch.float64)).requires_grad_()
    d = den_log_likelihood(x, lengths, den, leaky)
    n, occ = num_log_likelihood(x, lengths, NumeratorGraphs.from_graphs(nums))
    d_ref = [den_log_likelihood_reference(x[b, : lengths[b]], den, leaky) for b in range(3)]
    n_ref = [num_log_likelihood_reference(x[b, : lengths[b]], nums[b]) for b in range(3)]
    torch.testing.assert_close(d, torch.stack(d_ref), rtol=0, atol=1e-10)
    torch.testing.assert_close(n, torch.stack(n_ref), rtol=0, atol=1e-10)
    (g_fast,) = torch.autograd.grad((d - 2 * n).sum(), x)
    loss_ref = (torch.stack(d_ref) - 2 * torch.stack(n_ref)).sum()
    (g_ref,) = torch.autograd.grad(loss_ref, x, retain_graph=True)
    torch.testing.assert_close(g_fast, g_ref, rtol=0, atol=1e-10)
    (g_num,) = torch.autograd.grad(torch.stack(n_ref).sum(), x)
    torch.testing.assert_close(occ, g_num, rtol=0, atol=1e-10)


def test_gradcheck_float64(gen):
    den, nums, lengths, x = random_batch(gen, 3, 4, 3, [4, 3])
    # a non-uniform grad_output checks the per-sequence scaling in backward
    w = torch.tensor([0.7, -1.3], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda y: w * den_log_likelihood(y, lengths, den, 0.1), (x,))
    assert torch.autograd.gradcheck(lambda y: w * num_log_likelihood(y, lengths, nums)[0], (x,))


def test_occupancies_sum_to_one_per_frame(gen):
    den, nums, lengths, x = random_batch(gen, 5, 6, 4, [7, 4, 1], dtype=torch.float32)
    (g_den,) = torch.autograd.grad(den_log_likelihood(x, lengths, den).sum(), x)
    _, occ = num_log_likelihood(x, lengths, nums)
    valid = (torch.arange(7)[None, :] < lengths[:, None]).float()
    for g in (g_den, occ):
        assert (g >= -1e-6).all()
        torch.testing.assert_close(g.sum(-1), valid, rtol=0, atol=1e-5)


def test_float32_long_sequence_is_stable(gen):
    """Per-frame rescaling: 400 frames of large outputs stay finite and match float64."""
    num_pdfs = 8
    den = DenGraph.from_chain_graph(random_graph(gen, 10, num_pdfs, 30))
    x64 = 30 * torch.randn(2, 400, num_pdfs, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([400, 250])
    lp64 = den_log_likelihood(x64, lengths, den)
    x32 = x64.float().requires_grad_()
    lp32 = den_log_likelihood(x32, lengths, den)
    (g32,) = torch.autograd.grad(lp32.sum(), x32)
    assert torch.isfinite(g32).all()
    torch.testing.assert_close(lp32.double(), lp64, rtol=1e-5, atol=0)


def test_half_precision_output_is_computed_in_float32(gen):
    den, nums, lengths, x = random_batch(gen, 5, 6, 4, [6, 4], dtype=torch.float32)
    xb = x.detach().bfloat16().requires_grad_()
    lp = den_log_likelihood(xb, lengths, den) - num_log_likelihood(xb, lengths, nums)[0]
    lp.sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and torch.isfinite(xb.grad.float()).all()
    want = den_log_likelihood(xb.detach().float(), lengths, den)
    want = want - num_log_likelihood(xb.detach().float(), lengths, nums)[0]
    torch.testing.assert_close(lp, want)


def test_chain_loss_gradient_and_regularizers(gen):
    num_pdfs = 4
    den, nums, lengths, x = random_batch(gen, num_pdfs, 5, 4, [5, 3])
    xent = torch.randn(2, 5, num_pdfs, generator=gen, dtype=torch.float64, requires_grad=True)
    opts = ChainTrainingOptions(leaky_hmm_coefficient=1e-5, l2_regularize=0.01, xent_regularize=0.1)
    res = chain_loss(x, lengths, den, nums, opts, xent_output=xent)
    res.loss.backward()

    num_lp, num_occ = num_log_likelihood(x.detach(), lengths, nums)
    xd = x.detach().requires_grad_()
    (den_occ,) = torch.autograd.grad(den_log_likelihood(xd, lengths, den, 1e-5).sum(), xd)
    valid = (torch.arange(5)[None, :] < lengths[:, None]).double()[..., None]
    frames = int(lengths.sum())
    want = -(num_occ - den_occ - 0.01 * x.detach() * valid) / frames
    torch.testing.assert_close(x.grad, want, rtol=0, atol=1e-10)
    p = torch.softmax(xent.detach(), -1)
    want_xent = -0.1 * (num_occ - num_occ.sum(-1, keepdim=True) * p) * valid / frames
    torch.testing.assert_close(xent.grad, want_xent, rtol=0, atol=1e-10)
    assert res.num_frames == 8
    assert res.objf.item() == pytest.approx((num_lp - res.den_logprob).sum().item())
    assert set(res.per_frame()) == {"objf", "l2_term", "xent_objf"}


def test_errors_are_clear(gen):
    g = random_graph(gen, 3, 4, 4)
    den = DenGraph.from_chain_graph(g)
    x = torch.randn(1, 4, 5, dtype=torch.float64)
    with pytest.raises(Pykaldi2Error, match="4 pdfs"):
        den_log_likelihood(x, torch.tensor([4]), den)
    with pytest.raises(Pykaldi2Error, match="lengths"):
        den_log_likelihood(x[..., :4], torch.tensor([5]), den)
    # a numerator that needs exactly 2 frames cannot explain 3
    two = ChainGraph.from_arrays(
        [0, 1], [1, 2], [0, 1], [0.0, 0.0], [-math.inf, -math.inf, 0.0], 0, 4
    )
    nums = NumeratorGraphs.from_graphs([two])
    with pytest.raises(Pykaldi2Error, match="accept no path"):
        chain_loss(x[:, :3, :4], torch.tensor([3]), den, nums)
    with pytest.raises(Pykaldi2Error, match="NaN"):
        chain_loss(torch.full((1, 3, 4), math.nan), torch.tensor([3]), den, nums)
    with pytest.raises(Pykaldi2Error, match="xent_regularize must"):
        ChainTrainingOptions(xent_regularize=-1)
