"""fbank/MFCC: our pipeline vs kaldi-native-fbank directly vs a numpy reference of Kaldi's code."""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import pytest
import soundfile as sf

from pykaldi2.data.audio import read_audio
from pykaldi2.features.extractors import (
    FbankConfig,
    MfccConfig,
    config_from_dict,
    make_extractor,
    parse_kaldi_options,
    read_kaldi_conf,
)
from pykaldi2.features.reference import fbank_reference, mfcc_reference
from pykaldi2.utils.errors import Pykaldi2Error

FLAC = "flac/an4_clstk/fash/an251-fash-b.flac"


@pytest.fixture(scope="module")
def an4_audio(an4_dir):
    x, sr = read_audio(str(an4_dir / FLAC))
    return x, sr


def test_fbank_equals_knf_on_an4(an4_dir, an4_audio):
    # knf computed directly on the flac read by soundfile, x 32768, with Kaldi's options by hand
    raw, sr = sf.read(str(an4_dir / FLAC), dtype="float32")
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    online = knf.OnlineFbank(opts)
    online.accept_waveform(sr, (raw * 32768).tolist())
    online.input_finished()
    want = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])

    x, sr2 = an4_audio
    got = make_extractor(FbankConfig()).compute(x, sr2)
    assert sr2 == sr == 16000
    assert got.dtype == np.float32 and got.shape == want.shape == (98, 80)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "cfg",
    [
        FbankConfig(),
        FbankConfig(num_mel_bins=23, use_energy=True, raw_energy=False, energy_floor=1.0),
        FbankConfig(snip_edges=False, window_type="hamming", use_power=False, high_freq=-400),
        FbankConfig(preemphasis_coefficient=0.0, remove_dc_offset=False, window_type="blackman"),
        MfccConfig(),
        MfccConfig(num_ceps=20, num_mel_bins=30, cepstral_lifter=0.0, use_energy=False),
    ],
    ids=lambda c: type(c).__name__,
)
def test_extractor_matches_kaldi_reference(an4_audio, cfg):
    x, sr = an4_audio
    x = x[:6000]  # the reference is slow
    got = make_extractor(cfg).compute(x, sr)
    ref = (fbank_reference if isinstance(cfg, FbankConfig) else mfcc_reference)(x, cfg)
    assert got.shape == ref.shape == (cfg.num_frames(len(x)), cfg.dim)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-3 * max(1.0, np.abs(ref).max() / 20))


def test_config_round_trip_and_registry():
    for cfg in (FbankConfig(num_mel_bins=40, dither=1.0), MfccConfig(num_ceps=20)):
        d = cfg.to_dict()
        assert d["feat_type"] == cfg.feat_type
        again = config_from_dict(d)
        assert type(again) is type(cfg) and again == cfg
    assert FbankConfig().dim == 80 and FbankConfig(use_energy=True).dim == 81
    assert MfccConfig().dim == 13


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"num_mel_bins": 2}, "num_mel_bins"),
        ({"window_type": "kaiser"}, "window_type"),
        ({"high_freq": 9000}, "Nyquist"),
        ({"frame_shift_ms": 30}, "frame_shift_ms"),
    ],
)
def test_config_validation(kw, msg):
    with pytest.raises(Pykaldi2Error, match=msg):
        FbankConfig(**kw)


def test_bad_dicts_and_options(tmp_path):
    with pytest.raises(Pykaldi2Error, match="unknown fbank option"):
        config_from_dict({"feat_type": "fbank", "num_ceps": 13})
    with pytest.raises(Pykaldi2Error, match="unknown feature type"):
        config_from_dict({"feat_type": "plp"})
    assert parse_kaldi_options({"frame-shift": "12.5", "snip-edges": "false"}) == {
        "frame_shift_ms": 12.5,
        "snip_edges": False,
    }
    with pytest.raises(Pykaldi2Error, match="expects a int"):
        parse_kaldi_options({"num-mel-bins": "eighty"})
    conf = tmp_path / "fbank.conf"
    conf.write_text("# Kaldi style\n--num-mel-bins=40  # comment\n--use-energy=true\n")
    assert read_kaldi_conf(str(conf)) == {"num_mel_bins": 40, "use_energy": True}
    conf.write_text("--num-mel-bins 40\n")
    with pytest.raises(Pykaldi2Error, match="fbank.conf:1"):
        read_kaldi_conf(str(conf))


def test_sample_rate_mismatch_and_short_audio(an4_audio):
    x, _ = an4_audio
    ex = make_extractor(FbankConfig())
    with pytest.raises(Pykaldi2Error, match="sample rate 8000"):
        ex.compute(x, 8000)
    assert ex.compute(x[:100], 16000).shape == (0, 80)  # shorter than one frame
    assert ex.compute(np.zeros(1000, np.int16), 16000).shape == (4, 80)  # digital silence
    # deterministic (dither 0): same input, same output
    np.testing.assert_array_equal(ex.compute(x, 16000), ex.compute(x, 16000))


@pytest.mark.parametrize(
    "cfg", [FbankConfig(), MfccConfig(snip_edges=False)], ids=["fbank", "mfcc"]
)
def test_streaming_equals_whole_utterance(an4_audio, cfg):
    x, sr = an4_audio
    ex = make_extractor(cfg)
    whole = ex.compute(x, sr)
    stream = ex.stream()
    rng = np.random.default_rng(0)
    pieces, start = [], 0
    while start < len(x):
        n = int(rng.integers(1, 1200))  # chunks shorter and longer than a frame
        pieces.append(stream.accept_waveform(x[start : start + n], sr))
        start += n
    pieces.append(stream.input_finished())
    assert stream.num_frames == len(whole)
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    with pytest.raises(Pykaldi2Error, match="after input_finished"):
        stream.accept_waveform(x[:10], sr)
