"""Corpora described by manifests instead of Kaldi data dirs: Myrtle's JSON manifests,
WebDataset tar shards and plain file lists, read as :class:`ManifestItem` lists and turned
into data dirs (``pykaldi2 import-manifest``).

- JSON manifests (Myrtle.ai's RNN-T, from NVIDIA's MLPerf RNN-T): a list of utterances, each
  ``{"transcript": str, "files": [{"fname": path relative to the data dir, ...}, ...],
  "original_duration": seconds}``. ``files`` may list speed-perturbed copies (``"speed"``
  per file): the unperturbed one (speed 1, else the first) is the utterance's audio.
- WebDataset shards: tar files in which each sample is consecutive members sharing a key, the
  path up to the first dot of the file name: ``<key>.flac`` (or ``.wav``) and ``<key>.txt``
  (the transcript). :func:`iter_shard_samples` reads them as a stream (``tarfile`` mode
  ``r|*``, gzip included): nothing is unpacked. :func:`count_shard_samples` reads only the
  headers (it seeks over the audio of uncompressed shards).
- File lists: one audio path per line (``get_predictions.py FILES``), no transcripts.

Utterance ids are the audio file stems (the JSON's relative paths with ``/`` as ``-`` when two
stems collide), so the usual corpus names (LibriSpeech's ``103-1240-0000``) stay Kaldi-sorted
by speaker. The speaker of every utterance is itself (``utt2spk`` maps an utterance to itself,
Kaldi's convention for unknown speakers).

    >>> items = read_json_manifest("librispeech-dev-clean.json", data_root="/datasets/LS")
    >>> import_manifest(["librispeech-dev-clean.json"], "data/dev_clean")
    >>> for s in iter_shard_samples(["train_000.tar", "train_001.tar"]): ...
"""

from __future__ import annotations

import glob
import io
import json
import os
import shlex
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pykaldi2.utils.errors import DataError

#: Audio extensions of WebDataset samples, in order of preference.
AUDIO_EXTS = ("flac", "wav", "mp3", "ogg", "sph", "opus")
TEXT_CASES = ("keep", "upper", "lower")


@dataclass
class ManifestItem:
    """One utterance of a manifest: ``audio`` is a ``wav.scp`` entry (a path or a pipe
    command); ``text`` is None without a transcript; ``duration`` in seconds (None: unknown)."""

    key: str
    audio: str
    text: str | None = None
    duration: float | None = None


@dataclass
class ShardSample:
    """One WebDataset sample: the audio bytes (``ext``: flac, wav, ...), the transcript (None
    without a ``.txt`` member), the shard and the audio member's name (for error messages and
    ``tar -xOf SHARD MEMBER``)."""

    key: str
    audio: bytes
    ext: str
    text: str | None
    shard: str
    member: str


def _case(text: str, case: str) -> str:
    if case not in TEXT_CASES:
        raise DataError(f"text case must be one of {TEXT_CASES}, not {case!r}")
    return text.upper() if case == "upper" else text.lower() if case == "lower" else text


def _clean_text(text: str) -> str:
    return " ".join(text.split())


def _unique_keys(paths: Sequence[str]) -> list[str]:
    """File stems as keys; the relative paths (``/`` -> ``-``, extension dropped) when two
    stems collide; spaces become ``_`` (a Kaldi key has none)."""
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) != len(stems):
        stems = [str(Path(p).with_suffix("")).strip("/").replace("/", "-") for p in paths]
    return [s.replace(" ", "_") for s in stems]


