"""Audio I/O for ``wav.scp`` entries: files (wav/flac/sph/...), pipe commands, ark:offset.

Samples come back as float32 **scaled like Kaldi**: int16-valued (range -32768..32767), not
normalized to [-1, 1], because Kaldi and kaldi-native-fbank compute energies and dithering on
that scale. Multi-channel audio gives channel 0 (Kaldi's default), or ``channel``.

    >>> x, sr = read_audio("an4/flac/an4_clstk/fash/an251-fash-b.flac")
    >>> x.dtype, x.shape, sr            # (float32, (num_samples,), 16000)
    >>> x, sr = read_audio("flac -c -d -s a.flac |", start=0.5, end=1.0, target_sr=8000)
    >>> x, sr = load_utterance(read_data_dir("data/train"), "fash-an251-fash-b")
"""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np

from pykaldi2.data.datadir import DataDir
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

#: Kaldi's extract-segments tolerates a segment ending this far past the end of the audio.
MAX_OVERSHOOT_S = 0.5
#: int16 full scale: soundfile's float output times this is Kaldi's sample scale.
INT16_SCALE = 32768.0


_ARK_RE = re.compile(r"^(?P<ark>.+):(?P<offset>\d+)$")


def is_pipe(spec: str) -> bool:
    """True for a Kaldi pipe command (``cmd args |``), false for a path."""
    return spec.rstrip().endswith("|")


def is_ark_entry(spec: str) -> bool:
    """True for a Kaldi extended file name ``archive.ark:offset`` (wav inside an archive)."""
    m = _ARK_RE.match(spec)
    return m is not None and not Path(spec).is_file() and Path(m["ark"]).is_file()


def _read_ark(spec: str, utt: str | None) -> tuple[np.ndarray, int]:
    """A wav stored in a Kaldi archive (``ark:offset``) -> ((num_samples, channels), sr)."""
    import kaldiio

    try:
        obj = kaldiio.load_mat(spec)
    except Exception as e:  # kaldiio raises assorted errors on damaged archives
        raise DataError(f"cannot read wav from the archive: {e}", file=spec, utt=utt) from None
    if not (isinstance(obj, tuple) and len(obj) == 2):
        raise DataError("archive entry is a matrix, not a wav", file=spec, utt=utt)
    sr, data = obj
    data = np.asarray(data)
    if data.ndim == 1:
        data = data[:, None]
    if data.dtype.kind == "f":  # already float: assume Kaldi scale
        return data.astype(np.float32) / np.float32(INT16_SCALE), sr
    scale = float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32) / np.float32(scale), sr


def _run_pipe(spec: str, utt: str | None) -> bytes:
    cmd = spec.rstrip()[:-1].strip()
    try:
        proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise DataError(f"could not run pipe command {cmd!r}: {e}", utt=utt) from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DataError(
            f"pipe command {cmd!r} failed with exit status {proc.returncode}"
            + (f": {err[-1]}" if err else ""),
            utt=utt,
            fix="run the command by hand; is the program installed and the input present?",
        )
    if not proc.stdout:
        raise DataError(f"pipe command {cmd!r} wrote no audio to stdout", utt=utt)
    return proc.stdout


def _decode(src, name: str, utt: str | None, frames: tuple[int, int] | None = None):
    """soundfile.read of a path or file object -> (float32 (num_samples, channels), sr)."""
    import soundfile as sf

    try:
        if frames is None:
            data, sr = sf.read(src, dtype="float32", always_2d=True)
        else:
            data, sr = sf.read(
                src, start=frames[0], stop=frames[1], dtype="float32", always_2d=True
            )
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise DataError(
            f"unreadable or corrupt audio: {e}",
            file=name,
            utt=utt,
            fix="check the file plays (e.g. `soxi`), or convert it to wav/flac",
        ) from None
    return data, sr


def _read_whole(spec: str, utt: str | None) -> tuple[np.ndarray, int]:
    """All of a pipe's or archive entry's audio: (float (num_samples, channels), sr)."""
    if is_pipe(spec):
        return _decode(io.BytesIO(_run_pipe(spec, utt)), spec, utt)
    return _read_ark(spec, utt)


