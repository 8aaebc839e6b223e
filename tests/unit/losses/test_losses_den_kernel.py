"""The compiled LF-MMI denominator kernel (losses/csrc/den.cc) against the torch recursion of
lfmmi.py (its reference), on real Kaldi den graphs and on random ones."""

from __future__ import annotations

import pytest
import torch

from pykaldi2.kaldi import kaldifst
from pykaldi2.lang.den_fst import DenGraph
from pykaldi2.losses import _den
from pykaldi2.losses.lfmmi import den_log_likelihood
from pykaldi2.utils.errors import Pykaldi2Error


def _kaldi_den(kaldi_ref, name: str) -> DenGraph:
    fst = kaldifst.StdVectorFst.read(str(kaldi_ref / "an4" / name / "den.fst"))
    labels = [a.ilabel for s in range(fst.num_states) for a in kaldifst.ArcIterator(fst, s)]
    return DenGraph.from_fst(fst, max(labels))


def _both(x, lengths, den, leaky, grad_out):
    """log p_den and its gradient (with a non-uniform grad_output) from each kernel."""
    out = {}
    for kernel in ("torch", "cpu"):
        xk = x.detach().clone().requires_grad_()
        lp = den_log_likelihood(xk, lengths, den, leaky, kernel=kernel)
        (g,) = torch.autograd.grad((lp * grad_out).sum(), xk)
        out[kernel] = (lp.detach(), g)
    return out


@pytest.mark.parametrize("name", ["chain", "chain_ctree"])
@pytest.mark.parametrize("leaky", [0.0, 0.1])
def test_kernel_equals_torch_on_kaldi_den_fst(kaldi_ref, name, leaky, one_thread):
    den = _kaldi_den(kaldi_ref, name)
    gen = torch.Generator().manual_seed(3)
    n, t = 6, 17
    x = 4 * torch.randn(n, t, den.num_pdfs, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([17, 1, 9, 17, 16, 4])  # ends on every kind of frame
    grad_out = torch.tensor([1.0, -0.5, 2.0, 0.3, 1.0, -1.0], dtype=torch.float64)
    r = _both(x, lengths, den, leaky, grad_out)
    torch.testing.assert_close(r["cpu"][0], r["torch"][0], rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(r["cpu"][1], r["torch"][1], rtol=1e-10, atol=1e-12)
    # padded frames get no gradient; the others are occupancies scaled by grad_output
    valid = torch.arange(t)[None, :] < lengths[:, None]
    assert (r["cpu"][1][~valid] == 0).all()
    occ = r["cpu"][1].sum(-1) / grad_out[:, None]
    torch.testing.assert_close(occ[valid], torch.ones_like(occ[valid]), rtol=0, atol=1e-9)

    # float32: the same up to float rounding
    r32 = _both(x.float(), lengths, den, leaky, grad_out.float())
    torch.testing.assert_close(r32["cpu"][0], r32["torch"][0], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(r32["cpu"][1], r32["torch"][1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", ["torch", "cpu"])
def test_one_sequence_equals_the_reference_and_keeps_the_graph(kernel):
    """N = 1: the torch recursion once started from ``initial_probs`` itself (expand +
    contiguous is no copy for one sequence) and overwrote it frame after frame."""
    from test_losses_lfmmi import random_graph

    from pykaldi2.losses.lfmmi_reference import den_log_likelihood_reference

    gen = torch.Generator().manual_seed(1)
    den = DenGraph.from_chain_graph(random_graph(gen, 7, 6, 20))
    init = den.initial_probs.clone()
    x = torch.randn(1, 9, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    for leaky in (1e-5, 0.1):
        lp = den_log_likelihood(x, torch.tensor([9]), den, leaky, kernel=kernel)
        want = den_log_likelihood_reference(x[0], den, leaky)
        torch.testing.assert_close(lp[0], want, rtol=1e-12, atol=1e-12)
        (g,) = torch.autograd.grad(lp.sum(), x)
        (g_ref,) = torch.autograd.grad(want, x)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
        assert torch.equal(den.initial_probs, init)


def test_kernel_is_the_cpu_default(kaldi_ref, monkeypatch):
    """kernel="auto" on CPU runs the compiled kernel (the torch recursion is not called)."""
    import pykaldi2.losses.lfmmi as lfmmi

    def fail(*a, **k):
        raise AssertionError("the torch recursion ran")

    monkeypatch.setattr(lfmmi, "_den_forward_torch", fail)
    monkeypatch.setattr(lfmmi, "_den_backward_torch", fail)
    den = _kaldi_den(kaldi_ref, "chain_ctree")
    x = torch.randn(2, 5, den.num_pdfs, requires_grad=True)
    den_log_likelihood(x, torch.tensor([5, 3]), den, 0.1).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_kernel_errors_are_clear():
    with pytest.raises(Pykaldi2Error, match="'auto', 'torch' or 'cpu'"):
        den_log_likelihood(
            torch.zeros(1, 2, 3), torch.tensor([2]), _tiny_den(), 0.1, kernel="cuda-ish"
        )
    # a graph whose arc points outside the states never writes out of bounds
    x = torch.ones(2, 3, 1)
    args = [torch.tensor(v, dtype=torch.int64) for v in ([0], [5], [0])]
    alphas, tots = torch.empty(2, 2, 1), torch.empty(3, 1)
    with pytest.raises(ValueError, match=r"arc 0 has a state outside \[0, 2\)"):
        _den.forward(
            x.numpy(), *(a.numpy() for a in args), torch.ones(1).numpy(),
            torch.full((2,), 0.5).numpy(), 0.1, alphas.numpy(), tots.numpy(),
        )  # fmt: skip
    # outputs must be the caller's buffers (no silent copy of a float64 one)
    with pytest.raises(TypeError):
        _den.forward(
            x.numpy(), *(a.numpy() for a in args), torch.ones(1).numpy(),
            torch.full((2,), 0.5).numpy(), 0.1, alphas.double().numpy(), tots.numpy(),
        )  # fmt: skip


def _tiny_den() -> DenGraph:
    from pykaldi2.lang.den_fst import ChainGraph

    g = ChainGraph.from_arrays(
        torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0, 2]),
        torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 0.0],
        dtype=torch.float64), 0, 3,
    )  # fmt: skip
    return DenGraph.from_chain_graph(g)
