"""Synthetic HMM data with a known segmentation, as a Kaldi data dir and lang dir.

Each (phone, HMM state) emits frames from its own Gaussian for a known number of frames;
with ``left_ctx_shift`` the first state's mean also depends on the phone to the left (so a
triphone tree has something to find). Phones: SIL = 1 (silence), SPN = 2 (the OOV word's,
never used), P3.. = 3.. ; the word ``w<p>`` is the phone ``p``, ``sil`` is SIL. Transcripts
are ``sil w.. w.. sil``; no optional silence between words (sil_prob 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Synth:
    feats: dict  # utt -> (T, D) float32, before CMN
    texts: dict  # utt -> phone sequence
    phone_starts: dict  # utt -> [start frame of each phone]
    state_starts: dict  # utt -> [start frame of each (phone, state) visit]
    phones: list
    sil: int = 1
    data: Path | None = None
    lang: Path | None = None


def make_synth(
    num_utts=30, dim=6, seed=0, left_ctx_shift=0.0, phones=(1, 3, 4, 5), spk_transform=0.0
) -> Synth:
    """``spk_transform``: each speaker's frames are mapped by its own random affine transform
    (scale of the deviation from the identity), for speaker adaptation."""
    rng = np.random.default_rng(seed)
    phones = list(phones)
    means = {(p, s): rng.normal(0, 4, dim) for p in phones for s in range(3)}
    shift = {p: rng.normal(0, left_ctx_shift, dim) for p in [0] + phones}
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
        utt = f"s{u // 5}-u{u:03d}"
        x = np.concatenate(xs)
        if spk_transform:
            srng = np.random.default_rng(1000 + u // 5)
            a = np.eye(dim) + srng.normal(0, spk_transform, (dim, dim))
            x = x @ a.T + srng.normal(0, 4 * spk_transform, dim)
        feats[utt] = x.astype(np.float32)
        texts[utt] = seq
        pstarts[utt] = pb
        sstarts[utt] = sb
    return Synth(feats, texts, pstarts, sstarts, phones)


def word(p: int) -> str:
    return "sil" if p == 1 else f"w{p}"


def write_synth(s: Synth, root: Path, texts: dict | None = None) -> Synth:
    """Write ``s`` as ``root/data`` (feats.scp, cmvn.scp, text ...) and ``root/lang``;
    ``texts`` (utt -> transcript string) replaces the true transcripts."""
    from pykaldi2.data.datadir import DataDir, write_data_dir
    from pykaldi2.features.compute import compute_cmvn
    from pykaldi2.features.storage import ArkFeatureWriter, write_feats_scp
    from pykaldi2.lang.lexicon import DictDir, LexiconEntry, write_dict_dir
    from pykaldi2.lang.prepare_lang import prepare_lang

    root = Path(root)
    data = root / "data"
    utts = sorted(s.feats)
    text = texts or {u: " ".join(word(p) for p in s.texts[u]) for u in utts}
    write_data_dir(
        DataDir(
            wav_scp={u: f"/dev/null/{u}.wav" for u in utts},
            text={u: text[u] for u in utts if u in text},
            utt2spk={u: u.split("-")[0] for u in utts},
        ),
        data,
    )
    with ArkFeatureWriter(root / "feats" / "raw.ark") as w:
        for u in utts:
            w[u] = s.feats[u]
    write_feats_scp(data / "feats.scp", w.scp)
    compute_cmvn(data)
    nonsil = [p for p in s.phones if p != 1]
    lex = [LexiconEntry("sil", ("SIL",)), LexiconEntry("<unk>", ("SPN",))]
    lex += [LexiconEntry(word(p), (f"P{p}",)) for p in nonsil]
    dict_dir = root / "dict"
    write_dict_dir(
        dict_dir,
        DictDir(
            lexicon=lex,
            nonsilence_phones=[[f"P{p}"] for p in range(3, max(nonsil) + 1)],
            silence_phones=[["SIL"], ["SPN"]],
            optional_silence="SIL",
        ),
    )
    lang = root / "lang"
    prepare_lang(dict_dir, "<unk>", lang, position_dependent=False, sil_prob=0.0)
    s.data, s.lang = data, lang
    return s


def cmn_feats(s: Synth) -> dict:
    """The features as the models see them (per-speaker CMN, no deltas)."""
    from pykaldi2.hmm.inputs import load_feats

    return load_feats(s.data, deltas=False)
