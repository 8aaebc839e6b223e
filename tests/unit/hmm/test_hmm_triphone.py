"""Triphone training on synthetic left-context-dependent data: tree, convert-ali, train."""

from __future__ import annotations

import numpy as np
from hmm_synth_data import make_synth

from pykaldi2.hmm.ali import ali_to_phones, split_to_phones
from pykaldi2.hmm.tri import DeltasConfig, TreeInputs, convert_ali, train_deltas


def test_train_deltas_beats_mono_and_splits_on_left_context():
    from pykaldi2.hmm.mono import MonoConfig, train_mono
    from pykaldi2.lang.topo import TopoConfig, make_topo

    s = make_synth(num_utts=40, seed=3, left_ctx_shift=3.0, phones=(1, 2, 3, 4, 5))
    topo = make_topo(s.phones[1:], [s.sil], TopoConfig())
    mono, mono_alis, mh = train_mono(
        s.feats,
        s.texts,
        topo,
        s.lex,
        [],
        [1],
        MonoConfig(num_iters=8, max_iter_inc=6, totgauss=30, realign_iters=[1, 2, 3, 4, 6]),
    )
    ti = TreeInputs(
        roots=[(True, True, [p]) for p in s.phones],
        phone_sets=[[p] for p in s.phones],
        ci_phones=[1],
    )
    cfg = DeltasConfig(
        num_leaves=30,
        tot_gauss=60,
        num_iters=5,
        max_iter_inc=3,
        realign_iters=[2, 4],
        tree_thresh=20.0,
    )
    tri, alis, th = train_deltas(s.feats, s.texts, s.lex, [], [1], ti, mono, mono_alis, cfg)
    assert 15 < tri.num_pdfs <= 30
    assert tri.tree.context_width == 3
    # context-dependent model explains the data better than the monophone one
    assert th[-1]["like_per_frame"] > mh[-1]["like_per_frame"] + 0.3
    # the tree asks about the left phone (key 0), which is what the data depend on
    assert "SE 0 [" in str(tri.tree)
    assert len(alis) == len(s.feats)
    for utt, ali in alis.items():
        assert ali_to_phones(tri, ali).tolist() == s.texts[utt]
    # convert-ali keeps the segmentation, and uses the pdfs of the new tree in context
    utt = sorted(mono_alis)[0]
    conv = convert_ali(mono, tri, mono_alis[utt])
    assert split_to_phones(tri, conv) == split_to_phones(mono, mono_alis[utt])
    phones = s.texts[utt]
    for (p, start, _), i in zip(split_to_phones(tri, conv), range(len(phones))):
        window = [phones[i - 1] if i else 0, p, phones[i + 1] if i + 1 < len(phones) else 0]
        ok, pdf = tri.tree.compute(window, 0)
        assert ok and tri.tid2pdf[conv[start]] == pdf
    assert np.array_equal(tri.tid2hmm_state[conv], mono.tid2hmm_state[mono_alis[utt]])


def test_acc_tree_stats_counts_and_contexts(synth, mono_trained):
    from pykaldi2.hmm.tree_stats import acc_tree_stats

    model, alis, _ = mono_trained
    stats = acc_tree_stats(model, synth.feats, alis, ci_phones=[1])
    frames = np.concatenate([synth.feats[u] for u in alis]).astype(np.float64)
    assert stats.count.sum() == len(frames)
    np.testing.assert_allclose(stats.x1.sum(0), frames.sum(0), rtol=1e-9)
    np.testing.assert_allclose(stats.x2.sum(0), (frames**2).sum(0), rtol=1e-9)
    sil = stats.events[:, 1] == 1
    assert np.all(stats.events[sil][:, [0, 2]] == 0)  # context-independent silence
    # every non-silence triphone seen is a real neighbour triple of some transcript
    triples = {tuple(t[i - 1 : i + 2]) for t in synth.texts.values() for i in range(1, len(t) - 1)}
    for left, c, right, _ in stats.events[~sil]:
        assert (left, c, right) in triples
    # one row per distinct event
    assert len({tuple(e) for e in stats.events}) == len(stats.events)
