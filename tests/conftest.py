"""Shared pytest fixtures: the real corpora in ../shared/data, quiet progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PYKALDI2_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYKALDI2_SHARED_DATA", REPO.parent / "shared" / "data"))


def _corpus(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"shared corpus {path} not present (set PYKALDI2_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def an4_dir() -> Path:
    """../shared/data/an4 (CMU AN4: etc/, flac/)."""
    return _corpus("an4")


@pytest.fixture(scope="session")
def yesno_dir() -> Path:
    """../shared/data/yesno (waves_yesno/*.wav, 8 kHz)."""
    return _corpus("yesno")


@pytest.fixture(scope="session")
def kaldi_reference_dir() -> Path:
    """../shared/data/kaldi_reference (files written by real Kaldi 5.5 binaries; README.md)."""
    return _corpus("kaldi_reference")


@pytest.fixture(scope="session")
def librispeech_sample_dir() -> Path:
    """../shared/data/librispeech_sample (LibriSpeech/test-clean/...)."""
    return _corpus("librispeech_sample")


@pytest.fixture(scope="session")
def kaldi_ref() -> Path:
    """../shared/data/kaldi_reference (files written by real Kaldi 5.5 on AN4 and yesno)."""
    return _corpus("kaldi_reference")


@pytest.fixture
def one_thread():
    """torch.set_num_threads(1) for the test (tiny ops only contend on a loaded 2-core CI box)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def kaldi_an4_train(kaldi_ref, tmp_path_factory) -> Path:
    """Kaldi's AN4 train data dir (its compressed MFCC feats.ark and per-speaker cmvn.ark) as a
    data dir our readers take: the tables copied, feats.scp/cmvn.scp pointing at Kaldi's arks."""
    src = kaldi_ref / "an4" / "data" / "train"
    out = tmp_path_factory.mktemp("kaldi_an4") / "train"
    out.mkdir()
    for name in ("text", "utt2spk", "spk2utt", "utt2num_frames"):
        (out / name).write_text((src / name).read_text())
    (out / "wav.scp").write_text((src / "wav_flac.scp").read_text())
    root = kaldi_ref / "an4"
    for name in ("feats.scp", "cmvn.scp"):
        lines = []
        for line in (src / name).read_text().splitlines():
            key, loc = line.split(maxsplit=1)
            lines.append(f"{key} {root / loc}\n")
        (out / name).write_text("".join(lines))
    return out


#: The tiny speechocean762 copy: 4 AN4 speakers as speechocean762 speakers (2 train, 2 test).
TINY_SPEECHOCEAN762_SPEAKERS = {"fash": ("0001", "train"), "fbbh": ("0005", "train"),
                                "fclc": ("0003", "test"), "fejs": ("0006", "test")}  # fmt: skip


def make_tiny_speechocean762(an4: Path, dest: Path, utts_per_speaker: int = 4) -> Path:
    """A made-up corpus in speechocean762's layout from real AN4 speech (module doc of
    pykaldi2.data.corpora.speechocean762): ``train/`` and ``test/`` Kaldi data dirs whose
    utterance ids (``000010000``) do not start with the speaker id (``0001``), a tab after the
    id in text and wav.scp, wav.scp paths relative to the corpus (``WAVE/SPEAKER0001/...``),
    an unsorted spk2age, a WAV without transcript (``SPEAKER9601``), and ``resource/lexicon.txt``
    (AN4's dictionary with CMU-style stress digits on the vowels and a tab after the word)."""
    import re

    import soundfile as sf

    lines = (an4 / "etc/an4_train.transcription").read_text().splitlines()
    by_spk: dict[str, list[tuple[str, str]]] = {}
    for line in lines:
        m = re.match(r"<s> (.*) </s> \((\S+)\)$", line.strip())
        spk = m[2].split("-")[1]
        if spk in TINY_SPEECHOCEAN762_SPEAKERS and len(by_spk.get(spk, [])) < utts_per_speaker:
            by_spk.setdefault(spk, []).append((m[2], m[1]))
    for part in ("train", "test"):
        files: dict[str, list[str]] = {n: [] for n in ("wav.scp", "text", "utt2spk")}
        spk2utt, spk2gender, spk2age = [], [], []
        for an4_spk, (spk, p) in sorted(TINY_SPEECHOCEAN762_SPEAKERS.items(), key=lambda x: x[1]):
            if p != part:
                continue
            utts = []
            for n, (an4_id, words) in enumerate(by_spk[an4_spk]):
                utt = f"0{spk}{n:04d}"
                wav = dest / "WAVE" / f"SPEAKER{spk}" / f"{utt}.WAV"
                wav.parent.mkdir(parents=True, exist_ok=True)
                x, sr = sf.read(an4 / "flac/an4_clstk" / an4_spk / f"{an4_id}.flac", dtype="int16")
                sf.write(wav, x, sr, subtype="PCM_16")
                files["wav.scp"].append(f"{utt}\tWAVE/SPEAKER{spk}/{utt}.WAV")
                files["text"].append(f"{utt}\t{words}")
                files["utt2spk"].append(f"{utt} {spk}")
                utts.append(utt)
            spk2utt.append(f"{spk} {' '.join(utts)}")
            spk2gender.append(f"{spk}\tm")
            spk2age.insert(0, f"{spk}\t{int(spk) + 20}")  # unsorted, as the real corpus's
        (dest / part).mkdir(parents=True)
        for name, content in {**files, "spk2utt": spk2utt, "spk2gender": spk2gender,
                              "spk2age": spk2age}.items():  # fmt: skip
            (dest / part / name).write_text("\n".join(content) + "\n")
    (dest / "WAVE/SPEAKER9601").mkdir()
    sf.write(dest / "WAVE/SPEAKER9601/096010001.WAV", x, sr, subtype="PCM_16")
    lex = []
    for line in (an4 / "etc/an4.dic").read_text().splitlines():
        word, *phones = line.split()
        stressed = [p + "1" if p[0] in "AEIOU" else p for p in phones]
        lex.append(f"{word}\t{' '.join(stressed)}")
    (dest / "resource").mkdir()
    (dest / "resource/lexicon.txt").write_text("\n".join(lex) + "\n")
    return dest


@pytest.fixture(scope="session")
def tiny_speechocean762(an4_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`make_tiny_speechocean762` once per session (read-only for the tests)."""
    return make_tiny_speechocean762(an4_dir, tmp_path_factory.mktemp("so762") / "speechocean762")


def an4_train_utterances(an4: Path, count: int, stride: int = 1) -> list[tuple[str, Path, str]]:
    """(AN4 id, flac path, transcript) of ``count`` AN4 training utterances (every
    ``stride``-th, in the order of an4_train.transcription)."""
    import re

    out = []
    lines = (an4 / "etc/an4_train.transcription").read_text().splitlines()
    for line in lines[::stride][:count]:
        m = re.match(r"<s> (.*) </s> \((\S+)\)$", line.strip())
        spk = m[2].split("-")[1]
        out.append((m[2], an4 / "flac/an4_clstk" / spk / f"{m[2]}.flac", m[1]))
    return out


def write_webdataset_shards(
    samples: list[tuple[str, Path, str]], dest: Path, per_shard: int, gz: bool = False
) -> list[Path]:
    """WebDataset tar shards of (key, audio file, transcript) samples: ``<key>.flac`` then
    ``<key>.txt``, ``per_shard`` samples a shard (``shard-000.tar``, ...; ``.tar.gz``)."""
    import io
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(0, len(samples), per_shard):
        path = dest / f"shard-{i // per_shard:03d}.tar{'.gz' if gz else ''}"
        with tarfile.open(path, "w:gz" if gz else "w") as tar:
            for key, audio, text in samples[i : i + per_shard]:
                for name, data in ((f"{key}{audio.suffix}", audio.read_bytes()),
                                   (f"{key}.txt", text.encode())):  # fmt: skip
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append(path)
    return shards


@pytest.fixture(scope="session")
def an4_train_utts(an4_dir: Path):
    """:func:`an4_train_utterances` of the shared AN4: ``an4_train_utts(count, stride=1)``."""
    return lambda count, stride=1: an4_train_utterances(an4_dir, count, stride)


@pytest.fixture(scope="session")
def make_shards():
    """:func:`write_webdataset_shards`: ``make_shards(samples, dest, per_shard, gz=False)``."""
    return write_webdataset_shards


_FAKE_SBATCH = '''#!{python}
"""A stand-in for SLURM's sbatch (tests): records its arguments, runs the array's tasks now,
one after the other, with only PATH and HOME in their environment (--export=PATH), and
prints the job id as sbatch does."""
import json, os, subprocess, sys
calls = os.path.join(os.environ["FAKE_SLURM_DIR"], "sbatch.calls")
args = sys.argv[1:]
with open(calls, "a") as f:
    f.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_SBATCH_FAIL"):
    sys.exit("sbatch: error: invalid partition specified: nope")
spec = next(a.split("=", 1)[1] for a in args if a.startswith("--array=")).split("%")[0]
ids = []
for part in spec.split(","):
    a, _, b = part.partition("-")
    ids += range(int(a), int(b or a) + 1)
out = args[args.index("-o") + 1]
if not os.environ.get("FAKE_SBATCH_HOLD"):
    for i in ids:
        env = {{"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"),
               "SLURM_ARRAY_TASK_ID": str(i), "SLURM_JOB_ID": "4242"}}
        with open(out, "a") as o:
            subprocess.run(["bash", args[-1]], env=env, stdout=o, stderr=o, check=False)
print("Submitted batch job 4242")
'''
_FAKE_TOOL = '''#!{python}
"""A stand-in for SLURM's {name} (tests): records its arguments, prints $FAKE_SQUEUE_OUT."""
import json, os, sys
with open(os.path.join(os.environ["FAKE_SLURM_DIR"], "{name}.calls"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
print(os.environ.get("FAKE_SQUEUE_OUT", ""), end="")
'''


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch / squeue / scancel stand-ins first on PATH (scripts written here); returns the
    dir where their calls are recorded (``sbatch.calls``: one JSON argv per line)."""
    import sys

    bin_dir = tmp_path / "fake_slurm_bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(_FAKE_SBATCH.format(python=sys.executable))
    for name in ("squeue", "scancel"):
        (bin_dir / name).write_text(_FAKE_TOOL.format(python=sys.executable, name=name))
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(bin_dir))
    return bin_dir
