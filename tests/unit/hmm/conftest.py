"""Fixtures of the hmm tests: synthetic data written as data + lang dirs (hmm_synth_data.py)
and a monophone system trained on it."""

from __future__ import annotations

import pytest
from hmm_synth_data import Synth, make_synth, write_synth


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Synth:
    return write_synth(make_synth(), tmp_path_factory.mktemp("synth"))


def mono_config(**kw):
    from pykaldi2.hmm.mono import MonoConfig

    base = dict(num_iters=8, max_iter_inc=6, totgauss=60, realign_iters=[1, 2, 3, 4, 6])
    return MonoConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def mono_trained(synth, tmp_path_factory):
    """(model, alis, history, exp dir) of train_mono on the synthetic data."""
    from pykaldi2.hmm.ali import read_ali
    from pykaldi2.hmm.mono import train_mono

    exp = tmp_path_factory.mktemp("mono")
    model, hist = train_mono(synth.data, synth.lang, exp, mono_config())
    return model, read_ali(exp / "ali.1.gz"), hist, exp