# ---------------------------------------------------------------------------------------------
# JSON manifests and file lists
# ---------------------------------------------------------------------------------------------
def read_json_manifest(
    path: str | os.PathLike, data_root: str | os.PathLike | None = None
) -> list[ManifestItem]:
    """The utterances of a Myrtle JSON manifest; ``fname`` is relative to ``data_root``
    (default: the manifest's folder) unless absolute. Errors name the file and the entry."""
    path = Path(path)
    root = Path(data_root) if data_root is not None else path.parent
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"unreadable JSON manifest: {e}", file=str(path)) from None
    if not isinstance(doc, list):
        raise DataError(
            "a JSON manifest is a list of utterances", file=str(path),
            fix='write [{"transcript": ..., "files": [{"fname": ...}], "original_duration": ...}]',
        )  # fmt: skip
    fnames, texts, durations = [], [], []
    for i, entry in enumerate(doc):
        where = f"entry {i}"
        files = entry.get("files") if isinstance(entry, dict) else None
        if (
            not files
            or not isinstance(files, list)
            or not all(isinstance(f, dict) and f.get("fname") for f in files)
        ):
            raise DataError(
                f"{where} has no files[].fname", file=str(path),
                fix='each entry needs "files": [{"fname": "relative/path.flac"}]',
            )  # fmt: skip
        plain = [f for f in files if float(f.get("speed", 1.0)) == 1.0] or files
        fnames.append(str(plain[0]["fname"]))
        t = entry.get("transcript")
        texts.append(None if t is None else _clean_text(str(t)))
        d = entry.get("original_duration")
        durations.append(None if d is None else float(d))
    keys = _unique_keys(fnames)
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:3]
        raise DataError(f"the same audio file listed twice ({', '.join(dup)})", file=str(path))
    return [
        ManifestItem(k, str(root / f) if not os.path.isabs(f) else f, t, d)
        for k, f, t, d in zip(keys, fnames, texts, durations)
    ]


def read_file_list(path: str | os.PathLike) -> list[ManifestItem]:
    """One audio path per line (blank lines and ``#`` comments skipped), relative paths taken
    from the list's folder; no transcripts."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"unreadable file list: {e}", file=str(path)) from None
    files = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not files:
        raise DataError("the file list is empty", file=str(path), fix="one audio path per line")
    files = [f if os.path.isabs(f) else str(path.parent / f) for f in files]
    return [ManifestItem(k, f) for k, f in zip(_unique_keys(files), files)]


def data_dir_items(path: str | os.PathLike) -> list[ManifestItem]:
    """The utterances of a Kaldi data dir (wav.scp entries, text when present). Data dirs with
    ``segments`` are refused: their utterances are parts of recordings, not files."""
    from pykaldi2.data.datadir import read_data_dir

    d = read_data_dir(path)
    if d.segments:
        raise DataError(
            "a data dir with segments: its utterances are parts of recordings",
            file=str(Path(path) / "segments"),
            fix="decode it with decode-transducer / decode-nnet on its features instead",
        )
    return [ManifestItem(u, d.wav_scp[u], d.text.get(u)) for u in d.utt_ids]


# ---------------------------------------------------------------------------------------------
# WebDataset shards
# ---------------------------------------------------------------------------------------------
def list_shards(specs: Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths from paths and globs (each glob sorted; a glob matching nothing is an
    error naming it)."""
    out: list[str] = []
    for spec in map(str, specs):
        if glob.has_magic(spec):
            found = sorted(glob.glob(spec))
            if not found:
                raise DataError("no shard matches the pattern", file=spec)
            out += found
        elif not Path(spec).is_file():
            raise DataError("shard not found", file=spec, fix="give tar files or globs")
        else:
            out.append(spec)
    return out


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset's key/extension split: the path up to the first dot of the basename."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower() if dot else ""