def missing_audio_error(name: str, utt: str | None) -> DataError:
    """The error for an audio path that is not a file: a folder is named as one; the fix points
    at the wav.scp entry of ``utt``, or (no ``utt``: a path given by the user, e.g. on the
    ``transcribe`` command line) at the path itself."""
    if Path(name).is_dir():
        return DataError(
            "is a folder, not an audio file",
            file=name,
            utt=utt,
            fix="pass the audio files in it (e.g. DIR/*.wav)"
            if utt is None
            else "the wav.scp entry must name an audio file",
        )
    return DataError(
        "audio file not found",
        file=name,
        utt=utt,
        fix="check the path (relative to the current directory)"
        if utt is None
        else "check the wav.scp entry (paths are relative to the current directory)",
    )


def audio_file_info(path: str | os.PathLike, utt: str | None = None) -> tuple[int, int]:
    """``(num_samples, sample_rate)`` of an audio file from its header, with the errors of
    :func:`missing_audio_error` for a missing path or a folder and a clear one for a file that
    is not audio."""
    name = str(path)
    if not Path(name).is_file():
        raise missing_audio_error(name, utt)
    return _info(name, utt)


def _info(path: str, utt: str | None) -> tuple[int, int]:
    """(num_frames, sample_rate) of an audio file, from its header."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DataError(
            f"unreadable or corrupt audio: {e}",
            file=path,
            utt=utt,
            fix="check the file plays (e.g. `soxi`), or convert it to wav/flac",
        ) from None
    return info.frames, info.samplerate


def wav_truncation(path: str) -> str | None:
    """For a RIFF WAV file whose ``data`` chunk declares more bytes than the file holds (a
    truncated copy), a message giving both durations; None for a complete WAV or another format.

    libsndfile reads such a file without complaint, returning only what is there (so a
    truncated file used to give a few frames of features and exit 0); Kaldi's wave reader warns.
    Only the header is read.
    """
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = sample_rate = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size)
                    if len(fmt) < 14:
                        return None
                    sample_rate = struct.unpack("<I", fmt[4:8])[0]
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                    f.seek(size % 2, 1)
                elif cid == b"data":
                    available = os.fstat(f.fileno()).st_size - f.tell()
                    if size in (0, 0xFFFFFFFF) or size <= available or not block_align:
                        return None  # complete, or a streamed WAV of unknown length
                    sec = float(block_align * max(sample_rate, 1))
                    return (
                        f"truncated WAV: the header declares {size / sec:.3f} s of audio, the "
                        f"file holds {available / sec:.3f} s"
                    )
                else:
                    f.seek(size + size % 2, 1)
    except OSError:
        return None


_warned_truncated: set[str] = set()


def _frame_range(
    start: float, end: float | None, sr: int, total: int, name: str, utt: str | None
) -> tuple[int, int]:
    """Sample range [b, e) of the segment start..end (end None or -1: to the end)."""
    if start < 0:
        raise DataError(f"segment start {start} is negative", file=name, utt=utt)
    b = int(round(start * sr))
    if end is None or end == -1:
        e = total
    else:
        if end <= start:
            raise DataError(f"segment end {end} <= start {start}", file=name, utt=utt)
        e = int(round(end * sr))
        if e > total:
            if end - total / sr > MAX_OVERSHOOT_S:
                raise DataError(
                    f"segment end {end:.3f}s is past the end of the audio ({total / sr:.3f}s)",
                    file=name,
                    utt=utt,
                    fix="fix the segments file (end time) or the wav.scp entry",
                )
            e = total
    if b >= e:
        raise DataError(
            f"segment start {start:.3f}s is at or past the end of the audio ({total / sr:.3f}s)",
            file=name,
            utt=utt,
        )
    return b, e


def resample(x: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``) of (num_samples,) ``x`` from sr to target_sr."""
    if sr == target_sr:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(sr, target_sr)
    return resample_poly(x, target_sr // g, sr // g).astype(np.float32)


def read_audio(
    spec: str,
    start: float = 0.0,
    end: float | None = None,
    target_sr: int | None = None,
    *,
    expected_sr: int | None = None,
    channel: int = 0,
    utt: str | None = None,
) -> tuple[np.ndarray, int]:
    """Read a ``wav.scp`` value: an audio file, a pipe ``cmd |`` (wav on stdout), or ``ark:offset``.

    Args:
        spec: path (any format soundfile reads: wav, flac, sph, ...), ``"cmd ... |"``, or a
            Kaldi extended file name ``archive.ark:offset`` (wav stored in an archive).
        start, end: the segment in seconds (``end`` None or -1: to the end of the audio). An end
            up to 0.5 s past the audio is clipped, as Kaldi's extract-segments does.
        target_sr: resample to this rate (scipy ``resample_poly``); None keeps the file's rate.
        expected_sr: if given, a file whose rate differs is a :class:`DataError`.
        channel: channel to take from multi-channel audio.
        utt: utterance id, only used to name it in errors (None: ``spec`` is a path the user
            gave, and a missing file's fix says to check the path, not a wav.scp entry).

    Returns:
        ``(samples, sample_rate)``: float32 (num_samples,) int16-scaled samples, and the rate
        (``target_sr`` when given).
    """
    name = spec.strip()
    if is_pipe(name) or is_ark_entry(name):
        data, sr = _read_whole(name, utt)
        b, e = _frame_range(start, end, sr, data.shape[0], name, utt)
        data = data[b:e]
    else:
        if not Path(name).is_file():
            raise missing_audio_error(name, utt)
        total, sr = _info(name, utt)
        if name not in _warned_truncated and (problem := wav_truncation(name)):
            _warned_truncated.add(name)
            log.warning("%s (utterance %s): %s; only that part is used", name, utt, problem)
        if start == 0.0 and end is None:
            data, sr = _decode(name, name, utt)
        else:
            data, sr = _decode(name, name, utt, _frame_range(start, end, sr, total, name, utt))
    if expected_sr is not None and sr != expected_sr:
        raise DataError(
            f"sample rate is {sr} Hz, expected {expected_sr} Hz",
            file=name,
            utt=utt,
            fix=f"resample the audio (e.g. `sox in.wav -r {expected_sr} out.wav`), "
            "or set the expected rate / target_sr",
        )
    if not 0 <= channel < data.shape[1]:
        raise DataError(
            f"channel {channel} requested but the audio has {data.shape[1]} channel(s)",
            file=name,
            utt=utt,
        )
    x = np.ascontiguousarray(data[:, channel], dtype=np.float32) * np.float32(INT16_SCALE)
    if target_sr is not None and target_sr != sr:
        x, sr = resample(x, sr, target_sr), target_sr
    return x, sr


def load_utterance(
    d: DataDir,
    utt: str,
    target_sr: int | None = None,
    *,
    expected_sr: int | None = None,
) -> tuple[np.ndarray, int]:
    """The audio of utterance ``utt`` of data dir ``d`` (honouring ``segments``).

    Returns float32 (num_samples,) int16-scaled samples and the sample rate; see
    :func:`read_audio` for ``target_sr`` and ``expected_sr``.
    """
    if utt not in d.utt2spk:
        raise DataError("unknown utterance", file=d.file_path("utt2spk"), utt=utt)
    rec = d.recording_of(utt)
    try:
        spec = d.wav_scp[rec]
    except KeyError:
        raise DataError(
            f"recording {rec!r} not in wav.scp",
            file=d.file_path("wav.scp"),
            utt=utt,
            fix="run `pykaldi2 fix-data-dir`",
        ) from None
    start, end = 0.0, None
    if d.segments is not None:
        _, start, end = d.segments[utt]
    return read_audio(spec, start, end, target_sr, expected_sr=expected_sr, utt=utt)


def audio_duration(spec: str, utt: str | None = None) -> float:
    """Duration in seconds of a ``wav.scp`` value (header only for files; pipes are run)."""
    if is_pipe(spec) or is_ark_entry(spec.strip()):
        data, sr = _read_whole(spec.strip(), utt)
        return data.shape[0] / sr
    name = spec.strip()
    frames, sr = audio_file_info(name, utt)
    return frames / sr
