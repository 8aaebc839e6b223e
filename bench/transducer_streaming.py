"""Streaming RNN-T real-time factor on one CPU core, Myrtle "testing"-size model (46M params).

Feeds AN4 test audio in 0.32 s chunks through :class:`pykaldi2.decoding.streaming.TransducerStream`
(streaming fbank 80 bins, sliding CMN, 3x3 frame stacking, encoder with carried LSTM states,
greedy search with a carried predictor state), fp32 and int8 side by side: the shipped option
``TransducerStream(bundle, quantize=True)`` / ``pykaldi2 stream --int8`` (torch dynamic
quantization of the LSTMs and Linears, :func:`pykaldi2.decoding.streaming.quantize_int8`). The weights
are random (untrained): with ``--blank-bias 0`` the model emits about 50 symbols per second,
10x more than speech has, so the search cost is an upper bound; a large bias (e.g. 4) emits none
and measures the encoder and front end alone.

    python bench/transducer_streaming.py [--seconds 20] [--chunk 0.32] [--blank-bias 0]

Prints the machine, the model size, the emitted symbols per second and the RTF
(processing time / audio duration; target <= 0.1).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pykaldi2.data.audio import read_audio
from pykaldi2.decoding.scoring import compute_wer
from pykaldi2.decoding.streaming import TransducerBundle, TransducerStream
from pykaldi2.features.extractors import FbankConfig
from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
from pykaldi2.nnet.transducer import Transducer, TransducerConfig

AN4 = Path(__file__).resolve().parents[1].parent / "shared/data/an4/flac/an4test_clstk"


class _IdsTokenizer:
    """Stands in for a 1023-piece sentencepiece model (AN4's text is too small to train one)."""

    def decode(self, ids):
        return " ".join(map(str, ids))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="audio to decode")
    ap.add_argument("--chunk", type=float, default=0.32, help="chunk length in seconds")
    ap.add_argument("--blank-bias", type=float, default=0.0)
    ap.add_argument("--size", default="testing", help="model preset")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TransducerConfig.preset(args.size)
    model = Transducer(cfg).eval()
    with torch.no_grad():
        model.joiner.out.bias[cfg.blank] += args.blank_bias
    audio = []
    for f in sorted(AN4.rglob("*.flac")):
        audio.append(read_audio(str(f), target_sr=16000)[0])
        if sum(map(len, audio)) >= args.seconds * 16000:
            break
    x = np.concatenate(audio)[: int(args.seconds * 16000)]
    dur = len(x) / 16000
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch {torch.__version__}, 1 thread")  # fmt: skip
    print(f"model: {args.size}: {model.summary()}")
    print(f"audio: {dur:.1f} s of AN4 test in {args.chunk} s chunks, blank bias {args.blank_bias}")
    rtf, ids = {}, {}
    bundle = _bundle(model, cfg)
    for name, quantize in (("fp32", False), ("int8", True)):
        elapsed, ids[name] = _run(bundle, quantize, x, args.chunk)
        rtf[name] = elapsed / dur
        print(f"{name}: streaming RTF {rtf[name]:.3f} ({elapsed:.2f} s); "
              f"{len(ids[name])} symbols ({len(ids[name]) / dur:.1f}/s)")  # fmt: skip
    ter = compute_wer({"a": list(map(str, ids["fp32"]))}, {"a": list(map(str, ids["int8"]))})
    print(f"int8 / fp32 time: {rtf['int8'] / rtf['fp32']:.2f}; int8 symbols against fp32's: "
          f"{ter.format().splitlines()[0].replace('WER', 'symbol error rate')}")  # fmt: skip


def _bundle(model, cfg) -> TransducerBundle:
    fe = TransducerFrontendConfig()
    return TransducerBundle(
        model=model,
        tokenizer=_IdsTokenizer(),
        frontend=fe,
        features=FbankConfig(num_mel_bins=cfg.in_feats // fe.frame_stack).to_dict(),
        max_symbols_per_frame=3,
        model_dir=None,
    )


def _run(bundle, quantize: bool, x: np.ndarray, chunk: float) -> tuple[float, list[int]]:
    step = int(chunk * 16000)
    # warm-up, not timed (it also makes and caches the int8 model)
    TransducerStream(bundle, quantize).accept_waveform(x[: 4 * step], 16000)
    stream = TransducerStream(bundle, quantize)
    t0 = time.perf_counter()
    for i in range(0, len(x), step):
        stream.accept_waveform(x[i : i + step], 16000)
    stream.finish()
    return time.perf_counter() - t0, stream.token_ids


if __name__ == "__main__":
    main()
