"""`pykaldi2 transcribe --dump-preds` (Myrtle's DUMP_PREDS) on the yesno GMM of
test_api_transcribe: predictions for a data dir, a JSON manifest, a WebDataset shard and a file
list, WER only over the utterances that have a reference."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from test_api_transcribe import _run, yesno_model  # noqa: F401  (the yesno GMM fixture)

import pykaldi2
from pykaldi2.data.datadir import read_data_dir
from pykaldi2.decoding.scoring import compute_wer, read_text


def _lines(path: Path) -> dict[str, list[str]]:
    return read_text(path)


def test_dump_preds_for_every_input_kind(yesno_model, tmp_path: Path, capsys) -> None:  # noqa: F811
    model_dir, test = yesno_model
    d = read_data_dir(test)
    utts = d.utt_ids[:6]
    wavs = {u: d.wav_scp[u] for u in utts}
    expected = dict(zip(utts, pykaldi2.load_model(model_dir).transcribe(list(wavs.values()))))
    refs = {u: d.text[u].split() for u in utts}

    # a data dir: every utterance has a reference
    preds = tmp_path / "dir" / "preds.txt"
    preds.parent.mkdir()
    _run("transcribe", "--dump-preds", preds, model_dir, test)
    got = _lines(preds)
    assert len(got) == len(d.utt_ids) and all(got[u] == expected[u].split() for u in utts)
    out = capsys.readouterr().out
    full = compute_wer({u: d.text[u].split() for u in d.utt_ids}, got)
    assert full.wer_line() in out and f"{len(got)} of {len(got)}" in out
    assert (preds.parent / "preds.txt.wer").read_text() == full.format()

    # a Myrtle JSON manifest (paths relative to --data-root): references for half the files
    root = Path(wavs[utts[0]]).parent
    manifest = [{"files": [{"fname": Path(wavs[u]).name, "speed": 1.0}],
                 "original_duration": 6.0,
                 **({"transcript": d.text[u]} if i % 2 == 0 else {})}
                for i, u in enumerate(utts)]  # fmt: skip
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(manifest))
    jpreds = tmp_path / "preds.json"
    _run("transcribe", "--dump-preds", jpreds, "--data-root", root, model_dir, mpath)
    stem = {u: Path(wavs[u]).stem for u in utts}  # manifest keys: the file stems
    rows = {r["key"]: r for r in json.loads(jpreds.read_text())}
    assert {k: r["prediction"] for k, r in rows.items()} == {stem[u]: expected[u] for u in utts}
    scored = [u for i, u in enumerate(utts) if i % 2 == 0]
    assert [k for k, r in rows.items() if r["reference"] is not None] == [stem[u] for u in scored]
    assert all(rows[stem[u]]["wer"] is None for u in utts if u not in scored)
    assert all(rows[stem[u]]["audio"] == str(root / f"{stem[u]}.wav") for u in utts)
    want = compute_wer({u: refs[u] for u in scored}, {u: expected[u].split() for u in scored})
    assert (tmp_path / "preds.json.wer").read_text() == want.format()
    assert f"{len(scored)} of {len(utts)}" in capsys.readouterr().out

    # a WebDataset shard: <key>.wav + <key>.txt, read as a stream
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for u in utts:
            for name, data in ((f"{u}.wav", Path(wavs[u]).read_bytes()),
                               (f"{u}.txt", d.text[u].encode())):  # fmt: skip
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    spreds = tmp_path / "shard_preds.txt"
    _run("transcribe", "--dump-preds", spreds, model_dir, shard)
    assert _lines(spreds) == {u: expected[u].split() for u in utts}
    want = compute_wer(refs, {u: expected[u].split() for u in utts})
    assert (tmp_path / "shard_preds.txt.wer").read_text() == want.format()

    # a file list: no references, so no WER (and a stale .wer is removed)
    flist = tmp_path / "files.lst"
    flist.write_text("".join(wavs[u] + "\n" for u in utts))
    lpreds = tmp_path / "shard_preds.txt"
    capsys.readouterr()
    _run("transcribe", "--dump-preds", lpreds, model_dir, flist)
    assert _lines(lpreds) == {Path(wavs[u]).stem: expected[u].split() for u in utts}
    assert not (tmp_path / "shard_preds.txt.wer").exists()
    assert "with a reference: none" in capsys.readouterr().out
    # ... unless --ref gives them
    ref = tmp_path / "ref.txt"
    ref.write_text("".join(f"{Path(wavs[u]).stem} {d.text[u]}\n" for u in utts[:2]))
    _run("transcribe", "--dump-preds", lpreds, "--ref", ref, model_dir, flist)
    assert "with a reference: 2 of 6" in capsys.readouterr().out
