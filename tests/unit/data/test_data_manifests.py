"""Manifests -> data dirs (``pykaldi2 import-manifest``): Myrtle JSON manifests, WebDataset
shards (read as a stream, or through tar pipes) and file lists, on real AN4 audio."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pykaldi2.cli.main import main
from pykaldi2.data.audio import read_audio
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.data.manifests import (
    count_shard_samples,
    decode_sample_audio,
    import_manifest,
    iter_shard_samples,
    read_json_manifest,
)
from pykaldi2.data.validate import validate_data_dir
from pykaldi2.utils.errors import DataError


def _run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


def test_json_manifest_to_data_dir(an4_dir, an4_train_utts, tmp_path):
    utts = an4_train_utts(4)
    root = an4_dir / "flac"
    entries = []
    for _key, flac, text in utts:
        rel = str(flac.relative_to(root))
        entries.append({
            "transcript": text.lower(),
            # Myrtle lists speed-perturbed copies too: the speed-1 file is the utterance
            "files": [{"fname": rel.replace(".flac", "-sp0.9.flac"), "speed": 0.9},
                      {"fname": rel, "speed": 1.0}],
            "original_duration": 1.5,
        })  # fmt: skip
    m = tmp_path / "train.json"
    m.write_text(json.dumps(entries))
    _run("import-manifest", "--data-root", root, "--text-case", "upper", m, tmp_path / "data")
    d = read_data_dir(tmp_path / "data")
    assert d.utt_ids == sorted(k for k, _, _ in utts)
    assert {u: d.wav_scp[u] for u in d.utt_ids} == {k: str(f) for k, f, _ in utts}
    assert {u: d.text[u] for u in d.utt_ids} == {k: t for k, _, t in utts}
    assert d.utt2spk == {u: u for u in d.utt_ids} and d.utt2dur == {u: 1.5 for u in d.utt_ids}
    assert validate_data_dir(tmp_path / "data") == []
    # a transcript missing for some utterances (but not all) is refused
    entries[1].pop("transcript")
    m.write_text(json.dumps(entries))
    with pytest.raises(DataError, match="1 utterances have no transcript"):
        import_manifest([m], tmp_path / "x", data_root=root)
    m.write_text(json.dumps({"transcript": "x"}))
    with pytest.raises(DataError, match="a list of utterances"):
        read_json_manifest(m)
    m.write_text(json.dumps([{"transcript": "x", "files": []}]))
    with pytest.raises(DataError, match="entry 0 has no files"):
        read_json_manifest(m)


@pytest.mark.parametrize("gz", [False, True])
def test_shards_are_read_as_a_stream(an4_train_utts, make_shards, tmp_path, gz):
    utts = an4_train_utts(5)
    shards = make_shards(utts, tmp_path / "shards", per_shard=2, gz=gz)
    assert len(shards) == 3 and [count_shard_samples(str(s)) for s in shards] == [2, 2, 1]
    got = list(iter_shard_samples([str(s) for s in shards]))
    assert [(s.key, s.text, s.ext) for s in got] == [(k, t, "flac") for k, _, t in utts]
    x, sr = decode_sample_audio(got[0])
    ref, ref_sr = read_audio(str(utts[0][1]))
    assert sr == ref_sr == 16000 and np.array_equal(x, ref)
    x8, sr8 = decode_sample_audio(got[0], target_sr=8000)
    assert sr8 == 8000 and abs(len(x8) - len(ref) / 2) <= 1


def test_shards_to_data_dir_with_pipes_or_unpacked(an4_train_utts, make_shards, tmp_path):
    utts = an4_train_utts(3)
    shards = make_shards(utts, tmp_path / "shards", per_shard=2)
    _run("import-manifest", str(tmp_path / "shards" / "shard-*.tar"), tmp_path / "piped")
    piped = read_data_dir(tmp_path / "piped")
    assert all(v.startswith("tar --occurrence=1 -xOf ") and v.endswith("|")
               for v in piped.wav_scp.values())  # fmt: skip
    _run("import-manifest", "--extract-to", tmp_path / "audio", *shards, tmp_path / "unpacked")
    unpacked = read_data_dir(tmp_path / "unpacked")
    for key, flac, text in utts:
        ref, _ = read_audio(str(flac))
        assert np.array_equal(read_audio(piped.wav_scp[key])[0], ref)  # through the tar pipe
        assert Path(unpacked.wav_scp[key]).read_bytes() == flac.read_bytes()
        assert piped.text[key] == unpacked.text[key] == text
    with pytest.raises(DataError, match="no shard matches"):
        import_manifest([str(tmp_path / "nothing-*.tar")], tmp_path / "x")


def test_bad_shards_are_named(an4_train_utts, make_shards, tmp_path):
    utts = an4_train_utts(2)
    (shard,) = make_shards(utts, tmp_path, per_shard=2)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[:15000])  # inside the second audio member
    with pytest.raises(DataError, match="cut.tar.*truncated or corrupt"):
        list(iter_shard_samples([str(cut)]))
    lonely = tmp_path / "lonely.tar"
    with tarfile.open(lonely, "w") as tar:
        tar.add(str(tmp_path / "cut.tar"), arcname="x.txt")
    with pytest.raises(DataError, match="sample 'x' has no audio member"):
        list(iter_shard_samples([str(lonely)]))
