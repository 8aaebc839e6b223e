"""Streaming transducer decoding equals offline decoding: the streaming front end (sliding CMN,
frame stacking) against the offline functions, and `pykaldi2 stream` on an AN4 file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pykaldi2.decoding.streaming import (
    FrameStackStream,
    SlidingCmnStream,
    TransducerStream,
    load_transducer,
    stream_file,
    transcribe_features,
)
from pykaldi2.features.cmvn import SlidingCmnConfig, apply_cmvn_sliding
from pykaldi2.features.transducer_frontend import stack_frames


def _chunks(x, rng, max_len=7):
    i = 0
    while i < len(x):
        n = int(rng.integers(0, max_len + 1))  # empty chunks included
        yield x[i : i + n]
        i += n


@pytest.mark.parametrize("norm_vars", [False, True])
@pytest.mark.parametrize("num", [3, 10, 57])
def test_sliding_cmn_stream_equals_offline(norm_vars, num):
    cfg = SlidingCmnConfig(cmn_window=12, min_window=5, norm_vars=norm_vars)
    rng = np.random.default_rng(num)
    x = rng.normal(size=(num, 4)).astype(np.float32) + 3.0
    s = SlidingCmnStream(cfg)
    parts = [s.accept(c) for c in _chunks(x, rng)] + [s.accept(np.zeros((0, 4)), final=True)]
    got = np.concatenate([p for p in parts if p.size])
    np.testing.assert_allclose(got, apply_cmvn_sliding(x, cfg), rtol=1e-5, atol=1e-5)
    assert len(s.buf) <= cfg.cmn_window + 8  # bounded memory


@pytest.mark.parametrize("stack,sub", [(1, 1), (3, 3), (2, 3), (4, 2)])
def test_frame_stack_stream_equals_offline(stack, sub):
    rng = np.random.default_rng(stack * 10 + sub)
    x = rng.normal(size=(23, 3)).astype(np.float32)
    s = FrameStackStream(stack, sub)
    parts = [s.accept(c) for c in _chunks(x, rng)] + [s.accept(np.zeros((0, 3)), final=True)]
    got = np.concatenate([p for p in parts if p.size])
    np.testing.assert_array_equal(got, stack_frames(x, stack, sub))


@pytest.fixture(scope="module", params=["sliding", "ewma"])
def tiny_model_dir(request, tmp_path_factory):
    """A random tiny transducer model dir with an fbank front end (16 kHz, 10 mel bins),
    normalised by sliding CMN or by EWMA (warm start: a made-up global mean/var of log-mels)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("rnnt"), request.param)


def make_tiny_model_dir(root, cmvn: str, **model_kw):
    """The model dir of :func:`tiny_model_dir` in ``root/final`` (``model_kw``: more
    TransducerConfig fields)."""
    from pykaldi2.features.ewma_norm import EwmaNormConfig
    from pykaldi2.features.extractors import FbankConfig
    from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
    from pykaldi2.lang.tokenizer import TokenizerConfig, train_tokenizer
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig
    from pykaldi2.training.model_dir import save_transducer_dir

    (root / "data").mkdir(parents=True)
    (root / "data/text").write_text("u1 ONE TWO THREE\nu2 FOUR FIVE SIX\nu3 SEVEN EIGHT NINE\n")
    tok = train_tokenizer([root / "data"], root / "tok", TokenizerConfig(vocab_size=20))
    ewma = EwmaNormConfig(alpha=0.02, mean=np.linspace(8, 12, 10), var=np.linspace(2, 4, 10))
    fe = TransducerFrontendConfig(
        cmvn=cmvn,
        sliding=SlidingCmnConfig(cmn_window=40, min_window=20),
        ewma=ewma,
        frame_stack=3,
    )
    torch.manual_seed(0)
    mcfg = TransducerConfig.preset(
        "tiny", in_feats=30, vocab_size=tok.vocab_size, enc_n_hid=24, pred_n_hid=8, **model_kw
    )
    model = Transducer(mcfg)
    with torch.no_grad():
        model.joiner.out.bias[0] -= 1.0  # fewer blanks: non-trivial transcripts
    fbank = FbankConfig(num_mel_bins=10).to_dict()
    save_transducer_dir(root / "final", model.state_dict(), mcfg, tok.model_file, fe, fbank)
    return root / "final"


