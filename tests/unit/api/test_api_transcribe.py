"""pykaldi2.load_model / `pykaldi2 transcribe` on a monophone GMM trained on yesno in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pykaldi2
from pykaldi2.cli.main import main
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.decoding.scoring import compute_wer
from pykaldi2.utils.errors import DataError

DICT = {
    "lexicon.txt": "<SIL> SIL\nYES Y\nNO N\n",
    "nonsilence_phones.txt": "Y\nN\n",
    "silence_phones.txt": "SIL\n",
    "optional_silence.txt": "SIL\n",
}


def _run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def yesno_model(yesno_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(model dir, test data dir): prepare -> MFCC -> lang -> unigram G -> mono -> HCLG -> export."""
    root = tmp_path_factory.mktemp("yesno")
    data, exp = root / "data", root / "exp" / "mono"
    _run("prepare", "yesno", "--corpus-dir", yesno_dir, data)
    train = data / "train_yesno"
    _run("compute-feats", "--feat-type", "mfcc", "--sample-frequency", 8000, "--format", "ark",
         train, root / "mfcc")  # fmt: skip
    _run("compute-cmvn", train)
    (data / "local" / "dict").mkdir(parents=True)
    for name, text in DICT.items():
        (data / "local" / "dict" / name).write_text(text)
    _run("prepare-lang", "--position-independent", data / "local" / "dict", "<SIL>", data / "lang")
    lm_text = root / "lm.txt"
    lm_text.write_text("".join(t + "\n" for t in read_data_dir(train).text.values()))
    _run("train-lm", "--order", 1, lm_text, root / "lm.arpa")
    _run("make-g", data / "lang", root / "lm.arpa", data / "lang_test")
    _run("train-mono", "--num-iters", 10, "--totgauss", 50, "--max-iter-inc", 8,
         train, data / "lang", exp)  # fmt: skip
    _run("mkgraph", data / "lang_test", exp / "final.mdl", exp / "graph")
    _run("export-gmm-model", exp / "final.mdl", exp / "graph", train, exp / "export")
    return exp / "export", data / "test_yesno"


def test_transcribe_yesno_test_set(yesno_model) -> None:
    model_dir, test = yesno_model
    d = read_data_dir(test)
    model = pykaldi2.load_model(model_dir)
    assert model.model_dir.kind == "gmm"
    hyp = dict(zip(d.utt_ids, model.transcribe([d.wav_scp[u] for u in d.utt_ids])))
    stats = compute_wer(
        {u: t.split() for u, t in d.text.items()}, {u: t.split() for u, t in hyp.items()}
    )
    assert stats.num_words == 240 and stats.num_absent == 0
    assert stats.wer < 6.0, stats.format()  # measured: 2.92% (7 insertions)


def test_transcribe_cli_and_resampling(yesno_model, tmp_path: Path) -> None:
    model_dir, test = yesno_model
    d = read_data_dir(test)
    files = [d.wav_scp[u] for u in d.utt_ids[:3]]
    # the same speech at 16 kHz is resampled to the model's 8 kHz
    x, sr = sf.read(files[0], dtype="int16")
    up = tmp_path / "up16k.wav"
    sf.write(up, np.repeat(x, 2), 2 * sr)
    out = tmp_path / "hyp.txt"
    _run("transcribe", model_dir, *files, up, "-o", out)
    lines = [line.split(maxsplit=1) for line in out.read_text().splitlines()]
    assert [k for k, _ in lines] == [Path(f).stem for f in files] + ["up16k"]
    api = pykaldi2.load_model(model_dir).transcribe(files)
    assert [t for _, t in lines[:3]] == api
    assert len(lines[3][1].split()) == 8  # 8 words per yesno file


def test_transcribe_errors(yesno_model, tmp_path: Path, capsys) -> None:
    """Bad files are named before any file is decoded (#18 item 14): a missing path (the fix
    is about the path, not a wav.scp entry), a folder, an empty WAV and one shorter than a
    frame (an error, not an empty line with exit 0)."""
    model_dir, test = yesno_model
    model = pykaldi2.load_model(model_dir)
    good = read_data_dir(test).wav_scp[read_data_dir(test).utt_ids[0]]
    missing = tmp_path / "missing.wav"
    with pytest.raises(DataError) as e:
        model.transcribe([missing])
    assert str(e.value) == (
        f"{missing}: audio file not found. Fix: check the path (relative to the current directory)"
    )
    with pytest.raises(DataError, match=r": is a folder, not an audio file\. Fix: pass the"):
        model.transcribe([tmp_path])
    short, empty = tmp_path / "short.wav", tmp_path / "empty.wav"
    sf.write(short, np.zeros(10, dtype=np.int16), 8000)
    sf.write(empty, np.zeros(0, dtype=np.int16), 8000)
    with pytest.raises(DataError, match=r"short\.wav: no audio to transcribe: 10 samples \(1\.2 "
                       r"ms at 8000 Hz\), less than one 25 ms frame"):  # fmt: skip
        model.transcribe([short])
    decoded = []
    model._decode = lambda path: decoded.append(path)  # records what would be decoded
    with pytest.raises(DataError, match="empty.wav: no audio to transcribe: 0 samples"):
        model.transcribe([good, empty])
    assert decoded == []  # the good file first, but every file is checked before decoding
    assert main(["transcribe", str(model_dir), good, str(empty)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "empty.wav: no audio to transcribe" in out.err
    assert main(["transcribe", str(tmp_path), str(short)]) == 1  # no model.yaml: clear error
