"""read_audio / load_utterance: Kaldi scaling, segments, pipes, resampling, bad audio."""

from __future__ import annotations

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from pykaldi2.data.audio import audio_duration, load_utterance, read_audio, resample
from pykaldi2.data.datadir import DataDir
from pykaldi2.utils.errors import DataError

AN4_UTT = "flac/an4_clstk/fash/an251-fash-b.flac"


def test_flac_is_int16_scaled(an4_dir):
    path = str(an4_dir / AN4_UTT)
    x, sr = read_audio(path)
    ref, ref_sr = sf.read(path, dtype="int16")
    assert sr == ref_sr == 16000
    assert x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_array_equal(x, ref.astype(np.float32))
    assert np.abs(x).max() > 1.5  # not normalized to [-1, 1]


def test_segment_and_resample(an4_dir):
    path = str(an4_dir / AN4_UTT)
    full, _ = read_audio(path)
    seg, sr = read_audio(path, start=0.25, end=0.5)
    np.testing.assert_array_equal(seg, full[4000:8000])
    y, sr8 = read_audio(path, 0.25, 0.5, target_sr=8000)
    assert sr8 == 8000 and y.shape == (2000,) and y.dtype == np.float32
    # resampling keeps the level of a low-frequency signal
    assert abs(np.sqrt(np.mean(y**2)) - np.sqrt(np.mean(seg**2))) < 0.1 * np.sqrt(np.mean(seg**2))


def test_resample_sine_frequency():
    t = np.arange(16000) / 16000
    x = (1000 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = resample(x, 16000, 8000)
    spec = np.abs(np.fft.rfft(y))
    assert np.argmax(spec) == 440  # 1 s at 8 kHz: bin k is k Hz


def test_pipe_command(yesno_dir):
    path = sorted((yesno_dir / "waves_yesno").glob("*.wav"))[0]
    direct, sr = read_audio(str(path))
    piped, sr2 = read_audio(f"cat {path} |")
    assert sr == sr2 == 8000
    np.testing.assert_array_equal(direct, piped)
    part, _ = read_audio(f"cat {path} |", start=0.5, end=1.0)
    np.testing.assert_array_equal(part, direct[4000:8000])
    assert audio_duration(f"cat {path} |") == pytest.approx(len(direct) / 8000)
    assert audio_duration(str(path)) == pytest.approx(len(direct) / 8000)


def test_failing_pipe_names_the_command_and_utt():
    with pytest.raises(DataError, match=r"utterance u1.*'false' failed with exit status 1"):
        read_audio("false |", utt="u1")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.wav \(utterance spk-1\): audio file not found"):
        read_audio(str(tmp_path / "nope.wav"), utt="spk-1")
    # a path the user gave (no utterance): the fix is about that path, not a wav.scp entry
    with pytest.raises(DataError) as e:
        read_audio(str(tmp_path / "nope.wav"))
    assert str(e.value).endswith("audio file not found. Fix: check the path (relative to the "
                                 "current directory)")  # fmt: skip
    with pytest.raises(DataError, match=r": is a folder, not an audio file\. Fix: pass the audio"):
        read_audio(str(tmp_path))
    with pytest.raises(DataError, match=r"\(utterance u\): is a folder.*wav\.scp entry must"):
        audio_duration(str(tmp_path), utt="u")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + b"\x00garbage" * 10)
    with pytest.raises(DataError, match=r"bad\.flac \(utterance spk-2\): unreadable or corrupt"):
        read_audio(str(bad), utt="spk-2")
    with pytest.raises(DataError, match="unreadable or corrupt"):
        audio_duration(str(bad))


def test_sample_rate_mismatch(yesno_dir):
    path = sorted((yesno_dir / "waves_yesno").glob("*.wav"))[0]
    with pytest.raises(DataError, match=r"sample rate is 8000 Hz, expected 16000 Hz"):
        read_audio(str(path), expected_sr=16000, utt="global-x")
    x, sr = read_audio(str(path), expected_sr=8000, target_sr=16000)
    assert sr == 16000


def test_segment_past_end(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000, dtype=np.int16), 8000)  # 1 s
    x, _ = read_audio(str(wav), 0.5, 1.3)  # within Kaldi's 0.5 s overshoot: clipped
    assert x.shape == (4000,)
    with pytest.raises(DataError, match="past the end of the audio"):
        read_audio(str(wav), 0.5, 2.0)
    with pytest.raises(DataError, match="end 0.2 <= start 0.5"):
        read_audio(str(wav), 0.5, 0.2)


def test_stereo_takes_channel(tmp_path):
    wav = tmp_path / "st.wav"
    data = np.stack([np.full(100, 7, np.int16), np.full(100, -3, np.int16)], axis=1)
    sf.write(wav, data, 16000)
    x, _ = read_audio(str(wav))
    assert x.shape == (100,) and (x == 7).all()
    x, _ = read_audio(str(wav), channel=1)
    assert (x == -3).all()
    with pytest.raises(DataError, match="channel 2 requested but the audio has 2"):
        read_audio(str(wav), channel=2)


def test_load_utterance_with_segments(tmp_path):
    wav = tmp_path / "rec.wav"
    sig = (np.arange(16000) % 1000).astype(np.int16)
    sf.write(wav, sig, 16000)
    d = DataDir(
        wav_scp={"rec": str(wav)},
        text={"s-a": "A", "s-b": "B"},
        utt2spk={"s-a": "s", "s-b": "s"},
        segments={"s-a": ("rec", 0.0, 0.5), "s-b": ("rec", 0.5, -1.0)},
    )
    a, sr = load_utterance(d, "s-a")
    b, _ = load_utterance(d, "s-b")
    np.testing.assert_array_equal(np.concatenate([a, b]), sig.astype(np.float32))
    with pytest.raises(DataError, match="unknown utterance"):
        load_utterance(d, "s-c")
    d.segments["s-a"] = ("gone", 0.0, 0.5)
    with pytest.raises(DataError, match=r"recording 'gone' not in wav.scp"):
        load_utterance(d, "s-a")


def test_wav_in_kaldi_archive(tmp_path):
    sig = (np.arange(800) - 400).astype(np.int16)
    kaldiio.save_ark(str(tmp_path / "w.ark"), {"u": (8000, sig)}, scp=str(tmp_path / "w.scp"))
    spec = (tmp_path / "w.scp").read_text().split()[1]  # ".../w.ark:<offset>"
    x, sr = read_audio(spec)
    assert sr == 8000
    np.testing.assert_array_equal(x, sig.astype(np.float32))
    part, _ = read_audio(spec, 0.05, 0.075)
    np.testing.assert_array_equal(part, sig[400:600].astype(np.float32))
    assert audio_duration(spec) == pytest.approx(0.1)
    with pytest.raises(DataError, match="cannot read wav from the archive"):
        read_audio(str(tmp_path / "w.ark") + ":3", utt="u")
