import pytest

from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.utils.errors import DataError


def test_round_trip_and_yaml(tmp_path):
    cfg = SimulationConfig.from_dict(
        {
            "seed": 7,
            "noise": {"enable": True, "snr_db": [5, 10], "colours": ["pink"]},
            "reverb": {"enable": True, "t60": 0.5},
            "speed": {"enable": True, "factors": [0.9, 1.1]},
        }
    )
    assert cfg.noise.snr_db == (5.0, 10.0) and cfg.reverb.t60 == (0.5, 0.5)
    assert SimulationConfig.from_dict(cfg.to_dict()) == cfg
    cfg.to_yaml(tmp_path / "sim.yaml")
    assert SimulationConfig.from_yaml(tmp_path / "sim.yaml") == cfg


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"noise": {"snr": [0, 5]}}, "unknown key"),
        ({"nosie": {}}, "unknown simulation config section"),
        ({"noise": {"snr_db": [20, 5]}}, "min 20.0 > max 5.0"),
        ({"reverb": {"t60": "long"}}, "reverb.t60"),
        ({"noise": {"colours": ["purple"]}}, "noise.colours"),
        ({"speed": {"prob": 1.5}}, "probability"),
        ({"reverb": {"absorption_formula": "magic"}}, "absorption_formula"),
    ],
)
def test_bad_values_are_named(bad, words):
    with pytest.raises(DataError, match=words):
        SimulationConfig.from_dict(bad)


def test_yaml_error_names_the_file(tmp_path):
    p = tmp_path / "sim.yaml"
    p.write_text("noise: {enable: true, snr_db: [30, 0]}\n")
    with pytest.raises(DataError, match="sim.yaml"):
        SimulationConfig.from_yaml(p)
