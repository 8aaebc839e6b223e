"""ProcessedFeatures: CMVN modes + deltas + splicing over a data dir's features."""

from __future__ import annotations

import numpy as np
import pytest

from pykaldi2.features.cmvn import SlidingCmnConfig, apply_cmvn_sliding
from pykaldi2.features.compute import compute_cmvn, compute_feats
from pykaldi2.features.extractors import MfccConfig
from pykaldi2.features.pipeline import FeaturePipelineConfig, ProcessedFeatures
from pykaldi2.features.reference import add_deltas_reference, apply_cmvn_reference
from pykaldi2.utils.errors import DataError, Pykaldi2Error


@pytest.fixture
def an4_feats(an4_small, tmp_path):
    compute_feats(an4_small, tmp_path / "mfcc", MfccConfig(), nj=1, fmt="ark")
    return an4_small


def test_speaker_cmvn_and_deltas(an4_feats):
    with pytest.raises(DataError, match="compute-cmvn"):
        ProcessedFeatures(an4_feats)  # speaker CMVN needs cmvn.scp
    stats = compute_cmvn(an4_feats)
    cfg = FeaturePipelineConfig(cmvn="speaker", norm_vars=True, delta_order=2)
    feats = ProcessedFeatures(an4_feats, cfg)
    assert len(feats) == 20 and feats.dim == 39
    utt = sorted(feats)[7]
    spk = utt.split("-")[0]
    want = add_deltas_reference(apply_cmvn_reference(feats.raw[utt], stats[spk], True), 2, 2)
    np.testing.assert_allclose(feats[utt], want, atol=1e-4)
    assert feats.num_frames(utt) == len(want)
    # over one speaker's utterances the normalised static features have mean 0 and variance 1
    x = np.vstack([feats[u][:, :13] for u in feats if u.startswith(spk + "-")])
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(x.var(0), 1, atol=1e-3)


def test_global_utterance_sliding_and_splice(an4_feats):
    compute_cmvn(an4_feats)
    glob = ProcessedFeatures(an4_feats, FeaturePipelineConfig(cmvn="global"))
    x = np.vstack([glob[u] for u in glob])
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-3)
    utt = next(iter(glob))
    raw = glob.raw[utt]
    per_utt = ProcessedFeatures(an4_feats, FeaturePipelineConfig(cmvn="utterance"))
    np.testing.assert_allclose(per_utt[utt].mean(0), 0, atol=1e-3)
    sl = SlidingCmnConfig(cmn_window=50, min_window=10)
    cfg = FeaturePipelineConfig(cmvn="sliding", sliding=sl, splice_left=2, splice_right=1)
    spliced = ProcessedFeatures(an4_feats, cfg)
    assert spliced.dim == 13 * 4 and spliced[utt].shape == (len(raw), 52)
    np.testing.assert_allclose(spliced[utt][:, 26:39], apply_cmvn_sliding(raw, sl), atol=1e-6)
    again = FeaturePipelineConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_bad_pipeline_config():
    with pytest.raises(Pykaldi2Error, match="cmvn mode"):
        FeaturePipelineConfig(cmvn="per-speaker")
    with pytest.raises(Pykaldi2Error, match="splice"):
        FeaturePipelineConfig(splice_left=-1)
