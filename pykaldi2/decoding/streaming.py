"""Transducer decoding: data dirs offline (``decode-transducer``) and audio as a stream (``stream``).

A ``transducer`` model dir (from :func:`pykaldi2.training.transducer.train_transducer`) holds
the weights, the tokenizer and the front end (raw feature config, sliding CMN, frame stacking).

Offline, :func:`decode_transducer` runs the encoder on whole utterances in batches and greedy
(or modified beam) search, writing ``hyp.txt`` and Kaldi's ``wer``.

Streaming, :class:`TransducerStream` takes audio (or raw feature frames) chunk by chunk: the
fbank stream, :class:`SlidingCmnStream` (apply-cmvn-sliding exactly, waiting for the first
``min_window`` frames as the offline version looks ahead over them) or
:class:`~pykaldi2.features.ewma_norm.EwmaNormStream` (Myrtle's EWMA, no delay),
:class:`FrameStackStream`,
then the encoder with its carried LSTM states and greedy search with its carried predictor
state. Its transcript equals the offline greedy transcript of the same audio (tested).

Dimension legend: T raw frames, F raw feature dim, T_s stacked frames, F' = frame_stack * F.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pykaldi2.features.cmvn import SlidingCmnConfig
from pykaldi2.features.ewma_norm import EwmaNormStream
from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)


# ---------------------------------------------------------------------------------------------
# Loading a model dir
# ---------------------------------------------------------------------------------------------
@dataclass
class TransducerBundle:
    """A loaded ``transducer`` model dir: model (eval mode), tokenizer and front end."""

    model: Any  # pykaldi2.nnet.transducer.Transducer
    tokenizer: Any  # pykaldi2.lang.tokenizer.Tokenizer
    frontend: Any  # TransducerFrontendConfig
    features: dict  # raw feature config (FrameConfig.to_dict()), may be empty
    max_symbols_per_frame: int
    model_dir: Any  # ModelDir
    _int8: Any = field(default=None, repr=False)  # the int8 copy of model, made on first use

    def int8_model(self):
        """The model with dynamically quantized int8 LSTMs and Linears (made once, cached):
        :func:`quantize_int8`."""
        if self._int8 is None:
            self._int8 = quantize_int8(self.model)
        return self._int8


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` (eval mode, CPU) with torch dynamic quantization of every
    ``nn.LSTM`` and ``nn.Linear``: int8 weights, activations quantized on the fly per call
    (``torch.ao.quantization.quantize_dynamic``, qint8). Embeddings and LayerNorms stay fp32.
    The outputs differ from fp32's by the quantization error, so transcripts may differ a
    little; ``bench/transducer_streaming.py`` measures the speed-up."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(
            model.cpu().eval(), {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8
        )


def load_transducer(path: str | os.PathLike, device: str = "cpu") -> TransducerBundle:
    """Load a model dir written by train-transducer (a :class:`DataError` if it is not one)."""
    from pykaldi2.export.model_dir import ModelDir, load_model_dir
    from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
    from pykaldi2.lang.tokenizer import Tokenizer
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig

    md = path if isinstance(path, ModelDir) else load_model_dir(path)
    if md.kind != "transducer":
        raise DataError(
            f"a {md.kind!r} model, not a transducer",
            file=str(md.path),
            fix="pass the final/ dir of `pykaldi2 train-transducer`",
        )
    mcfg = TransducerConfig.from_dict(md.config("model"))
    model = Transducer(mcfg)
    model.load_state_dict(md.load_state())
    model.to(device).eval()
    tok = Tokenizer(md.file("tokenizer"))
    if tok.vocab_size != mcfg.vocab_size:
        raise DataError(
            f"tokenizer has {tok.vocab_size} symbols, the model {mcfg.vocab_size}",
            file=str(md.file("tokenizer")),
            fix="re-export the model dir with its own tokenizer",
        )
    return TransducerBundle(
        model=model,
        tokenizer=tok,
        frontend=TransducerFrontendConfig.from_dict(md.config("frontend")),
        features=md.config("features", {}),
        max_symbols_per_frame=int(md.config("decoder", {}).get("max_symbols_per_frame", 3)),
        model_dir=md,
    )


# ---------------------------------------------------------------------------------------------
# Offline decoding of a data dir
# ---------------------------------------------------------------------------------------------
def _batches(lengths: dict[str, int], batch_size: int) -> Iterator[list[str]]:
    utts = sorted(lengths, key=lambda u: (lengths[u], u))
    for i in range(0, len(utts), batch_size):
        yield utts[i : i + batch_size]


@torch.no_grad()
def transcribe_features(
    bundle: TransducerBundle,
    feats: dict[str, np.ndarray],
    beam: int = 1,
    batch_size: int = 16,
    lm: Any = None,
    lm_weight: float = 0.0,
    symbol_bonus: float = 0.0,
    max_sym_per_frame: int = 1,
) -> dict[str, list[int]]:
    """Token ids of each utterance's front-end features (T_s, F'): greedy (``beam`` 1, batched)
    or modified beam search (with ``lm``: shallow fusion of a token n-gram; at most
    ``max_sym_per_frame`` symbols per encoder frame)."""
    from pykaldi2.decoding.transducer_search import greedy_search, modified_beam_search

    model = bundle.model
    device = next(model.parameters()).device
    out: dict[str, list[int]] = {}
    lengths = {u: len(x) for u, x in feats.items() if len(x) > 0}
    out.update({u: [] for u in feats if u not in lengths})
    for utts in _batches(lengths, batch_size):
        lens = torch.tensor([lengths[u] for u in utts])
        x = torch.zeros(len(utts), int(lens.max()), model.cfg.in_feats)
        for i, u in enumerate(utts):
            x[i, : lengths[u]] = torch.from_numpy(feats[u])
        enc, enc_lens, _ = model.encoder(x.to(device), lens.to(device))
        if beam <= 1:
            hyps, _ = greedy_search(model, enc, enc_lens, bundle.max_symbols_per_frame,
                                    symbol_bonus=symbol_bonus)  # fmt: skip
        else:
            hyps = modified_beam_search(model, enc, enc_lens, beam=beam, lm=lm,
                                        lm_weight=lm_weight, symbol_bonus=symbol_bonus,
                                        max_sym_per_frame=max_sym_per_frame)  # fmt: skip
        out.update(zip(utts, hyps))
    return out


def frontend_features(
    frontend, data_dir: str | os.PathLike, in_feats: int
) -> dict[str, np.ndarray]:
    """utt -> (T_s, F') model input of every utterance of ``data_dir`` (feats.scp of the model's
    raw features) through ``frontend`` (a TransducerFrontendConfig); ``in_feats``: the model's
    input dim, checked (a :class:`DataError` naming feats.scp)."""
    from pykaldi2.features.pipeline import ProcessedFeatures

    proc = ProcessedFeatures(data_dir, frontend.pipeline())
    dim = frontend.output_dim(proc.dim)
    if dim != in_feats:
        raise DataError(
            f"features of dim {proc.dim} give {dim} model inputs, the model takes {in_feats}",
            file=str(Path(data_dir) / "feats.scp"),
            fix="compute the features with the model's feature config (model.yaml: features)",
        )
    return _carry_transform(frontend, ((u, proc[u]) for u in progress(list(proc),
                                       desc="features", unit="utt")))  # fmt: skip


def _carry_transform(frontend, raws) -> dict[str, np.ndarray]:
    """key -> ``frontend.transform_from`` of (key, pipeline output) pairs in order; with
    ``ewma.carry_over`` the EWMA state passes from each utterance to the next."""
    carry = frontend.cmvn == "ewma" and frontend.ewma.carry_over
    out, state = {}, None
    for key, x in raws:
        out[key], end = frontend.transform_from(x, state if carry else None)
        state = end if len(x) else state
    return out


def audio_features(bundle: TransducerBundle, items) -> dict[str, np.ndarray]:
    """key -> (T_s, F') model input of each :class:`~pykaldi2.data.manifests.ManifestItem`'s
    audio (resampled to the model's rate): the model's raw features computed offline, then its
    front end, as the training features went."""
    from pykaldi2.data.audio import read_audio
    from pykaldi2.features.extractors import config_from_dict, make_extractor
    from pykaldi2.features.pipeline import ProcessedFeatures

    if not bundle.features:
        raise DataError(
            "the model dir has no raw feature config, so it cannot take audio",
            file=str(bundle.model_dir.path),
            fix="decode a data dir with feats.scp of the model's features instead",
        )
    extractor = make_extractor(config_from_dict(bundle.features))
    sr = int(float(bundle.features.get("sample_frequency", 16000)))
    fe = bundle.frontend
    pipe = ProcessedFeatures(".", fe.pipeline(), open_raw=False)

    def raws():
        for it in progress(items, desc="features", unit="utt"):
            x, _ = read_audio(it.audio, target_sr=sr, utt=it.key)
            raw = extractor.compute(x, sr)
            yield it.key, pipe.apply(it.key, raw) if len(raw) else raw

    return _carry_transform(fe, raws())


def write_hyp(
    hyp: dict[str, list[str]],
    refs: str | os.PathLike | Mapping[str, list[str]] | None,
    out_dir: str | os.PathLike,
) -> Any:
    """Write ``out_dir/hyp.txt``; with references (a data dir with ``text``, or key -> words),
    score the utterances that have one into ``out_dir/wer`` and return the WerStats (else
    None)."""
    from pykaldi2.decoding.scoring import compute_wer, read_text
    from pykaldi2.utils.io import atomic_write_text

    out_dir = Path(out_dir)
    lines = "".join(f"{u} {' '.join(w)}\n" for u, w in sorted(hyp.items()))
    atomic_write_text(out_dir / "hyp.txt", lines)
    if isinstance(refs, str | os.PathLike):
        text = Path(refs) / "text"
        refs = read_text(text) if text.is_file() else None
    if not refs:
        return None
    stats = compute_wer(refs, hyp, mode="present")
    atomic_write_text(out_dir / "wer", stats.format())
    return stats


def load_fusion_lm(arpa: str | os.PathLike, tokenizer, unit: str = "pieces") -> Any:
    """The ARPA n-gram for transducer shallow fusion: over the tokenizer's pieces
    (:class:`~pykaldi2.lang.token_lm.TokenLm`, ``unit`` "pieces") or over words, spelled
    with the pieces (:class:`~pykaldi2.lang.word_lm.WordLm`, "words")."""
    if unit == "pieces":
        from pykaldi2.lang.token_lm import TokenLm

        return TokenLm.load(arpa, tokenizer)
    if unit == "words":
        from pykaldi2.lang.word_lm import WordLm

        return WordLm.load(arpa, tokenizer)
    raise ValueError(f"lm unit {unit!r}: expected 'pieces' or 'words'")


def decode_transducer(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    beam: int = 1,
    batch_size: int = 16,
    device: str = "cpu",
    dump_preds: str | os.PathLike | None = None,
    lm: Any = None,
    lm_weight: float = 0.0,
    symbol_bonus: float = 0.0,
    max_sym_per_frame: int = 1,
    lm_unit: str = "pieces",
) -> Any:
    """Decode ``data_dir`` into ``out_dir/hyp.txt``; where references exist, score into
    ``out_dir/wer`` and return the WerStats (else None).

    ``data_dir``: a data dir with feats.scp of the model's raw features (and text), or audio
    to compute them from: a data dir without feats.scp, a JSON manifest, WebDataset shards or
    a file list (:func:`pykaldi2.data.manifests.items_from_inputs`; references from their
    transcripts). ``dump_preds``: also write the predictions there
    (:func:`pykaldi2.decoding.preds.write_preds`). ``lm``, ``lm_weight``: a
    :class:`~pykaldi2.lang.token_lm.TokenLm` or :class:`~pykaldi2.lang.word_lm.WordLm` (or
    an ARPA file: ``lm_unit`` "pieces" or "words", :func:`load_fusion_lm`) for shallow fusion
    in beam search (``beam`` > 1); ``symbol_bonus``: added to every emitted symbol's score (greedy:
    to every non-blank logit);
    ``max_sym_per_frame``: the most symbols beam search emits at one encoder frame.
    """
    import tempfile

    from pykaldi2.decoding.scoring import read_text

    bundle = load_transducer(model_dir, device)
    if lm is not None and not hasattr(lm, "log_probs"):
        lm = load_fusion_lm(lm, bundle.tokenizer, lm_unit)
    src, audio = Path(data_dir), None
    if src.is_dir() and (src / "feats.scp").is_file():
        feats = frontend_features(bundle.frontend, src, bundle.model.cfg.in_feats)
        refs = read_text(src / "text") if (src / "text").is_file() else {}
    else:
        from pykaldi2.data.manifests import items_from_inputs

        with tempfile.TemporaryDirectory(prefix="pykaldi2-decode-") as tmp:
            items = items_from_inputs([data_dir], extract_to=tmp)
            feats = audio_features(bundle, items)
        refs = {it.key: it.text.split() for it in items if it.text is not None}
        audio = {it.key: it.audio for it in items}
    ids = transcribe_features(bundle, feats, beam=beam, batch_size=batch_size, lm=lm,
                              lm_weight=lm_weight, symbol_bonus=symbol_bonus,
                              max_sym_per_frame=max_sym_per_frame)  # fmt: skip
    hyp = {u: bundle.tokenizer.decode(ids[u]).split() for u in ids}
    stats = write_hyp(hyp, refs, out_dir)
    if dump_preds is not None:
        from pykaldi2.decoding.preds import write_preds

        write_preds(dump_preds, hyp, refs, audio)
    return stats


# ---------------------------------------------------------------------------------------------
# Streaming front end
# ---------------------------------------------------------------------------------------------
class SlidingCmnStream:
    """:func:`pykaldi2.features.cmvn.apply_cmvn_sliding` (center false) on frames given in chunks.

    Frame t is normalised over ``[0, min(min_window, T))`` for t < min_window, else over
    ``[max(0, t - cmn_window), t + 1)``, exactly as the offline function, so the first output
    waits for ``min_window`` frames (or the end of input). Memory: the last cmn_window frames.
    """

    def __init__(self, config: SlidingCmnConfig) -> None:
        if config.center:
            raise Pykaldi2Error("SlidingCmnStream: center=true needs lookahead; use center: false")
        if config.min_window > config.cmn_window:
            raise Pykaldi2Error("SlidingCmnStream: min_window must be <= cmn_window")
        self.cfg = config
        self.buf: np.ndarray | None = None  # (n, F) float64, frames base .. base + n - 1
        self.base = 0
        self.next = 0  # first frame not output yet

    def accept(self, frames: np.ndarray, final: bool = False) -> np.ndarray:
        """Add (N, F) raw frames; return the (M, F) float32 normalised frames now ready."""
        frames = np.asarray(frames, dtype=np.float64)
        if self.buf is None:
            self.buf = frames.reshape(-1, frames.shape[-1]) if frames.size else None
            if self.buf is None:
                return np.zeros((0, 0), np.float32)
        elif len(frames):
            self.buf = np.concatenate([self.buf, frames])
        total = self.base + len(self.buf)
        W, M = self.cfg.cmn_window, self.cfg.min_window
        ready = total if (final or total >= M) else 0
        t = np.arange(self.next, ready)
        F = self.buf.shape[1]
        if len(t) == 0:
            return np.zeros((0, F), np.float32)
        start = np.where(t < M, 0, np.maximum(t - W, 0))
        end = np.where(t < M, min(M, total), t + 1)
        x = self.buf
        csum = np.concatenate([np.zeros((1, F)), np.cumsum(x, axis=0)])
        s, e = start - self.base, end - self.base
        n = (end - start)[:, None].astype(np.float64)
        win = csum[e] - csum[s]
        out = x[t - self.base] - win / n
        if self.cfg.norm_vars:
            csq = np.concatenate([np.zeros((1, F)), np.cumsum(x * x, axis=0)])
            var = (csq[e] - csq[s]) / n - (win / n) ** 2
            out = out / np.sqrt(np.maximum(var, 1.0e-10))
            out[(n == 1)[:, 0]] = 0.0
        self.next = ready
        keep_from = max(self.next - W, 0) if self.next >= M else 0
        if keep_from > self.base:
            self.buf = self.buf[keep_from - self.base :]
            self.base = keep_from
        return out.astype(np.float32)


class FrameStackStream:
    """:func:`pykaldi2.features.transducer_frontend.stack_frames` on frames given in chunks."""

    def __init__(self, stack: int, subsample: int) -> None:
        self.stack, self.subsample = stack, subsample
        self.buf: np.ndarray | None = None  # frames base .. base + n - 1
        self.base = 0
        self.next = 0  # next output frame j (input frames j * subsample ...)

    def accept(self, frames: np.ndarray, final: bool = False) -> np.ndarray:
        """Add (N, F) frames; return the (M, stack * F) stacked frames now complete."""
        if len(frames):
            self.buf = frames if self.buf is None else np.concatenate([self.buf, frames])
        if self.buf is None:
            return np.zeros((0, 0), np.float32)
        total = self.base + len(self.buf)
        k, s = self.stack, self.subsample
        last = -(-total // s) if final else max(0, (total - k) // s + 1)
        F = self.buf.shape[1]
        rows = []
        padded = np.concatenate([self.buf, np.zeros((k, F), self.buf.dtype)])
        for j in range(self.next, last):
            a = j * s - self.base
            rows.append(padded[a : a + k].reshape(-1))  # zeros past the end
        self.next = max(self.next, last)
        drop = min(self.next * s, total) - self.base
        if drop > 0:
            self.buf = self.buf[drop:]
            self.base += drop
        return np.array(rows, np.float32).reshape(len(rows), k * F)


class TransducerStream:
    """Streaming greedy decoding of one audio stream with a transducer model dir's model.

        >>> s = TransducerStream(load_transducer("exp/rnnt/final"))
        >>> for chunk in chunks:                     # (S_i,) samples at the model's rate
        ...     partial = s.accept_waveform(chunk, 16000)   # text so far
        >>> text = s.finish()

    The encoder runs on every chunk of stacked frames as they complete, keeping one frame back
    so the final call (which flushes the encoder's time-reduction buffer) is never empty.
    ``quantize=True`` runs the bundle's int8 model (:func:`quantize_int8`, on the CPU).
    """

    def __init__(self, bundle: TransducerBundle, quantize: bool = False, norm_state=None) -> None:
        """``norm_state``: the EWMA state to start from (``cmvn: ewma``; None: the warm start),
        e.g. the previous stream's :attr:`norm_state` to carry the statistics over."""
        from dataclasses import replace

        from pykaldi2.features.extractors import config_from_dict, make_extractor

        if bundle.model.cfg.enc_bidirectional:
            raise DataError(
                "the model's encoder is bidirectional (enc_bidirectional): it needs whole "
                "utterances and cannot stream",
                file=str(bundle.model_dir.path),
                fix="decode files with `pykaldi2 transcribe` / decode-transducer, or train a "
                "uni-directional model for streaming",
            )
        self.bundle = bundle
        self.model = bundle.int8_model() if quantize else bundle.model
        fe = bundle.frontend
        self.cmn = None
        if fe.cmvn == "sliding":
            self.cmn = SlidingCmnStream(fe.sliding)
        elif fe.cmvn == "ewma":
            self.cmn = EwmaNormStream(fe.ewma)
            if norm_state is not None:
                self.cmn.state = (norm_state[0].copy(), norm_state[1].copy())
        elif fe.cmvn == "global":  # static: the EWMA with alpha 0 never moves its mean/var
            self.cmn = EwmaNormStream(replace(fe.ewma, alpha=0.0))
        self.stacker = FrameStackStream(fe.frame_stack, fe.frame_subsample)
        self.fbank = None
        if bundle.features:
            self.fbank = make_extractor(config_from_dict(bundle.features)).stream()
        self.enc_state = None
        self.search_state = None
        self.held: np.ndarray | None = None  # stacked frames not yet given to the encoder
        self.frames_in = 0
        self.done = False

    @property
    def norm_state(self):
        """The EWMA normalization's state now (``cmvn: ewma``), else None."""
        return self.cmn.state if isinstance(self.cmn, EwmaNormStream) else None

    @property
    def token_ids(self) -> list[int]:
        return list(self.search_state.hyps[0]) if self.search_state is not None else []

    @property
    def text(self) -> str:
        return self.bundle.tokenizer.decode(self.token_ids)

    def accept_waveform(self, samples: np.ndarray, sr: float) -> str:
        """Add audio; returns the partial transcript."""
        if self.fbank is None:
            raise DataError(
                "the model dir has no raw feature config, so it cannot take audio",
                file=str(self.bundle.model_dir.path),
                fix="train on features computed by `pykaldi2 compute-feats` (HDF5 with config)",
            )
        return self.accept_features(self.fbank.accept_waveform(samples, sr))

    def accept_features(self, frames: np.ndarray, final: bool = False) -> str:
        """Add (N, F) raw feature frames; returns the partial transcript."""
        if self.done:
            raise Pykaldi2Error("TransducerStream: input after finish()")
        self.frames_in += len(frames)
        x = np.asarray(frames, np.float32)
        if self.cmn is not None:
            x = self.cmn.accept(x, final)
        x = self.stacker.accept(x, final)
        if len(x):
            self.held = x if self.held is None else np.concatenate([self.held, x])
        if self.held is not None and (len(self.held) > 1 or (final and len(self.held))):
            n = len(self.held) if final else len(self.held) - 1
            self._encode(self.held[:n], final)
            self.held = self.held[n:]
        return self.text

    def finish(self) -> str:
        """End of input: flush every buffer; returns the final transcript."""
        if self.done:
            return self.text
        tail = self.fbank.input_finished() if self.fbank is not None else np.zeros((0, 0))
        text = self.accept_features(tail, final=True) if self.frames_in + len(tail) else ""
        self.done = True
        return text

    @torch.no_grad()
    def _encode(self, x: np.ndarray, final: bool) -> None:
        from pykaldi2.decoding.transducer_search import greedy_search

        model = self.model
        feats = torch.from_numpy(np.ascontiguousarray(x))[None]
        enc, enc_len, self.enc_state = model.encoder(
            feats, torch.tensor([len(x)]), self.enc_state, final=final
        )
        if enc.shape[1]:
            _, self.search_state = greedy_search(
                model, enc, enc_len, self.bundle.max_symbols_per_frame, self.search_state
            )


def stream_chunks(
    bundle: TransducerBundle,
    chunks: Iterable[np.ndarray],
    sr: int,
    quantize: bool = False,
) -> Iterator[str]:
    """Decode a stream of audio chunks ((S_i,) int16-scaled samples at rate ``sr``); yields the
    partial transcript after every chunk and, when the chunks end, the final one."""
    stream = TransducerStream(bundle, quantize=quantize)
    for chunk in chunks:
        yield stream.accept_waveform(chunk, sr)
    yield stream.finish()


def stream_file(
    bundle: TransducerBundle,
    path: str | os.PathLike,
    chunk_seconds: float = 0.32,
    quantize: bool = False,
) -> Iterator[str]:
    """Decode an audio file fed in ``chunk_seconds`` chunks (with the int8 model when
    ``quantize``); yields the partial transcripts, the last one final."""
    from pykaldi2.data.audio import read_audio

    sr = int(float(bundle.features.get("sample_frequency", 16000)))
    samples, sr = read_audio(str(path), target_sr=sr)
    step = max(1, int(chunk_seconds * sr))
    chunks = (samples[i : i + step] for i in range(0, len(samples), step))
    yield from stream_chunks(bundle, chunks, sr, quantize)


def microphone_chunks(
    sr: int,
    chunk_seconds: float = 0.32,
    device: int | str | None = None,
    max_seconds: float | None = None,
    backend=None,
) -> Iterator[np.ndarray]:
    """Audio from a microphone (the ``sounddevice`` package, PortAudio): (S,) int16-scaled
    float32 chunks of ``chunk_seconds`` at ``sr``, mono, until ``max_seconds`` (None: until
    interrupted). ``backend`` replaces the ``sounddevice`` module (tests).

    Raises :class:`Pykaldi2Error` saying what to install when ``sounddevice`` or PortAudio is
    missing, or which devices exist when there is no usable input device.
    """
    sd = backend
    if sd is None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: the PortAudio library is missing
            raise Pykaldi2Error(
                f"microphone input needs the sounddevice package and PortAudio ({e}). Fix: "
                "pip install 'pykaldi2[mic]' (or sounddevice) and apt-get install libportaudio2"
            ) from None
    try:
        sd.check_input_settings(device=device, channels=1, dtype="float32", samplerate=sr)
    except Exception as e:  # sounddevice raises PortAudioError / ValueError here
        try:
            devices = str(sd.query_devices())
        except Exception:
            devices = "(none)"
        raise Pykaldi2Error(
            f"no usable audio input device {device if device is not None else '(default)'} at "
            f"{sr} Hz: {e}. Devices:\n{devices}\nFix: pass --device with an input device, "
            "or stream a file instead"
        ) from None
    step = max(1, int(chunk_seconds * sr))
    total = 0
    with sd.InputStream(
        samplerate=sr, channels=1, dtype="float32", blocksize=step, device=device
    ) as stream:
        while max_seconds is None or total < max_seconds * sr:
            data, overflowed = stream.read(step)
            if overflowed:
                log.warning("microphone: input overflow (the decoder is slower than real time)")
            total += len(data)
            yield np.asarray(data[:, 0], dtype=np.float32) * 32768.0


class TransducerTranscriber:
    """``pykaldi2.load_model`` of a ``transducer`` model dir: streaming greedy decoding of files
    (one chunk per file; the same transcript as any chunking); a bidirectional encoder decodes
    each file offline (the same greedy search on the whole utterance). With the front end's
    ``ewma.carry_over`` each file's EWMA normalization starts where the previous file's ended
    (a session), else from the warm start (as in training). :meth:`set_search` switches to
    beam search, with or without an n-gram, on whole files."""

    def __init__(self, md) -> None:
        self.model_dir = md
        self.bundle = load_transducer(md)
        self.search: dict[str, Any] = {}

    def set_search(
        self,
        beam: int = 1,
        lm: Any = None,
        lm_unit: str = "pieces",
        lm_weight: float = 0.3,
        symbol_bonus: float = 0.0,
        max_sym_per_frame: int = 1,
    ) -> None:
        """Decode with modified beam search (``beam`` > 1), optionally with shallow fusion of
        an n-gram (``lm``: an ARPA file or a loaded LM; ``lm_unit`` "pieces" or "words", as
        ``decode-transducer --lm-unit``); then every file is decoded offline (its whole
        utterance, as ``decode-transducer`` decodes audio). ``beam`` 1 without an LM: back to
        streaming greedy search (``symbol_bonus`` then applies to greedy search offline)."""
        if beam < 1 or max_sym_per_frame < 1:
            raise ValueError("beam and max_sym_per_frame must be >= 1")
        if lm is not None and beam <= 1:
            raise ValueError("an LM needs beam search (beam > 1)")
        if lm is not None and not hasattr(lm, "log_probs"):
            lm = load_fusion_lm(lm, self.bundle.tokenizer, lm_unit)
        self.search = {} if beam == 1 and not symbol_bonus else dict(
            beam=beam, lm=lm, lm_weight=lm_weight, symbol_bonus=symbol_bonus,
            max_sym_per_frame=max_sym_per_frame)  # fmt: skip

    def transcribe(self, paths: Sequence[str | os.PathLike]) -> list[str]:
        paths = list(paths)
        if self.bundle.features:  # every file, before decoding any (else: a clear error below)
            from pykaldi2.features.extractors import config_from_dict

            config_from_dict(self.bundle.features).check_audio_files(paths)
        if self.bundle.model.cfg.enc_bidirectional or self.search:
            from pykaldi2.data.manifests import ManifestItem

            items = [ManifestItem(str(i), str(p)) for i, p in enumerate(paths)]
            feats = audio_features(self.bundle, items)
            ids = transcribe_features(self.bundle, feats, **self.search)
            return [self.bundle.tokenizer.decode(ids[it.key]) for it in items]
        from pykaldi2.data.audio import read_audio

        b = self.bundle
        carry = b.frontend.cmvn == "ewma" and b.frontend.ewma.carry_over
        sr = int(float(b.features.get("sample_frequency", 16000)))
        out, state = [], None
        for p in progress(paths, desc="transcribe", unit="file"):
            stream = TransducerStream(b, norm_state=state if carry else None)
            samples, _ = read_audio(str(p), target_sr=sr)
            stream.accept_waveform(samples, sr)
            out.append(stream.finish())
            state = stream.norm_state
        return out

    def __call__(self, paths):
        """``model(files) == model.transcribe(files)``; one path gives one transcript."""
        if isinstance(paths, str | os.PathLike):
            return self.transcribe([paths])[0]
        return self.transcribe(list(paths))
