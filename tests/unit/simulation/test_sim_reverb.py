import numpy as np
import pytest
import soundfile as sf

from pykaldi2.simulation.config import ReverbConfig
from pykaldi2.simulation.reverb import Reverberator, reverberate, sample_positions
from pykaldi2.simulation.rir import Room, image_source_rir
from pykaldi2.utils.errors import DataError


def _write_rir_dir(path, sr):
    """Measured-RIR data dir: two rooms (speaker column = room id), two RIRs each."""
    path.mkdir()
    scp, u2s = [], []
    for room_id, (size, t60) in {
        "roomA": ((4.0, 3.0, 2.6), 0.3),
        "roomB": ((7.0, 5.0, 3.0), 0.5),
    }.items():
        for k, src in enumerate([(2.5, 1.9, 1.0), (3.1, 0.8, 1.9)]):
            h = image_source_rir(Room(size, t60, (1.2, 1.1, 1.4), src), sr)
            pcm = np.concatenate([np.zeros(37), h / np.abs(h).max() * 20000]).astype(np.int16)
            utt = f"{room_id}-rir{k}"
            sf.write(path / f"{utt}.wav", pcm, sr)
            scp.append(f"{utt} {path / utt}.wav\n")
            u2s.append(f"{utt} {room_id}\n")
    (path / "wav.scp").write_text("".join(scp))
    (path / "utt2spk").write_text("".join(u2s))
    return path


def test_measured_rirs_from_same_room(tmp_path):
    sr = 8000
    rev = Reverberator(
        ReverbConfig(enable=True, rir_dir=str(_write_rir_dir(tmp_path / "rirs", sr))), sr
    )
    for seed in range(6):
        speech_rir, noise_rir, shift, info = rev.draw(np.random.default_rng(seed))
        a, b = info["rir_ids"]
        assert a != b and a.split("-")[0] == b.split("-")[0] == info["room_id"]
        assert np.abs(speech_rir).max() == pytest.approx(1.0) and shift == np.argmax(
            np.abs(speech_rir)
        )
        assert shift >= 37
        click = np.zeros(2000, np.float32)
        click[0] = 1.0
        assert np.argmax(np.abs(reverberate(click, speech_rir, shift))) == 0


def test_positions_respect_distance_and_margins():
    rng = np.random.default_rng(0)
    size = (5.0, 4.0, 3.0)
    for _ in range(50):
        mic, src, noise = sample_positions(size, (1.0, 2.0), 0.5, rng)
        for p in (mic, src, noise):
            assert np.all(p >= 0.5) and np.all(p <= np.array(size) - 0.5)
        assert 1.0 - 1e-9 <= np.linalg.norm(src - mic) <= 2.0 + 1e-9
        assert np.linalg.norm(noise - mic) >= 1.0 and np.linalg.norm(noise - src) >= 1.0


def test_bad_shift_is_an_error():
    with pytest.raises(DataError, match="shift"):
        reverberate(np.ones(10, np.float32), np.ones(5, np.float32), 7)
