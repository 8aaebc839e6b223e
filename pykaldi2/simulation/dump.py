"""Writing simulated audio: single examples for listening, or a simulated copy of a data dir.

``simulate_data_dir`` (``pykaldi2 simulate``) writes ``OUTDIR/wav/<utt>.wav`` (16-bit PCM) for
every utterance, ``wav.scp`` pointing at them by absolute path, ``text``, ``utt2spk``,
``spk2utt``, ``utt2dur`` (new durations), the tables that stay valid (``utt2lang``,
``utt2uniq``, ``text.orig``, ``spk2gender``; not ``feats.scp``/``cmvn.scp``), plus
``sim_config.yaml`` (the resolved config) and ``sim_info.jsonl`` (what was applied to each
utterance). The whole directory appears atomically. Each utterance is simulated with
``utterance_rng(seed, epoch, 0, crc32(utt_id))``: the same utterance gets the same simulation
in any subset or combination of data dirs.

A mix louder than int16 full scale is scaled down as a whole (recorded as ``peak_gain_db``),
which keeps the SNR; no sample is ever clipped.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np

from pykaldi2.data.audio import load_utterance, read_audio
from pykaldi2.data.datadir import DataDir, data_dir_files, read_data_dir
from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.simulation.simulator import Simulator, utterance_rng
from pykaldi2.utils.errors import DataError
from pykaldi2.utils.io import atomic_dir, atomic_write
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)

INT16_MAX = 32767.0
#: Tables that stay valid for the simulated copy (features and CMVN stats do not).
KEPT_UTT_TABLES = ("utt2lang", "utt2uniq", "text.orig")
KEPT_SPK_TABLES = ("spk2gender",)


def peak_normalize(x: np.ndarray, peak: float = INT16_MAX) -> tuple[np.ndarray, float]:
    """Scale ``x`` down so that max |x| <= peak; returns ``(x, gain_db)`` (0 dB when not needed)."""
    m = float(np.max(np.abs(x))) if len(x) else 0.0
    if m <= peak:
        return x, 0.0
    return (x * (peak / m)).astype(np.float32), float(20.0 * np.log10(peak / m))


def _write_wav(f, samples: np.ndarray, sr: int) -> None:
    import soundfile as sf

    x = np.asarray(samples, np.float32)
    if x.ndim != 1:
        raise DataError(f"dump_wav expects mono samples (n,), got shape {x.shape}")
    pcm = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    sf.write(f, pcm, int(sr), format="WAV", subtype="PCM_16")


def dump_wav(path: str | os.PathLike, samples: np.ndarray, sr: int) -> float:
    """Write int16-scaled float samples (n,) as a 16-bit wav, atomically, for listening.

    A louder signal is scaled down to full scale (never clipped); returns that gain in dB.
    """
    x, gain_db = peak_normalize(np.asarray(samples, np.float32))
    with atomic_write(path, "wb") as f:
        _write_wav(f, x, sr)
    return gain_db


def _simulated_copy(d: DataDir, wav_scp: dict[str, str], utt2dur: dict[str, float]) -> DataDir:
    return DataDir(
        wav_scp=wav_scp,
        text=dict(d.text),
        utt2spk=dict(d.utt2spk),
        utt2dur=utt2dur,
        utt_tables={n: t for n, t in d.utt_tables.items() if n in KEPT_UTT_TABLES},
        spk_tables={n: t for n, t in d.spk_tables.items() if n in KEPT_SPK_TABLES},
    )


def simulate_data_dir(
    src: str | os.PathLike,
    out: str | os.PathLike,
    config: SimulationConfig,
    *,
    epoch: int = 0,
    target_sr: int | None = None,
) -> DataDir:
    """Write a simulated copy of data dir ``src`` to ``out`` (see the module docstring).

    Returns the new DataDir. ``target_sr`` resamples the input first (None: keep its rate).
    """
    d = read_data_dir(src)
    out = Path(out)
    final_wav_dir = out.resolve() / "wav"
    sim = Simulator(config)
    wav_scp, utt2dur = {}, {}
    with atomic_dir(out) as tmp:
        (tmp / "wav").mkdir()
        with open(tmp / "sim_info.jsonl", "w", encoding="utf-8") as info_f:
            for utt in progress(d.utt_ids, desc="simulate", unit="utt"):
                if "/" in utt or utt.startswith("."):
                    raise DataError("utterance id cannot be a file name", utt=utt)
                x, sr = load_utterance(d, utt, target_sr)
                rng = utterance_rng(config.seed, epoch, 0, zlib.crc32(utt.encode("utf-8")))
                try:
                    y, info = sim(x, sr, rng)
                except DataError as e:
                    raise DataError(str(e), file=str(src), utt=utt) from None
                y, info["peak_gain_db"] = peak_normalize(y)
                with open(tmp / "wav" / f"{utt}.wav", "wb") as f:
                    _write_wav(f, y, sr)
                wav_scp[utt] = str(final_wav_dir / f"{utt}.wav")
                utt2dur[utt] = len(y) / sr
                info_f.write(json.dumps({"utt": utt, "sample_rate": sr, **info}) + "\n")
        new = _simulated_copy(d, wav_scp, utt2dur)
        for name, content in data_dir_files(new).items():
            (tmp / name).write_text(content, encoding="utf-8")
        config.to_yaml(tmp / "sim_config.yaml")
    new.path = out
    log.info("wrote %d simulated utterances to %s", len(wav_scp), out)
    return new


def speed_prefix(factor: float) -> str:
    """The id prefix Kaldi's perturb_data_dir_speed.sh gives a copy (``sp0.9-``)."""
    return f"sp{factor:g}-"


