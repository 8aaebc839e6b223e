import json

import numpy as np
import soundfile as sf

from pykaldi2.cli.main import main
from pykaldi2.data.audio import read_audio
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.simulation.dump import dump_wav, simulate_data_dir
from pykaldi2.simulation.noise import measure_snr

SIM_YAML = """\
seed: 3
reverb: {enable: true, t60: [0.2, 0.4], max_rir_seconds: 0.4}
noise: {enable: true, snr_db: [5, 10]}
"""


def test_cli_writes_a_simulated_data_dir(tmp_path, yesno_data):
    (tmp_path / "sim.yaml").write_text(SIM_YAML)
    out = tmp_path / "noisy"
    assert (
        main(["simulate", "--config", str(tmp_path / "sim.yaml"), str(yesno_data), str(out)]) == 0
    )
    d = read_data_dir(out)
    src = read_data_dir(yesno_data)
    assert d.utt_ids == src.utt_ids and d.text == src.text and d.utt2spk == src.utt2spk
    infos = [json.loads(line) for line in (out / "sim_info.jsonl").read_text().splitlines()]
    assert [i["utt"] for i in infos] == d.utt_ids
    for info in infos:
        y, sr = read_audio(d.wav_scp[info["utt"]])
        x, _ = read_audio(src.wav_scp[info["utt"]])
        assert sr == 8000 and len(y) == len(x)
        assert 5 <= info["snr_db"] <= 10 and 0.2 <= info["reverb"]["t60"] <= 0.4
        assert d.utt2dur[info["utt"]] == round(len(y) / sr, 3)
    assert SimulationConfig.from_yaml(out / "sim_config.yaml").seed == 3
    # Reproducible: a second run gives identical audio; another seed does not.
    out2 = tmp_path / "noisy2"
    assert (
        main(["simulate", "--config", str(tmp_path / "sim.yaml"), str(yesno_data), str(out2)]) == 0
    )
    utt = d.utt_ids[0]
    assert (out / "wav" / f"{utt}.wav").read_bytes() == (out2 / "wav" / f"{utt}.wav").read_bytes()
    main(
        [
            "simulate",
            "--config",
            str(tmp_path / "sim.yaml"),
            "--seed",
            "4",
            str(yesno_data),
            str(out2),
        ]
    )
    assert (out / "wav" / f"{utt}.wav").read_bytes() != (out2 / "wav" / f"{utt}.wav").read_bytes()


def test_noise_only_copy_has_the_requested_snr(tmp_path, yesno_data):
    cfg = SimulationConfig.from_dict({"noise": {"enable": True, "snr_db": [10, 10]}})
    d = simulate_data_dir(yesno_data, tmp_path / "out", cfg)
    src = read_data_dir(yesno_data)
    for utt in d.utt_ids:
        x, _ = read_audio(src.wav_scp[utt])
        y, _ = read_audio(d.wav_scp[utt])
        assert abs(measure_snr(x, y - x) - 10.0) < 0.1  # int16 rounding only


def test_cli_bad_config_is_a_clear_error(tmp_path, yesno_data, capsys):
    (tmp_path / "sim.yaml").write_text("noise: {snr: 5}\n")
    assert (
        main(
            [
                "simulate",
                "--config",
                str(tmp_path / "sim.yaml"),
                str(yesno_data),
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "sim.yaml" in err and "unknown key" in err and not (tmp_path / "o").exists()


def test_dump_wav_never_clips(tmp_path):
    x = np.array([0.0, 1000.0, -65534.0, 2.0], np.float32)
    gain = dump_wav(tmp_path / "a.wav", x, 16000)
    y, sr = sf.read(tmp_path / "a.wav", dtype="int16")
    assert sr == 16000 and gain < -6.0 and y.min() == -32767 and y[1] == 500
    assert dump_wav(tmp_path / "b.wav", x[:2], 8000) == 0.0


def test_perturb_data_dir_speed_3way_is_kaldis_layout(tmp_path, yesno_data):
    """perturb_data_dir_speed_3way.sh: the original utterances unchanged, sp0.9-/sp1.1- copies
    (utterance, recording and speaker ids) with audio duration / factor, utt2uniq back to the
    source, a valid data dir (sorted by utterance and by speaker)."""
    from pykaldi2.cli.main import main
    from pykaldi2.data.audio import read_audio
    from pykaldi2.data.datadir import read_data_dir
    from pykaldi2.data.validate import validate_data_dir

    out = tmp_path / "sp"
    assert main(["perturb-data-dir-speed", str(yesno_data), str(out)]) == 0
    src, d = read_data_dir(yesno_data), read_data_dir(out)
    assert sorted(d.utt_ids) == sorted(
        [u for u in src.utt_ids] + [f"sp{f}-{u}" for f in ("0.9", "1.1") for u in src.utt_ids]
    )
    assert validate_data_dir(out) == []
    uniq = d.utt_tables["utt2uniq"]
    for utt in src.utt_ids:
        assert d.wav_scp[utt] == src.wav_scp[utt] and uniq[utt] == utt
        x, sr = read_audio(src.wav_scp[utt])
        for f in (0.9, 1.1):
            u = f"sp{f:g}-{utt}"
            assert d.utt2spk[u] == f"sp{f:g}-{src.utt2spk[utt]}" and uniq[u] == utt
            assert d.text[u] == src.text[utt]
            y, sr2 = read_audio(d.wav_scp[u])
            assert sr2 == sr and abs(len(y) - len(x) / f) <= 1
