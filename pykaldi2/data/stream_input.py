"""Live audio sources for ``pykaldi2 stream``: standard input (16-bit PCM or WAV, so any live
source can be piped in) and loopback capture of what the machine plays (SoundCard).

Every source yields ``(S,) float32`` chunks scaled like Kaldi's samples (the int16 range,
:data:`pykaldi2.data.audio.INT16_SCALE`), mono, at the rate the caller asks for:

    >>> for chunk in pcm_chunks(sys.stdin.buffer, 16000, 0.32): ...     # raw s16le mono
    >>> ffmpeg -i URL -f s16le -ac 1 -ar 16000 - | pykaldi2 stream MODEL -
    >>> for chunk in loopback_chunks(16000, 0.32): ...                   # what the speakers play

:func:`pcm_chunks` reads a WAV header when the stream starts with ``RIFF`` (16-bit PCM, any
channel count: channel 0 is kept, as Kaldi does; a streaming WAV's unknown data size, 0 or
0xFFFFFFFF as ffmpeg writes it, is read to the end of the stream) and raw little-endian 16-bit
samples otherwise (``channels`` interleaved). The rate must be the model's: there is no
resampling of a stream here (``ffmpeg -ar`` / ``sox -r`` do it before the pipe).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from pykaldi2.data.audio import INT16_SCALE
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of the stream (pipes return short reads)."""
    parts, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def read_wav_header(f: BinaryIO, first: bytes = b"") -> tuple[int, int, int | None]:
    """(sample rate, channels, data bytes or None when unknown) of a 16-bit PCM WAV stream
    positioned after ``first`` (the bytes already read of it), leaving ``f`` at the samples."""
    head = first + _read_exact(f, 12 - len(first))
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise DataError("standard input: not a RIFF/WAVE stream", file="-")
    rate = channels = bits = None
    while True:
        hdr = _read_exact(f, 8)
        if len(hdr) < 8:
            raise DataError("standard input: WAV stream ends before its data chunk", file="-")
        cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
        if cid == b"data":
            break
        body = _read_exact(f, size + (size & 1))  # chunks are padded to even sizes
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if fmt == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag
                fmt = struct.unpack("<H", body[24:26])[0]
            if fmt != 1 or bits != 16:
                raise DataError(
                    f"standard input: WAV format tag {fmt} with {bits}-bit samples; only 16-bit "
                    "PCM is read", file="-",
                    fix="convert it first, e.g. ffmpeg -i IN -f wav -acodec pcm_s16le -",
                )  # fmt: skip
    if rate is None:
        raise DataError("standard input: WAV stream without a fmt chunk", file="-")
    return rate, channels, None if size in (0, 0xFFFFFFFF) else size


def pcm_chunks(
    f: BinaryIO,
    sr: int,
    chunk_seconds: float = 0.32,
    channels: int = 1,
) -> Iterator[np.ndarray]:
    """Chunks of ``chunk_seconds`` from a byte stream of 16-bit audio at ``sr`` Hz (a WAV
    stream, whose header gives rate and channels, or raw s16le with ``channels`` channels)."""
    first = _read_exact(f, 4)
    remaining = None
    if first == b"RIFF":
        rate, channels, remaining = read_wav_header(f, first)
        first = b""
        if rate != sr:
            raise DataError(
                f"standard input: a {rate} Hz WAV stream, the model takes {sr} Hz", file="-",
                fix=f"resample before the pipe, e.g. ffmpeg -i IN -ar {sr} -ac 1 -f wav -",
            )  # fmt: skip
    if channels < 1:
        raise Pykaldi2Error("pcm_chunks: channels must be >= 1")
    frame = 2 * channels
    step = max(1, int(chunk_seconds * sr)) * frame
    pending = first
    while True:
        want = step - len(pending)
        if remaining is not None:
            want = min(want, remaining)
        data = pending + (_read_exact(f, want) if want > 0 else b"")
        if remaining is not None:
            remaining -= len(data) - len(pending)
        pending = b""
        usable = len(data) - len(data) % frame
        if usable:
            x = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, channels)[:, 0]
            yield x.astype(np.float32)
        if len(data) < step or remaining == 0:
            if len(data) % frame:
                log.warning("standard input: %d trailing bytes dropped (half a sample frame)",
                            len(data) % frame)  # fmt: skip
            return


def loopback_chunks(
    sr: int,
    chunk_seconds: float = 0.32,
    device: str | None = None,
    max_seconds: float | None = None,
    backend=None,
) -> Iterator[np.ndarray]:
    """What the machine plays, recorded from a loopback ("monitor") device with the
    ``soundcard`` package (PulseAudio on Linux, WASAPI on Windows, CoreAudio loopback drivers
    on macOS): mono chunks at ``sr`` (the sound server resamples), until ``max_seconds`` (None:
    until interrupted). ``device``: a loopback device's name (a substring) or id; default: the
    default speaker's loopback. ``backend`` replaces the ``soundcard`` module (tests).

    Raises :class:`Pykaldi2Error` saying what to install when ``soundcard`` (or its sound
    server) is missing, and which devices exist when there is no loopback device.
    """
    sc = backend
    if sc is None:
        try:
            import soundcard as sc
        except Exception as e:  # ImportError, or the sound server's absence at import
            raise Pykaldi2Error(
                f"loopback capture needs the soundcard package and a sound server ({e}). Fix: "
                "pip install 'pykaldi2[loopback]' (or soundcard); on Linux run PulseAudio or "
                "PipeWire's pulse server"
            ) from None
    try:
        mics = list(sc.all_microphones(include_loopback=True))
    except Exception as e:
        raise Pykaldi2Error(f"loopback capture: cannot list the audio devices: {e}") from None
    loops = [m for m in mics if getattr(m, "isloopback", False)]
    mic = None
    if device is not None:
        mic = next((m for m in loops if device in (str(m.id), m.name) or device in m.name), None)
    elif loops:
        try:
            name = sc.default_speaker().name
            mic = next((m for m in loops if name in m.name), loops[0])
        except Exception:
            mic = loops[0]
    if mic is None:
        listed = "\n".join(
            f"  {'loopback' if getattr(m, 'isloopback', False) else 'input   '}  {m.name}"
            for m in mics
        ) or "  (none)"  # fmt: skip
        want = f"loopback device {device!r}" if device is not None else "loopback device"
        raise Pykaldi2Error(
            f"no {want} to record what the machine plays. Devices:\n{listed}\nFix: pass "
            "--device with a loopback device's name; on Linux a PulseAudio/PipeWire sink's "
            "'Monitor of ...' source is one (pactl list short sources); or pipe audio in with "
            "`pykaldi2 stream MODEL -`"
        )
    step = max(1, int(chunk_seconds * sr))
    total = 0
    log.info("loopback: recording %s at %d Hz", mic.name, sr)
    with mic.recorder(samplerate=sr, channels=1, blocksize=step) as rec:
        while max_seconds is None or total < max_seconds * sr:
            data = np.asarray(rec.record(numframes=step), dtype=np.float32)
            data = data.reshape(len(data), -1)[:, 0]
            total += len(data)
            yield data * INT16_SCALE
