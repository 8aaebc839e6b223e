import pickle

import numpy as np

from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.simulation.simulator import Simulator, seed_worker, utterance_rng

FULL = {
    "speed": {"enable": True},
    "reverb": {"enable": True, "t60": [0.2, 0.5], "max_rir_seconds": 0.5},
    "noise": {"enable": True},
    "volume": {"enable": True},
}


def test_same_seed_same_output_other_epoch_differs(speech):
    x, sr = speech
    x = x[:sr]
    sim = Simulator(SimulationConfig.from_dict({"seed": 5, **FULL}))
    a, ia = sim(x, sr, sim.rng(epoch=1, utt_index=3))
    b, ib = Simulator(SimulationConfig.from_dict({"seed": 5, **FULL}))(
        x, sr, utterance_rng(5, 1, 0, 3)
    )
    np.testing.assert_array_equal(a, b)
    assert ia == ib
    c, ic = sim(x, sr, sim.rng(epoch=2, utt_index=3))
    assert ic["reverb"]["t60"] != ia["reverb"]["t60"] and ic["snr_db"] != ia["snr_db"]
    d, _ = sim(x, sr, sim.rng(epoch=1, utt_index=4))
    assert not np.array_equal(a[: len(d)], d[: len(a)])
    # A pickled copy (what a DataLoader worker gets) simulates identically.
    e, _ = pickle.loads(pickle.dumps(sim))(x, sr, sim.rng(epoch=1, utt_index=3))
    np.testing.assert_array_equal(a, e)


def test_info_records_everything_and_stages_are_independent(speech):
    x, sr = speech
    x = x[:sr]
    sim = Simulator(SimulationConfig.from_dict(FULL))
    res = sim.simulate(x, sr, sim.rng(0, 0))
    info = res.info
    assert info["speed"] in (0.9, 1.0, 1.1)
    assert abs(info["num_samples_out"] - len(x) / info["speed"]) <= 1
    assert set(info["reverb"]) >= {"t60", "room", "mic", "speech_source", "noise_source"}
    assert info["reverb"]["speech_source"] != info["reverb"]["noise_source"]
    assert info["shift"] > 0 and info["noise"]["kind"] == "coloured"
    np.testing.assert_allclose(res.samples, res.speech + res.noise)
    # Switching noise off does not change what reverb and speed drew.
    no_noise = Simulator(SimulationConfig.from_dict({**FULL, "noise": {"enable": False}}))
    info2 = no_noise.simulate(x, sr, no_noise.rng(0, 0)).info
    assert info2["reverb"] == info["reverb"] and info2["speed"] == info["speed"]
    assert info2["snr_db"] is None


def test_disabled_chain_is_identity(speech):
    x, sr = speech
    y, info = Simulator()(x[:1000], sr, utterance_rng(0))
    np.testing.assert_array_equal(y, x[:1000])
    assert info["shift"] == 0 and info["speed"] == 1.0


def test_seed_worker_seeds_numpy_from_torch():
    import torch

    draws = []
    for _ in range(2):
        torch.manual_seed(11)
        seed_worker(0)
        draws.append(np.random.rand())
    assert draws[0] == draws[1]


def test_speed_and_reverb_keep_events_where_rescaled_labels_put_them():
    sr = 16000
    x = np.zeros(sr, np.float32)
    x[8000] = 10000.0  # one event at 0.5 s
    sim = Simulator(
        SimulationConfig.from_dict(
            {"speed": {"enable": True}, "reverb": {"enable": True, "t60": [0.3, 0.6]}}
        )
    )
    speeds = set()
    for i in range(6):
        y, info = sim(x, sr, sim.rng(0, i))
        speeds.add(info["speed"])
        # The direct path of the event lands where the speed change moves it (resampling
        # delays it by at most a sample or two), so frame labels rescaled by the speed stay valid.
        assert abs(int(np.argmax(np.abs(y))) - 8000 / info["speed"]) <= 2, info
    assert len(speeds) > 1
