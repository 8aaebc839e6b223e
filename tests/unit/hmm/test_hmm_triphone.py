"""Triphone training on synthetic left-context-dependent data: tree, convert-ali, train."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mono_config
from hmm_synth_data import make_synth, write_synth

from pykaldi2.hmm.ali import ali_to_phones, read_ali, split_to_phones


@pytest.fixture(scope="module")
def ctx_synth(tmp_path_factory):
    from pykaldi2.hmm.mono import train_mono

    root = tmp_path_factory.mktemp("ctx")
    s = write_synth(
        make_synth(num_utts=40, seed=3, left_ctx_shift=3.0, phones=(1, 3, 4, 5, 6)), root
    )
    mono, mh = train_mono(s.data, s.lang, root / "mono", mono_config(totgauss=60))
    return s, mono, mh, root


def test_train_deltas_beats_mono_and_splits_on_left_context(ctx_synth):
    from pykaldi2.hmm.tri import DeltasConfig, convert_ali, train_deltas

    s, mono, mh, root = ctx_synth
    cfg = DeltasConfig(
        num_leaves=40,
        tot_gauss=80,
        num_iters=5,
        max_iter_inc=3,
        realign_iters=[2, 4],
        tree_thresh=20.0,
    )
    tri, th = train_deltas(s.data, s.lang, root / "mono", root / "tri", cfg)
    assert 16 <= tri.num_pdfs <= 40 and tri.num_pdfs % 8 == 0  # rounded to a multiple of 8
    assert tri.tree.context_width == 3
    # the context-dependent model explains the data better than the monophone one
    assert th[-1]["like_per_frame"] > mh[-1]["like_per_frame"] + 0.3
    # the tree asks about the left phone (key 0), which is what the data depend on
    assert "SE 0 [" in str(tri.tree)
    assert (root / "tri" / "questions.int").is_file() and (
        root / "tri" / "log" / "build_tree.log"
    ).is_file()
    alis = read_ali(root / "tri" / "ali.1.gz")
    assert len(alis) == len(s.feats)
    for utt, ali in alis.items():
        assert ali_to_phones(tri, ali).tolist() == s.texts[utt]
    # convert-ali keeps the segmentation, and uses the pdfs of the new tree in context
    mono_alis = read_ali(root / "mono" / "ali.1.gz")
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
    from pykaldi2.hmm.inputs import feats_for_model
    from pykaldi2.hmm.tree_stats import acc_tree_stats, sum_tree_stats

    model, alis, _, _ = mono_trained
    feats = feats_for_model(model, synth.data)
    stats = acc_tree_stats(model, feats, alis, ci_phones=[1, 2])
    frames = np.concatenate([feats[u] for u in alis]).astype(np.float64)
    assert stats.count.sum() == len(frames)
    np.testing.assert_allclose(stats.x1.sum(0), frames.sum(0), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(stats.x2.sum(0), (frames**2).sum(0), rtol=1e-9)
    sil = stats.events[:, 1] == 1
    assert np.all(stats.events[sil][:, [0, 2]] == -1)  # silence: context keys absent
    assert np.all(stats.events[sil][:, 3] < 5)  # its 5 pdf-classes
    # every non-silence triphone seen is a real neighbour triple of some transcript
    triples = {tuple(t[i - 1 : i + 2]) for t in synth.texts.values() for i in range(1, len(t) - 1)}
    for left, c, right, _ in stats.events[~sil]:
        assert (left, c, right) in triples
    assert len({tuple(e) for e in stats.events}) == len(stats.events)
    # two jobs' statistics sum to the whole (sum-tree-stats)
    utts = sorted(alis)
    parts = [acc_tree_stats(model, feats, {u: alis[u] for u in utts[i::2]}, [1, 2]) for i in (0, 1)]
    total = sum_tree_stats(parts)
    assert np.array_equal(total.events, stats.events)
    np.testing.assert_allclose(total.x2, stats.x2, rtol=1e-12)


def test_tree_stats_match_a_frame_by_frame_sum(synth, mono_trained, monkeypatch):
    """The block store (tiny blocks here, so rows span many) against the slow reference: one
    dict entry per event, every frame added in turn, as Kaldi's acc-tree-stats adds them."""
    from pykaldi2.hmm.inputs import feats_for_model
    from pykaldi2.hmm.tree_stats import TreeStatsAccumulator, _EventSums, sum_tree_stats

    monkeypatch.setattr(_EventSums, "BLOCK", 7)
    model, alis, _, _ = mono_trained
    feats = feats_for_model(model, synth.data)
    acc = TreeStatsAccumulator(model, ci_phones=[1, 2])
    ref: dict[tuple, list] = {}
    for utt in sorted(alis):
        acc.add(utt, feats[utt], alis[utt])
        for e, x in zip(acc._events(np.asarray(alis[utt])).tolist(), feats[utt].astype(float)):
            r = ref.setdefault(tuple(e), [0.0, 0.0, 0.0])
            r[0], r[1], r[2] = r[0] + 1, r[1] + x, r[2] + x * x
    stats = acc.result()
    assert len(stats.count) == len(ref) > 3 * 7
    assert [tuple(e) for e in stats.events.tolist()] == sorted(ref)  # sorted as np.unique sorts
    for i, e in enumerate(map(tuple, stats.events.tolist())):
        assert stats.count[i] == ref[e][0]
        np.testing.assert_allclose(stats.x1[i], ref[e][1], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stats.x2[i], ref[e][2], rtol=1e-9)
    # sum-tree-stats from a generator; a repeated row within one part is added, not dropped
    dup = type(stats)(stats.events[[0, 0]], stats.count[[0, 0]], stats.x1[[0, 0]], stats.x2[[0, 0]])
    total = sum_tree_stats(s for s in (stats, dup))
    assert np.array_equal(total.events, stats.events)
    assert total.count[0] == 3 * stats.count[0] and total.count[1] == stats.count[1]
    np.testing.assert_allclose(total.x2[0], 3 * stats.x2[0], rtol=1e-12)
