"""Synthetic HMM data with a known segmentation: each (phone, HMM state) emits frames from its
own Gaussian for a known number of frames; word ids equal phone ids (a one-state L.fst)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Synth:
    feats: dict
    texts: dict
    phone_starts: dict  # utt -> [start frame of each phone]
    state_starts: dict  # utt -> [start frame of each (phone, state) visit]
    lex: object
    phones: list
    sil: int = 1


def make_synth(num_utts=30, dim=6, seed=0, left_ctx_shift=0.0, phones=(1, 2, 3, 4)) -> Synth:
    from pykaldi2.kaldi import kaldifst

    rng = np.random.default_rng(seed)
    phones = list(phones)
    means = {(p, s): rng.normal(0, 4, dim) for p in phones for s in range(3)}
    shift = {p: rng.normal(0, left_ctx_shift, dim) for p in [0] + phones}
    lex = kaldifst.compile("\n".join(f"0 0 {p} {p}" for p in phones) + "\n0\n")
    feats, texts, pstarts, sstarts = {}, {}, {}, {}
    for u in range(num_utts):
        seq = [1] + [int(p) for p in rng.choice(phones[1:], size=rng.integers(3, 6))] + [1]
        xs, pb, sb, t = [], [], [], 0
        for i, p in enumerate(seq):
            pb.append(t)
            for s in range(3):
                d = int(rng.integers(2, 7))
                m = means[(p, s)]
                if s == 0 and p != 1:
                    m = m + shift[seq[i - 1] if i else 0]
                xs.append(m + rng.normal(0, 1, (d, dim)))
                sb.append(t)
                t += d
        utt = f"u{u:03d}"
        feats[utt] = np.concatenate(xs).astype(np.float32)
        texts[utt] = seq
        pstarts[utt] = pb
        sstarts[utt] = sb
    return Synth(feats, texts, pstarts, sstarts, lex, phones)