def test_stream_equals_offline_on_an4(tiny_model_dir, an4_dir, one_thread, capsys):
    from pykaldi2.cli.main import main
    from pykaldi2.data.audio import read_audio
    from pykaldi2.features.extractors import config_from_dict, make_extractor

    bundle = load_transducer(tiny_model_dir)
    fe = bundle.frontend
    extractor = make_extractor(config_from_dict(bundle.features))
    files = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[:3]
    for f in files:
        x, sr = read_audio(str(f), target_sr=16000)
        raw = extractor.compute(x, sr)
        # offline: ProcessedFeatures' sliding CMN, or transform's EWMA over the whole utterance
        cmn = apply_cmvn_sliding(raw, fe.sliding) if fe.cmvn == "sliding" else raw
        feats = fe.transform(cmn)
        if fe.cmvn == "sliding":
            np.testing.assert_array_equal(feats, stack_frames(cmn, fe.frame_stack, 3))
        offline = transcribe_features(bundle, {"u": feats})["u"]
        assert len(offline) > 3  # the random model says something
        text = bundle.tokenizer.decode(offline)
        # audio in 0.1 s and 0.37 s chunks, and raw features in uneven chunks
        for chunk in (0.1, 0.37):
            assert list(stream_file(bundle, f, chunk_seconds=chunk))[-1] == text
        s = TransducerStream(bundle)
        rng = np.random.default_rng(0)
        for c in _chunks(raw, rng, max_len=13):
            s.accept_features(c)
        assert s.finish() == text and s.token_ids == offline
    assert main(["stream", "--quiet", str(tiny_model_dir), str(files[-1])]) == 0
    assert capsys.readouterr().out.strip() == text


def test_load_model_api(tiny_model_dir, an4_dir, one_thread, tmp_path):
    import pykaldi2.api as api

    f = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[0]
    bundle = load_transducer(tiny_model_dir)
    expected = list(stream_file(bundle, f))[-1]
    model = api.load_model(tiny_model_dir)
    assert model.transcribe([f]) == [expected]
    assert model([f]) == [expected] and model(f) == expected  # callable, as DeepSpeech-Keras'
    # an empty WAV is named before any file is decoded (#18 item 14), as for HCLG models
    import soundfile as sf

    from pykaldi2.utils.errors import DataError

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.int16), 16000)
    with pytest.raises(DataError, match="empty.wav: no audio to transcribe: 0 samples"):
        model.transcribe([f, empty])