def _sample(key: str, members: dict[str, bytes], shard: str, names: dict[str, str]):
    audio_ext = next((e for e in AUDIO_EXTS if e in members), None)
    if audio_ext is None:
        raise DataError(
            f"sample {key!r} has no audio member (.{', .'.join(AUDIO_EXTS)}); it has "
            f"{', '.join('.' + e for e in sorted(members)) or 'nothing'}",
            file=shard,
            fix="each sample needs <key>.flac (or .wav) next to <key>.txt",
        )
    text = members.get("txt")
    try:
        txt = None if text is None else _clean_text(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{key}.txt is not UTF-8", file=shard) from None
    return ShardSample(key.rsplit("/", 1)[-1], members[audio_ext], audio_ext, txt, shard,
                       names[audio_ext])  # fmt: skip


def iter_shard_samples(shards: Sequence[str]) -> Iterator[ShardSample]:
    """The samples of the shards in order, read as a stream (no seeking, no unpacking; a
    sample's members must be consecutive, as WebDataset writes them)."""
    for shard in shards:
        try:
            tar = tarfile.open(shard, mode="r|*")
        except (OSError, tarfile.TarError) as e:
            raise DataError(f"not a readable tar shard: {e}", file=shard) from None
        with tar:
            key, members, names = None, {}, {}
            try:
                for info in tar:
                    if not info.isfile():
                        continue
                    k, ext = _split_name(info.name)
                    if k != key:
                        if members:
                            yield _sample(key, members, shard, names)
                        key, members, names = k, {}, {}
                    f = tar.extractfile(info)
                    members[ext] = f.read() if f is not None else b""
                    names[ext] = info.name
            except (OSError, tarfile.TarError, EOFError) as e:
                raise DataError(f"truncated or corrupt tar shard: {e}", file=shard) from None
            if members:
                yield _sample(key, members, shard, names)


def count_shard_samples(shard: str) -> int:
    """Samples (distinct keys with an audio member) of one shard, from the tar headers only."""
    try:
        with tarfile.open(shard, mode="r:*") as tar:
            keys = set()
            for info in tar:
                k, ext = _split_name(info.name)
                if info.isfile() and ext in AUDIO_EXTS:
                    keys.add(k)
            return len(keys)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(f"not a readable tar shard: {e}", file=shard) from None


def decode_sample_audio(sample: ShardSample, target_sr: int | None = None):
    """(samples (S,) float32 int16-scaled, rate) of a shard sample, channel 0, resampled to
    ``target_sr`` when given (as :func:`pykaldi2.data.audio.read_audio`)."""
    import numpy as np
    import soundfile as sf

    from pykaldi2.data.audio import INT16_SCALE, resample

    try:
        x, sr = sf.read(io.BytesIO(sample.audio), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise DataError(f"undecodable audio ({e})", file=f"{sample.shard}:{sample.member}",
                        utt=sample.key) from None  # fmt: skip
    x = np.ascontiguousarray(x[:, 0]) * INT16_SCALE
    if target_sr and sr != target_sr:
        x, sr = resample(x, sr, target_sr), target_sr
    return x.astype(np.float32), sr


def shard_items(shards: Sequence[str], extract_to: str | os.PathLike | None = None):
    """ManifestItems of the shards' samples: with ``extract_to`` the audio is written there as
    ``<key>.<ext>`` (one pass over each shard); otherwise each entry is a pipe, ``tar -xOf
    SHARD MEMBER |``, that reads it from the shard when needed (no copy on disk; each read
    scans the shard up to the sample)."""
    items = []
    out = Path(extract_to) if extract_to is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for s in iter_shard_samples(shards):
        if out is not None:
            dest = out / f"{s.key}.{s.ext}"
            dest.write_bytes(s.audio)
            audio = str(dest.resolve())
        else:
            audio = (
                f"tar --occurrence=1 -xOf {shlex.quote(str(Path(s.shard).resolve()))} "
                f"{shlex.quote(s.member)} |"
            )
        items.append(ManifestItem(s.key, audio, s.text))
    return items


# ---------------------------------------------------------------------------------------------
# Any source -> items; items -> a data dir
# ---------------------------------------------------------------------------------------------
def read_manifest(
    source: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    extract_to: str | os.PathLike | None = None,
) -> list[ManifestItem]:
    """The items of a JSON manifest (``.json``), a shard or shard glob (``.tar``, ``.tar.gz``,
    ``.tgz``), a Kaldi data dir (a folder with wav.scp) or a file list (anything else)."""
    s = str(source)
    if Path(s).is_dir():
        return data_dir_items(s)
    if s.endswith(".json"):
        return read_json_manifest(s, data_root)
    if s.endswith((".tar", ".tar.gz", ".tgz")):
        return shard_items(list_shards([s]), extract_to)
    return read_file_list(s)


def is_audio_file(path: str | os.PathLike) -> bool:
    """True for a path with an audio extension (.flac, .wav, ...)."""
    ext = Path(path).suffix.lower().lstrip(".")
    return ext in AUDIO_EXTS


def items_from_inputs(
    inputs: Sequence[str | os.PathLike],
    *,
    data_root: str | os.PathLike | None = None,
    extract_to: str | os.PathLike | None = None,
) -> list[ManifestItem]:
    """What ``transcribe`` / ``decode-transducer`` take: audio files (keys: their stems, or
    their paths when two stems collide), data dirs, JSON manifests, shards and file lists, in
    the order given; a key given twice is an error."""
    files = [str(i) for i in inputs if is_audio_file(i) and not Path(i).is_dir()]
    keys = iter(_unique_keys(files) if len(set(map(_stem, files))) == len(files) else files)
    items: list[ManifestItem] = []
    for i in map(str, inputs):
        if is_audio_file(i) and not Path(i).is_dir():
            if not Path(i).is_file():
                raise DataError("audio file not found", file=i)
            items.append(ManifestItem(next(keys), i))
        else:
            if not Path(i).exists() and not glob.has_magic(i):
                raise DataError("no such file, data dir or manifest", file=i)
            items += read_manifest(i, data_root=data_root, extract_to=extract_to)
    seen: set[str] = set()
    for it in items:
        if it.key in seen:
            raise DataError(f"utterance {it.key} comes twice in the inputs",
                            fix="give each file once (or rename one)")  # fmt: skip
        seen.add(it.key)
    return items


def _stem(path: str) -> str:
    return Path(path).stem


def import_manifest(
    sources: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    extract_to: str | os.PathLike | None = None,
    text_case: str = "keep",
    prefix: str = "",
):
    """Write the Kaldi data dir ``out_dir`` (wav.scp, text when every utterance has one,
    utt2spk/spk2utt, utt2dur when the manifests give durations) from manifests/shards (see
    :func:`read_manifest`); ``prefix`` is prepended to every utterance id. Returns the
    :class:`~pykaldi2.data.datadir.DataDir`."""
    from pykaldi2.data.datadir import DataDir, write_data_dir

    items: list[ManifestItem] = []
    for src in sources:
        items += read_manifest(src, data_root=data_root, extract_to=extract_to)
    if not items:
        raise DataError("no utterances in the manifests", file=", ".join(map(str, sources)))
    seen: dict[str, str] = {}
    for it in items:
        it.key = prefix + it.key
        if it.key in seen:
            raise DataError(
                f"utterance id {it.key} comes twice ({seen[it.key]} and {it.audio})",
                file=", ".join(map(str, sources)), fix="give each source a --prefix",
            )  # fmt: skip
        seen[it.key] = it.audio
    items.sort(key=lambda it: it.key)
    with_text = [it for it in items if it.text is not None]
    if with_text and len(with_text) != len(items):
        missing = [it.key for it in items if it.text is None][:3]
        raise DataError(
            f"{len(items) - len(with_text)} utterances have no transcript ({', '.join(missing)})",
            file=", ".join(map(str, sources)), fix="give every utterance a transcript, or none",
        )  # fmt: skip
    durations = all(it.duration is not None for it in items)
    d = DataDir(
        wav_scp={it.key: it.audio for it in items},
        utt2spk={it.key: it.key for it in items},
        text={it.key: _case(it.text, text_case) for it in with_text},
        utt2dur={it.key: float(it.duration) for it in items} if durations else None,
    )
    write_data_dir(d, out_dir)
    return d