def perturb_data_dir_speed(
    src: str | os.PathLike, out: str | os.PathLike, factors=(0.9, 1.0, 1.1)
) -> DataDir:
    """Kaldi's utils/data/perturb_data_dir_speed_3way.sh: ``out`` holds ``src`` (factor 1.0,
    ids and audio unchanged) and one copy per other factor, its recordings played ``factor``
    times faster (:func:`pykaldi2.simulation.perturb.speed_perturb`, what ``sox speed`` does:
    duration / factor) into ``out/wav/<recording>.wav``, with utterance, recording and speaker
    ids prefixed ``sp<factor>-`` (speed-perturbed speakers are other speakers, as in Kaldi),
    segments and utt2dur scaled, and ``utt2uniq`` naming each copy's source utterance (so
    the copies stay on one side of a train/validation split). Written atomically."""
    from pykaldi2.simulation.perturb import speed_perturb

    d = read_data_dir(src)
    out = Path(out)
    wav_root = out.resolve() / "wav"
    wav_scp: dict[str, str] = {}
    text, utt2spk, uniq, utt2dur = {}, {}, {}, {}
    segments: dict[str, tuple[str, float, float]] = {}
    spk_tables: dict[str, dict[str, str]] = {n: {} for n in KEPT_SPK_TABLES if n in d.spk_tables}
    base_uniq = d.utt_tables.get("utt2uniq", {})
    with atomic_dir(out) as tmp:
        (tmp / "wav").mkdir()
        for factor in factors:
            one = abs(factor - 1.0) < 1e-9
            pre = "" if one else speed_prefix(factor)
            recs = sorted({d.recording_of(u) for u in d.utt_ids})
            for rec in progress(recs, desc=f"speed {factor:g}", unit="rec", disable=one):
                if one:
                    wav_scp[rec] = d.wav_scp[rec]
                    continue
                if "/" in rec or rec.startswith("."):
                    raise DataError("recording id cannot be a file name", utt=rec)
                x, sr = read_audio(d.wav_scp[rec], utt=rec)
                y, _ = peak_normalize(speed_perturb(x, factor))
                with open(tmp / "wav" / f"{pre}{rec}.wav", "wb") as f:
                    _write_wav(f, y, sr)
                wav_scp[pre + rec] = str(wav_root / f"{pre}{rec}.wav")
            for utt in d.utt_ids:
                u = pre + utt
                text[u] = d.text.get(utt, "")
                utt2spk[u] = pre + d.utt2spk[utt]
                uniq[u] = base_uniq.get(utt, utt)
                if d.segments is not None:
                    rec, beg, end = d.segments[utt]
                    segments[u] = (pre + rec, beg / factor, end / factor if end > 0 else end)
                if d.utt2dur is not None and utt in d.utt2dur:
                    utt2dur[u] = d.utt2dur[utt] / factor
            for name in spk_tables:
                for spk, v in d.spk_tables[name].items():
                    spk_tables[name][pre + spk] = v
        new = DataDir(
            wav_scp=wav_scp, text=text, utt2spk=utt2spk,
            segments=segments if d.segments is not None else None,
            utt2dur=utt2dur or None, utt_tables={"utt2uniq": uniq}, spk_tables=spk_tables,
        )  # fmt: skip
        for name, content in data_dir_files(new).items():
            (tmp / name).write_text(content, encoding="utf-8")
    new.path = out
    log.info("wrote %s: %d utterances at speeds %s", out, len(text), list(factors))
    return new