def test_stream_int8(tiny_model_dir, an4_dir, one_thread, capsys):
    """``quantize=True`` / ``stream --int8``: LSTMs and Linears become dynamically quantized
    int8 modules; on this random tiny model the int8 encoder output stays within a few percent
    of fp32's and the transcripts agree on most tokens (int8 changes numerics, so not all;
    measured: 3% and 6% token differences on 570 tokens with the two front ends)."""
    from pykaldi2.cli.main import main
    from pykaldi2.data.audio import read_audio
    from pykaldi2.decoding.scoring import compute_wer

    bundle = load_transducer(tiny_model_dir)
    q = bundle.int8_model()
    assert q is bundle.int8_model()  # made once
    assert (
        type(q.encoder.pre_rnn).__name__ == "LSTM"
        and "quantized" in type(q.encoder.pre_rnn).__module__
    )
    assert "quantized" in type(q.joiner.out).__module__
    assert not hasattr(bundle.model.encoder.pre_rnn, "_packed_params")  # fp32 model untouched
    x = torch.randn(1, 40, bundle.model.cfg.in_feats, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = bundle.model.encoder(x, torch.tensor([40]))[0]
        got = q.encoder(x, torch.tensor([40]))[0]
    assert float((got - ref).norm() / ref.norm()) < 0.05
    files = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[:3]
    ids = {}
    for quantize in (False, True):
        for f in files:
            s = TransducerStream(bundle, quantize=quantize)
            s.accept_waveform(read_audio(str(f), target_sr=16000)[0], 16000)
            s.finish()
            ids[quantize, f.stem] = [str(i) for i in s.token_ids]
    stats = compute_wer(  # token error rate of int8 against fp32
        {f.stem: ids[False, f.stem] for f in files}, {f.stem: ids[True, f.stem] for f in files}
    )
    assert stats.num_words > 30 and stats.word_errs <= 0.2 * stats.num_words, stats.format()
    # dynamic quantization scales the activations per call, so int8 also depends on chunking:
    # the CLI's 0.32 s chunks against the same chunks through the API
    int8_text = list(stream_file(bundle, files[-1], quantize=True))[-1]
    assert main(["stream", "--quiet", "--int8", str(tiny_model_dir), str(files[-1])]) == 0
    assert capsys.readouterr().out.strip() == int8_text


class FakeSoundDevice:
    """The part of the ``sounddevice`` API that :func:`microphone_chunks` uses, playing
    ``samples`` (float32 in [-1, 1]) as the microphone; ``inputs=False``: no input device."""

    def __init__(self, samples: np.ndarray, inputs: bool = True) -> None:
        self.samples, self.inputs, self.blocks = samples, inputs, []

    def check_input_settings(self, device=None, channels=1, dtype="float32", samplerate=None):
        if not self.inputs:
            raise ValueError("No input device matching")

    def query_devices(self):
        return "  0 fake output, ALSA (0 in, 2 out)"

    def InputStream(self, samplerate, channels, dtype, blocksize, device):  # noqa: N802
        fake, pos = self, [0]

        class Stream:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def read(self, n):
                x = fake.samples[pos[0] : pos[0] + n]
                x = np.pad(x, (0, n - len(x)))  # silence after the recording
                pos[0] += n
                fake.blocks.append(n)
                return x[:, None].astype(np.float32), False

        return Stream()


def test_microphone_stream_equals_file_stream(tiny_model_dir, an4_dir, one_thread):
    from pykaldi2.data.audio import read_audio
    from pykaldi2.decoding.streaming import microphone_chunks, stream_chunks
    from pykaldi2.utils.errors import Pykaldi2Error

    bundle = load_transducer(tiny_model_dir)
    f = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[1]
    x, sr = read_audio(str(f), target_sr=16000)
    # the microphone delivers whole blocks: the recording, then silence up to the block end
    padded = np.pad(x, (0, -len(x) % 4000))
    chunks = [padded[i : i + 4000] for i in range(0, len(padded), 4000)]
    expected = list(stream_chunks(bundle, chunks, sr))[-1]
    assert len(expected) > 3
    fake = FakeSoundDevice(x / 32768.0)
    mic = microphone_chunks(sr, 0.25, max_seconds=len(x) / sr, backend=fake)
    assert list(stream_chunks(bundle, mic, sr))[-1] == expected
    assert set(fake.blocks) == {4000}
    with pytest.raises(Pykaldi2Error, match="(?s)no usable audio input device.*fake output"):
        next(microphone_chunks(sr, backend=FakeSoundDevice(x, inputs=False)))


def test_stream_cli_needs_exactly_one_source(tiny_model_dir, capsys):
    from pykaldi2.cli.main import main

    assert main(["stream", str(tiny_model_dir)]) == 2
    assert "FILE, - (standard input), --mic or --loopback" in capsys.readouterr().err
    assert main(["stream", "--mic", "--loopback", str(tiny_model_dir)]) == 2


def test_decode_transducer_from_audio_lists(tiny_model_dir, an4_dir, tmp_path, one_thread):
    """decode-transducer on a file list / JSON manifest (features computed from the audio):
    the offline greedy transcripts equal the streaming transcriber's; --dump-preds scores only
    the utterances with a transcript; --lm fuses a piece n-gram in beam search."""
    import json

    import pykaldi2.api as api
    from pykaldi2.cli.main import main

    files = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[:3]
    expected = api.load_model(tiny_model_dir).transcribe(files)
    flist = tmp_path / "files.lst"
    flist.write_text("".join(f"{f}\n" for f in files))
    out = tmp_path / "dec"
    assert main(["decode-transducer", str(tiny_model_dir), str(flist), str(out)]) == 0
    hyp = dict((ln + " ").split(" ", 1) for ln in (out / "hyp.txt").read_text().splitlines())
    assert [hyp[f.stem].strip() for f in files] == expected
    assert not (out / "wer").exists()  # no references
    manifest = [{"transcript": "ONE TWO", "files": [{"fname": str(files[0])}],
                 "original_duration": 1.0},
                {"files": [{"fname": str(files[1])}], "original_duration": 1.0}]  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    preds = tmp_path / "preds.txt"
    args = ["decode-transducer", "--dump-preds", str(preds), str(tiny_model_dir),
            str(tmp_path / "m.json"), str(tmp_path / "dec2")]  # fmt: skip
    assert main(args) == 0
    assert "Scored 1 sentences" in (tmp_path / "dec2/wer").read_text()
    assert (tmp_path / "preds.txt.wer").read_text() == (tmp_path / "dec2/wer").read_text()
    assert len(preds.read_text().splitlines()) == 2
    # shallow fusion with a piece LM of the tokenizer
    arpa = tmp_path / "tokens.arpa"
    text = tiny_model_dir.parent / "data" / "text"
    assert main(["train-lm", "--order", "3", "--skip-first-field", "--tokenizer",
                 str(tiny_model_dir / "tokenizer.model"), str(text), str(arpa)]) == 0  # fmt: skip
    lm_out = tmp_path / "dec_lm"
    assert main(["decode-transducer", "--beam", "3", "--lm", str(arpa), "--lm-weight", "0.5",
                 str(tiny_model_dir), str(flist), str(lm_out)]) == 0  # fmt: skip
    assert len((lm_out / "hyp.txt").read_text().splitlines()) == 3
    assert main(["decode-transducer", "--lm", str(arpa), str(tiny_model_dir), str(flist),
                 str(lm_out)]) == 2  # greedy search has no LM  # fmt: skip
    # a word LM: the hypotheses spell its words only; a piece LM is refused as a word LM
    words = tmp_path / "words.arpa"
    assert main(["train-lm", "--order", "2", "--skip-first-field", str(text), str(words)]) == 0
    w_out = tmp_path / "dec_words"
    assert main(["decode-transducer", "--beam", "3", "--lm-unit", "words", "--lm", str(words),
                 "--lm-weight", "0.5", "--symbol-bonus", "1.0", str(tiny_model_dir), str(flist),
                 str(w_out)]) == 0  # fmt: skip
    vocab = {w for ln in text.read_text().splitlines() for w in ln.split()[1:]}
    hyps = [ln.split()[1:] for ln in (w_out / "hyp.txt").read_text().splitlines()]
    assert any(hyps) and all(set(h[:-1]) <= vocab for h in hyps)
    # the last word may be unfinished only where no hypothesis of the beam ended in a word
    # (this random model emits a piece at almost every frame); it is a word's beginning
    assert all(any(v.startswith(h[-1]) for v in vocab) for h in hyps if h)
    # the same search through load_model(...).set_search and `transcribe`
    model = api.load_model(tiny_model_dir)
    model.set_search(beam=3, lm=words, lm_unit="words", lm_weight=0.5, symbol_bonus=1.0)
    assert [t.split() for t in model(files)] == hyps
    t_out = tmp_path / "t.txt"
    assert main(["transcribe", "--beam", "3", "--lm-unit", "words", "--lm", str(words),
                 "--lm-weight", "0.5", "--symbol-bonus", "1.0", "-o", str(t_out),
                 str(tiny_model_dir), *map(str, files)]) == 0  # fmt: skip
    assert [ln.split()[1:] for ln in t_out.read_text().splitlines()] == hyps
    assert main(["transcribe", "--lm", str(words), str(tiny_model_dir), str(files[0])]) == 2
    model.set_search()  # back to streaming greedy search
    assert model(files) == expected
    assert main(["decode-transducer", "--beam", "3", "--lm-unit", "words", "--lm", str(arpa),
                 str(tiny_model_dir), str(flist), str(w_out)]) == 1  # fmt: skip
    multi = tmp_path / "dec_multi"  # beam search with up to 2 symbols per frame
    assert main(["decode-transducer", "--beam", "3", "--max-sym-per-frame", "2",
                 str(tiny_model_dir), str(flist), str(multi)]) == 0  # fmt: skip
    assert len((multi / "hyp.txt").read_text().splitlines()) == 3
    assert main(["decode-transducer", "--beam", "3", "--max-sym-per-frame", "0",
                 str(tiny_model_dir), str(flist), str(multi)]) == 2  # fmt: skip


def test_bidirectional_model_decodes_offline_only(an4_dir, tmp_path, one_thread):
    """A bidirectional encoder: load_model transcribes whole files (= decode-transducer on the
    same audio); stream and export-onnx refuse it with a clear error."""
    import pykaldi2.api as api
    from pykaldi2.cli.main import main
    from pykaldi2.export.onnx import export_onnx
    from pykaldi2.utils.errors import DataError

    md = make_tiny_model_dir(tmp_path, "sliding", enc_bidirectional=True)
    files = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[:2]
    texts = api.load_model(md)(files)
    flist = tmp_path / "files.lst"
    flist.write_text("".join(f"{f}\n" for f in files))
    assert main(["decode-transducer", str(md), str(flist), str(tmp_path / "dec")]) == 0
    hyp = dict(
        (ln + " ").split(" ", 1) for ln in (tmp_path / "dec/hyp.txt").read_text().splitlines()
    )
    assert [hyp[f.stem].strip() for f in files] == texts and any(texts)
    with pytest.raises(DataError, match="bidirectional.*cannot stream"):
        TransducerStream(load_transducer(md))
    assert main(["stream", str(md), str(files[0])]) == 1
    with pytest.raises(DataError, match="bidirectional"):
        export_onnx(md, tmp_path / "onnx")


class FakeSoundCard:
    """The parts of the ``soundcard`` module that loopback_chunks uses: devices (a microphone
    and, with ``loopback``, the monitor of the default speaker) whose recorder plays
    ``samples`` (float in [-1, 1]) and then silence."""

    def __init__(self, samples, loopback=True):
        self.samples, self.blocks, self.rates = samples, [], []
        fake = self

        class Mic:
            def __init__(self, name, isloopback):
                self.name, self.id, self.isloopback = name, name.lower(), isloopback

            def recorder(self, samplerate, channels, blocksize):
                fake.rates.append((samplerate, channels, blocksize))
                pos = [0]

                class Rec:
                    def __enter__(self):
                        return self

                    def __exit__(self, *exc):
                        return False

                    def record(self, numframes):
                        x = fake.samples[pos[0] : pos[0] + numframes]
                        pos[0] += numframes
                        fake.blocks.append(numframes)
                        return np.pad(x, (0, numframes - len(x)))[:, None]

                return Rec()

        self.mics = [Mic("Built-in Microphone", False)]
        if loopback:
            self.mics.append(Mic("Monitor of Built-in Speakers", True))

    def all_microphones(self, include_loopback=False):
        return [m for m in self.mics if include_loopback or not m.isloopback]

    def default_speaker(self):
        class Speaker:
            name = "Built-in Speakers"

        return Speaker()


def test_loopback_stream_equals_file_stream(tiny_model_dir, an4_dir, one_thread):
    from pykaldi2.data.audio import read_audio
    from pykaldi2.data.stream_input import loopback_chunks
    from pykaldi2.decoding.streaming import stream_chunks
    from pykaldi2.utils.errors import Pykaldi2Error

    bundle = load_transducer(tiny_model_dir)
    f = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[2]
    x, sr = read_audio(str(f), target_sr=16000)
    padded = np.pad(x, (0, -len(x) % 4000))
    expected = list(stream_chunks(bundle, [padded[i : i + 4000] for i in range(0, len(padded),
                                                                              4000)], sr))[-1]  # fmt: skip
    assert len(expected) > 3
    fake = FakeSoundCard(x / 32768.0)
    live = loopback_chunks(sr, 0.25, max_seconds=len(x) / sr, backend=fake)
    assert list(stream_chunks(bundle, live, sr))[-1] == expected
    assert fake.rates == [(16000, 1, 4000)] and set(fake.blocks) == {4000}
    with pytest.raises(Pykaldi2Error, match="(?s)no loopback device.*Built-in Microphone"):
        next(loopback_chunks(sr, backend=FakeSoundCard(x, loopback=False)))
    with pytest.raises(Pykaldi2Error, match="no loopback device 'HDMI'"):
        next(loopback_chunks(sr, device="HDMI", backend=fake))


@pytest.mark.parametrize("form", ["wav", "wav-stream", "raw", "raw-stereo"])
def test_stream_from_stdin(tiny_model_dir, an4_dir, form, one_thread, monkeypatch, capsys):
    """`pykaldi2 stream MODEL -`: a WAV (with its data size, or streamed with an unknown size
    as ffmpeg writes to a pipe) or raw s16le samples on standard input give the transcript of
    the same audio streamed from the file."""
    import io
    import struct
    import subprocess
    import sys

    import soundfile as sf

    from pykaldi2.cli.main import main
    from pykaldi2.data.stream_input import pcm_chunks
    from pykaldi2.utils.errors import DataError

    f = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[0]
    x, sr = sf.read(f, dtype="int16")
    bundle = load_transducer(tiny_model_dir)
    expected = list(stream_file(bundle, f))[-1]
    if form.startswith("wav"):
        buf = io.BytesIO()
        sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
        data = buf.getvalue()
        if form == "wav-stream":
            data = data[:4] + struct.pack("<I", 0xFFFFFFFF) + data[8:40] + b"\xff" * 4 + data[44:]
        args = []
    else:
        pcm = np.stack([x, -x], 1) if form == "raw-stereo" else x
        data = pcm.astype("<i2").tobytes()
        args = ["--channels", "2"] if form == "raw-stereo" else []
    argv = ["stream", "--quiet", *args, str(tiny_model_dir), "-"]
    if form == "wav-stream" and bundle.frontend.cmvn == "sliding":  # once through a real pipe
        out = subprocess.run([sys.executable, "-m", "pykaldi2.cli.main", *argv], input=data,
                             capture_output=True, check=True)  # fmt: skip
        assert out.stdout.decode().strip() == expected
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == expected
    got = np.concatenate(list(pcm_chunks(io.BytesIO(data), 16000, 0.1, 2 if args else 1)))
    assert np.array_equal(got, x.astype(np.float32))
    if form == "wav":
        with pytest.raises(DataError, match="8000 Hz WAV stream, the model takes 16000"):
            buf = io.BytesIO()
            sf.write(buf, x, 8000, format="WAV", subtype="PCM_16")
            buf.seek(0)
            next(pcm_chunks(buf, 16000))
        with pytest.raises(DataError, match="only 16-bit PCM"):
            buf = io.BytesIO()
            sf.write(buf, x / 32768.0, sr, format="WAV", subtype="FLOAT")
            buf.seek(0)
            next(pcm_chunks(buf, 16000))


def test_mel_stats_equal_kaldis_global_cmvn_stats(kaldi_reference_dir, tmp_path):
    """compute-mel-stats on real Kaldi MFCCs (kaldi_reference AN4 train) = the sum of the
    per-speaker stats real Kaldi's compute-cmvn-stats wrote (cmvn.ark), in a Kaldi double
    matrix."""
    import kaldiio

    from pykaldi2.cli.main import main
    from pykaldi2.features.ewma_norm import read_global_stats, stats_mean_var

    train = kaldi_reference_dir / "an4/data/train"
    out = tmp_path / "stats.mat"
    # its feats.scp holds paths relative to the Kaldi recipe: read the archive itself
    assert main(["compute-mel-stats", str(train / "feats.ark"), str(out)]) == 0
    kaldi = sum(np.asarray(m, np.float64) for _, m in kaldiio.load_ark(str(train / "cmvn.ark")))
    ours = read_global_stats(out)
    np.testing.assert_allclose(ours, kaldi, rtol=1e-6)
    assert out.read_bytes()[:5] == b"\0BDM "  # Kaldi's binary double matrix, as Kaldi writes
    mean, var = stats_mean_var(ours)
    assert mean.shape == (13,) and (var > 0).all()
    args = ["compute-mel-stats", "--max-utts", "10", str(train / "feats.ark"), str(tmp_path / "s")]
    assert main(args) == 0
    assert read_global_stats(tmp_path / "s")[0, -1] < ours[0, -1]


def test_global_normalization_streams_exactly(an4_dir, tmp_path, one_thread):
    """cmvn: global (Myrtle's dataset-stats normalization): (x - mean) / sqrt(var), streamed
    chunk by chunk = offline."""
    from pykaldi2.data.audio import read_audio
    from pykaldi2.features.extractors import config_from_dict, make_extractor

    md = make_tiny_model_dir(tmp_path, "global")
    bundle = load_transducer(md)
    fe = bundle.frontend
    f = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[1]
    x, sr = read_audio(str(f), target_sr=16000)
    raw = make_extractor(config_from_dict(bundle.features)).compute(x, sr)
    mean, var = np.array(fe.ewma.mean), np.array(fe.ewma.var)
    np.testing.assert_allclose(
        fe.transform(raw), stack_frames(((raw - mean) / np.sqrt(var)).astype(np.float32), 3, 3),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip
    offline = bundle.tokenizer.decode(transcribe_features(bundle, {"u": fe.transform(raw)})["u"])
    assert len(offline) > 3
    for chunk in (0.1, 0.37):
        assert list(stream_file(bundle, f, chunk_seconds=chunk))[-1] == offline


def test_ewma_carry_over_between_files(an4_dir, tmp_path, one_thread):
    """ewma.carry_over: the second file starts from the EWMA state the first ended in (as one
    stream would); without it from the warm start. Offline decode-transducer does the same in
    utterance order."""
    import dataclasses

    import yaml

    import pykaldi2.api as api
    from pykaldi2.cli.main import main
    from pykaldi2.utils.checksums import write_checksums

    md = make_tiny_model_dir(tmp_path / "reset", "ewma")
    files = sorted((an4_dir / "flac/an4test_clstk/fcaw").glob("*.flac"))[:3]
    reset = api.load_model(md).transcribe(files)
    bundle = load_transducer(md)
    first = TransducerStream(bundle)
    first.accept_waveform(read_flac(files[0]), 16000)
    first.finish()
    second = TransducerStream(bundle, norm_state=first.norm_state)
    second.accept_waveform(read_flac(files[1]), 16000)
    carried_by_hand = second.finish()
    # the same model dir with carry_over in its front end config
    carry = tmp_path / "carry"
    import shutil

    shutil.copytree(md, carry)
    meta = yaml.safe_load((carry / "model.yaml").read_text())
    meta["configs"]["frontend"]["ewma"]["carry_over"] = True
    (carry / "model.yaml").write_text(yaml.safe_dump(meta))
    write_checksums(carry)  # an edited model dir is re-signed (else its checksum check fails)
    carried = api.load_model(carry).transcribe(files)
    assert carried[0] == reset[0] and carried[1] == carried_by_hand
    assert carried != reset  # alpha 0.02: the state moves within a file
    flist = tmp_path / "files.lst"
    flist.write_text("".join(f"{f}\n" for f in files))
    assert main(["decode-transducer", str(carry), str(flist), str(tmp_path / "dec")]) == 0
    hyp = dict(
        (ln + " ").split(" ", 1) for ln in (tmp_path / "dec/hyp.txt").read_text().splitlines()
    )
    assert [hyp[f.stem].strip() for f in files] == carried
    assert dataclasses.fields(bundle.frontend.ewma)  # a dataclass, saved with the model


def read_flac(path):
    from pykaldi2.data.audio import read_audio

    return read_audio(str(path), target_sr=16000)[0]
