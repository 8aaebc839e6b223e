"""Fixtures of the hmm tests: synthetic data (hmm_synth_data.py) and a monophone trained on it."""

from __future__ import annotations

import pytest
from hmm_synth_data import Synth, make_synth


@pytest.fixture(scope="module")
def synth() -> Synth:
    return make_synth()


@pytest.fixture(scope="module")
def mono_trained(synth):
    from pykaldi2.hmm.mono import MonoConfig, train_mono
    from pykaldi2.lang.topo import TopoConfig, make_topo

    cfg = MonoConfig(num_iters=8, max_iter_inc=6, totgauss=24, realign_iters=[1, 2, 3, 4, 6])
    topo = make_topo(synth.phones[1:], [synth.sil], TopoConfig())
    model, alis, hist = train_mono(synth.feats, synth.texts, topo, synth.lex, [], [1], cfg)
    return model, alis, hist
