"""Lattice MMI / bMMI / sMBR / MPFE: fast forward-backward against path enumeration, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pykaldi2.losses.lattice import (
    LatticeArrays,
    LatticeBatch,
    SequenceConfig,
    SequenceTask,
    TransitionInfo,
    boost_errors,
    drop_frames_mask,
    forward_backward,
    frame_accuracy,
    lattice_log_likelihood,
    sequence_objective,
)
from pykaldi2.losses.lattice_reference import frame_accuracy_reference, reference_stats
from pykaldi2.utils.errors import DataError, Pykaldi2Error

C = 5  # pdfs
SIL = [1]
INFO = TransitionInfo(
    tid2pdf=np.array([-1, 0, 0, 1, 2, 2, 3, 4, 4, 1]),  # 9 transition_ids
    tid2phone=np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 2]),  # phone 1 = silence
)


def random_lattice(rng: np.random.Generator, T: int, utt: str = "u") -> LatticeArrays:
    """A random time-synchronous raw lattice: 1-3 states per frame, epsilon detours, a final
    epsilon arc to a single final state, sometimes dead-end states."""
    arcs = []  # (src, dst, tid, graph_cost)
    frames = [[0]]
    n = 1
    for t in range(T):
        nxt = list(range(n, n + int(rng.integers(1, 4))))
        n += len(nxt)
        for v in nxt:  # every state gets an incoming arc, so all are reachable
            arcs.append((int(rng.choice(frames[t])), v, int(rng.integers(1, 10)), rng.random()))
        for _ in range(int(rng.integers(0, 3))):
            arcs.append(
                (int(rng.choice(frames[t])), int(rng.choice(nxt)), int(rng.integers(1, 10)), 0.5)
            )
        if t > 0 and rng.random() < 0.5:  # an epsilon detour within frame t
            u, e = int(rng.choice(frames[t])), n
            n += 1
            arcs.append((u, e, 0, rng.random()))
            arcs.append((e, int(rng.choice(nxt)), int(rng.integers(1, 10)), 0.1))
        frames.append(nxt)
    final = n
    n += 1
    for u in frames[T]:
        arcs.append((u, final, 0, rng.random()))
    a = np.asarray(arcs)
    final_cost = np.full(n, np.inf)
    final_cost[final] = 0.25
    return LatticeArrays(
        num_states=n,
        start=0,
        src=a[:, 0].astype(np.int64),
        dst=a[:, 1].astype(np.int64),
        tid=a[:, 2].astype(np.int64),
        word=np.zeros(len(a), dtype=np.int64),
        graph_cost=a[:, 3],
        ac_cost=np.zeros(len(a)),
        final_cost=final_cost,
        utt=utt,
    )


def random_batch(seed: int, lengths=(4, 3, 5)):
    rng = np.random.default_rng(seed)
    lats = [random_lattice(rng, T, f"utt{i}") for i, T in enumerate(lengths)]
    N, T = len(lengths), max(lengths)
    loglik = torch.as_tensor(rng.normal(size=(N, T, C)) * 3, dtype=torch.float64)
    ali = torch.as_tensor(rng.integers(1, 10, size=(N, T)))
    for i, t in enumerate(lengths):
        ali[i, t:] = 0
    return lats, loglik, ali, torch.as_tensor(lengths)


def _scores(lb, loglik, kappa):
    """(A,) arc scores kappa * loglik - graph (no acoustic term on epsilon arcs)."""
    ac = loglik[lb.seq, lb.frame.clamp(max=loglik.shape[1] - 1), lb.pdf] * lb.emitting
    return kappa * ac - lb.graph_cost


def _refs(ali):
    ref_pdf = torch.as_tensor(INFO.tid2pdf)[ali].clamp(min=0)
    return ref_pdf, torch.as_tensor(INFO.tid2phone)[ali]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_backward_matches_path_enumeration(seed):
    lats, loglik, ali, lengths = random_batch(seed)
    lb = LatticeBatch(lats, INFO)
    kappa = 0.7
    score = _scores(lb, loglik, kappa)
    ref_pdf, ref_phone = _refs(ali)
    acc = frame_accuracy(lb, ref_pdf, ref_phone, SIL, "smbr", one_silence_class=True)
    st = forward_backward(lb, score, acc)
    for n, lat in enumerate(lats):
        sel = (lb.seq == n).numpy()
        ref = reference_stats(lat, loglik[n].numpy(), INFO, kappa, acc[sel].numpy())
        assert st.log_z[n].item() == pytest.approx(ref["log_z"], abs=1e-9)
        np.testing.assert_allclose(st.gamma[sel].numpy(), ref["gamma"], atol=1e-9)
        assert st.exp_acc[n].item() == pytest.approx(ref["exp_acc"], abs=1e-9)
        live = ref["gamma"] > 1e-12  # c_a is only defined on arcs some path goes through
        np.testing.assert_allclose(st.arc_acc[sel].numpy()[live], ref["arc_acc"][live], atol=1e-8)


def test_posteriors_sum_to_one_per_frame():
    lats, loglik, _, lengths = random_batch(3, lengths=(6, 2, 4, 5))
    lb = LatticeBatch(lats, INFO)
    st = forward_backward(lb, _scores(lb, loglik, 0.1))
    occ = torch.zeros(len(lats), 6, dtype=torch.float64)
    e = lb.emitting
    occ.index_put_((lb.seq[e], lb.frame[e]), st.gamma[e], accumulate=True)
    for n, t in enumerate(lengths.tolist()):
        np.testing.assert_allclose(occ[n, :t].numpy(), 1.0, atol=1e-10)
        assert (occ[n, t:] == 0).all()


def test_frame_accuracy_and_boost_match_scalar_rules():
    lats, _, ali, _ = random_batch(4)
    lb = LatticeBatch(lats, INFO)
    ref_pdf, ref_phone = _refs(ali)
    fr = lb.frame.clamp(max=4)
    for crit in ("smbr", "mpfe"):
        for one_sil in (False, True):
            acc = frame_accuracy(lb, ref_pdf, ref_phone, SIL, crit, one_sil)
            for a in range(lb.src.numel()):
                s, t = int(lb.seq[a]), int(fr[a])
                want = 0.0
                if lb.emitting[a]:
                    want = frame_accuracy_reference(
                        int(lb.pdf[a]), int(lb.phone[a]), int(ref_pdf[s, t]),
                        int(ref_phone[s, t]), set(SIL), crit, one_sil,
                    )  # fmt: skip
                assert acc[a].item() == want
    err = boost_errors(lb, ref_phone, SIL, max_silence_error=0.5)
    wrong = (lb.phone != ref_phone[lb.seq, fr]) & lb.emitting
    assert torch.equal(err == 0, ~wrong)
    assert set(err[wrong & (lb.phone == 1)].tolist()) <= {0.5}
    assert set(err[wrong & (lb.phone != 1)].tolist()) <= {1.0}


@pytest.mark.parametrize("criterion", ["mmi", "bmmi", "smbr", "mpfe"])
def test_gradient_equals_finite_differences(criterion):
    lats, loglik, ali, lengths = random_batch(5, lengths=(3, 2))
    lb = LatticeBatch(lats, INFO)
    cfg = SequenceConfig(
        criterion=criterion,
        acoustic_scale=0.5,
        boost=0.3 if criterion == "bmmi" else 0.0,
        silence_phones=SIL,
    )
    x = loglik.clone().requires_grad_(True)
    w = torch.tensor([0.7, -1.3], dtype=torch.float64)  # grad_output must be honoured

    def f(inp):
        return sequence_objective(inp, lb, ali, lengths, INFO, cfg)[0]

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)
    (f(x) * w).sum().backward()
    eps = 1e-6
    for n, t, c in [(0, 0, 0), (0, 2, 3), (1, 1, 4)]:
        xp, xm = loglik.clone(), loglik.clone()
        xp[n, t, c] += eps
        xm[n, t, c] -= eps
        fd = ((f(xp) - f(xm)) * w).sum() / (2 * eps)
        assert x.grad[n, t, c].item() == pytest.approx(fd.item(), abs=1e-6)


def test_mmi_gradient_is_kappa_num_minus_den_occupancy():
    lats, loglik, ali, lengths = random_batch(6)
    lb = LatticeBatch(lats, INFO)
    kappa = 0.1
    cfg = SequenceConfig(criterion="mmi", acoustic_scale=kappa)
    x = loglik.clone().requires_grad_(True)
    objf, _ = sequence_objective(x, lb, ali, lengths, INFO, cfg)
    objf.sum().backward()
    st = forward_backward(lb, _scores(lb, loglik, kappa))
    den = torch.zeros_like(loglik)
    e = lb.emitting
    den.index_put_((lb.seq[e], lb.frame[e], lb.pdf[e]), st.gamma[e], accumulate=True)
    num = torch.zeros_like(loglik)
    ref_pdf, _ = _refs(ali)
    for n, T in enumerate(lengths.tolist()):
        num[n, torch.arange(T), ref_pdf[n, :T]] = 1.0
    torch.testing.assert_close(x.grad, kappa * (num - den), atol=1e-12, rtol=0)
    # the objective is the true one: kappa * num path log-likelihood - log Z_den
    want = kappa * (num * loglik).sum((1, 2)) - st.log_z
    torch.testing.assert_close(objf.detach(), want)


def test_drop_frames_zeroes_gradient_where_reference_pdf_is_absent():
    lats, loglik, ali, lengths = random_batch(7)
    lb = LatticeBatch(lats, INFO)
    ref_pdf, _ = _refs(ali)
    keep = drop_frames_mask(lb, ref_pdf, C)
    valid = torch.arange(5)[None] < lengths[:, None]
    assert (valid & ~keep).any() and (valid & keep).any()  # the seed exercises both
    cfg = SequenceConfig(criterion="mmi", drop_frames=True)
    x = loglik.clone().requires_grad_(True)
    objf, stats = sequence_objective(x, lb, ali, lengths, INFO, cfg)
    objf.sum().backward()
    assert (x.grad[~keep] == 0).all()
    assert stats["dropped_frames"] == float((valid & ~keep).sum())
    full, _ = sequence_objective(loglik, lb, ali, lengths, INFO, SequenceConfig(criterion="mmi"))
    torch.testing.assert_close(objf.detach(), full)  # only the gradient changes


def test_sequence_task_loss_objective_and_f_smoothing():
    lats, _, ali, lengths = random_batch(8)
    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, C)

        def forward(self, feats, lengths):
            return self.lin(feats)

    model = Tiny()
    batch = {"feats": torch.randn(3, 5, 3), "lengths": lengths, "ali": ali, "lattices": lats}
    for crit in ("mmi", "smbr"):
        task = SequenceTask(SequenceConfig(criterion=crit, silence_phones=SIL), INFO)
        out = task.compute_loss(model, batch)
        assert out.count == float(lengths.sum())
        assert out.loss.item() == pytest.approx(-out.stats["objf"])
        if crit == "smbr":
            assert 0 <= out.stats["objf"] <= out.count
        smooth = SequenceTask(
            SequenceConfig(criterion=crit, silence_phones=SIL, ce_weight=0.5), INFO
        ).compute_loss(model, batch)
        assert smooth.stats["ce"] > 0
        assert smooth.loss.item() == pytest.approx(out.loss.item() + 0.5 * smooth.stats["ce"])
        model.zero_grad()
        smooth.loss.backward()
        assert model.lin.weight.grad.abs().sum() > 0
    task = SequenceTask(SequenceConfig(criterion="mmi"), INFO)
    with pytest.raises(DataError, match="utt1"):
        task.compute_loss(model, {**batch, "lengths": torch.tensor([4, 2, 5])})


def test_bad_lattices_and_configs_raise_clear_errors():
    rng = np.random.default_rng(9)
    lat = random_lattice(rng, 3, "bad")
    i64, z = (lambda *v: np.array(v, dtype=np.int64)), np.zeros(3)
    with pytest.raises(DataError, match="bad.*time-synchronous"):  # state 2 after 1 or 2 frames
        LatticeArrays(3, 0, i64(0, 1, 0), i64(1, 2, 2), i64(1, 1, 1), i64(0, 0, 0), z, z,
                      np.array([np.inf, np.inf, 0.0]), utt="bad")  # fmt: skip
    with pytest.raises(DataError, match="cycle"):
        LatticeArrays(3, 0, i64(0, 1, 2), i64(1, 2, 1), i64(1, 1, 1), i64(0, 0, 0), z, z,
                      np.array([np.inf, np.inf, 0.0]), utt="bad")  # fmt: skip
    with pytest.raises(DataError, match="transition_ids outside"):
        LatticeBatch([lat], TransitionInfo(INFO.tid2pdf[:4], INFO.tid2phone[:4]))
    with pytest.raises(Pykaldi2Error, match="bmmi needs boost"):
        SequenceConfig(criterion="bmmi")
    with pytest.raises(Pykaldi2Error, match="criterion"):
        SequenceConfig(criterion="mpe")
    assert SequenceConfig.from_dict(SequenceConfig(silence_phones=[1]).to_dict()).silence_phones


def test_lattice_log_likelihood_float32_input_gets_float32_gradient():
    lats, loglik, _, _ = random_batch(10)
    lb = LatticeBatch(lats, INFO)
    x = loglik.float().requires_grad_(True)
    lattice_log_likelihood(x, lb, 0.1).sum().backward()
    assert x.grad.dtype == torch.float32
    # kappa * (sum of den occupancies) = kappa per valid frame
    assert x.grad.sum().item() == pytest.approx(0.1 * 12, rel=1e-5)
