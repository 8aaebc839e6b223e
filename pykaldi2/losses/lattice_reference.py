"""Slow, obviously-correct lattice statistics by enumerating every path (tests only).

For one :class:`~pykaldi2.losses.lattice.LatticeArrays` and (T, C) log-likelihoods, every
complete path from the start to a final state is listed by depth-first search; then

    score(path) = sum_a (kappa * loglik[t_a, pdf_a] * [a emits] - graph_a + extra_a) - final
    log_z       = logsumexp over paths of score
    gamma_a     = sum over paths through a of exp(score - log_z)
    E[A]        = sum over paths of exp(score - log_z) * sum_{a in path} acc_a
    c_a         = E[A | path goes through a]

Exponential in the lattice size: use lattices with at most a few thousand paths.
"""

from __future__ import annotations

import math

import numpy as np

from pykaldi2.hmm.lattice_arrays import LatticeArrays, TransitionInfo


def enumerate_paths(lat: LatticeArrays, max_paths: int = 100_000) -> list[list[int]]:
    """Every complete path as its list of arc indices (DFS from the start state)."""
    out_arcs: list[list[int]] = [[] for _ in range(lat.num_states)]
    for a in range(lat.num_arcs):
        out_arcs[int(lat.src[a])].append(a)
    paths: list[list[int]] = []
    stack: list[tuple[int, list[int]]] = [(lat.start, [])]
    while stack:
        s, arcs = stack.pop()
        if math.isfinite(lat.final_cost[s]):
            paths.append(arcs)
            if len(paths) > max_paths:
                raise ValueError(f"more than {max_paths} paths: lattice too big for the reference")
        for a in out_arcs[s]:
            stack.append((int(lat.dst[a]), arcs + [a]))
    return paths


def path_scores(
    lat: LatticeArrays,
    loglik: np.ndarray,
    info: TransitionInfo,
    kappa: float,
    paths: list[list[int]],
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """(num_paths,) path scores, arc by arc (see the module docstring)."""
    frame = lat.frame
    scores = []
    for path in paths:
        s = 0.0
        for a in path:
            if lat.tid[a] != 0:
                s += kappa * float(loglik[frame[a], info.tid2pdf[lat.tid[a]]])
            s -= float(lat.graph_cost[a])
            if extra is not None:
                s += float(extra[a])
        end = int(lat.dst[path[-1]]) if path else lat.start
        scores.append(s - float(lat.final_cost[end]))
    return np.asarray(scores)


def reference_stats(
    lat: LatticeArrays,
    loglik: np.ndarray,
    info: TransitionInfo,
    kappa: float,
    acc: np.ndarray | None = None,
    extra: np.ndarray | None = None,
) -> dict[str, np.ndarray | float]:
    """``log_z``, ``gamma`` (A,), and with ``acc`` (A,): ``exp_acc`` and ``arc_acc`` (A,)."""
    paths = enumerate_paths(lat)
    scores = path_scores(lat, loglik, info, kappa, paths, extra)
    m = scores.max()
    log_z = m + math.log(np.exp(scores - m).sum())
    post = np.exp(scores - log_z)
    gamma = np.zeros(lat.num_arcs)
    for p, path in zip(post, paths):
        for a in path:
            gamma[a] += p
    out: dict[str, np.ndarray | float] = {"log_z": log_z, "gamma": gamma}
    if acc is not None:
        path_acc = np.asarray([sum(float(acc[a]) for a in path) for path in paths])
        out["exp_acc"] = float((post * path_acc).sum())
        num = np.zeros(lat.num_arcs)
        for p, pa, path in zip(post, path_acc, paths):
            for a in path:
                num[a] += p * pa
        out["arc_acc"] = np.divide(num, gamma, out=np.zeros_like(num), where=gamma > 0)
    return out


def frame_accuracy_reference(
    hyp_pdf: int,
    hyp_phone: int,
    ref_pdf: int,
    ref_phone: int,
    silence_phones: set[int],
    criterion: str,
    one_silence_class: bool,
) -> float:
    """One arc's accuracy, written out as Kaldi's LatticeForwardBackwardMpeVariants states it."""
    hyp_sil, ref_sil = hyp_phone in silence_phones, ref_phone in silence_phones
    same = hyp_pdf == ref_pdf if criterion == "smbr" else hyp_phone == ref_phone
    if one_silence_class:
        return 1.0 if same or (hyp_sil and ref_sil) else 0.0
    return 1.0 if same and not hyp_sil else 0.0
