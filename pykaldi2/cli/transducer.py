"""``pykaldi2 train-transducer | decode-transducer | stream | export-onnx | decode-onnx``:
RNN-Transducers (Myrtle's RNN-T recipe: sentencepiece targets, LSTM encoder/predictor,
streaming decoding)."""

from __future__ import annotations

import argparse
import sys


def _cmd_train(args: argparse.Namespace) -> int:
    from pykaldi2.training.transducer import TrainTransducerConfig, train_transducer

    cfg = TrainTransducerConfig.load(args.config, overrides=args.override or [])
    final = train_transducer(cfg, args.exp_dir)
    print(f"{args.exp_dir}: model dir {final}")
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from pykaldi2.cli.decoder_args import transducer_search_error
    from pykaldi2.decoding.streaming import decode_transducer

    problem = transducer_search_error(args)
    if problem:
        print(f"pykaldi2 decode-transducer: {problem}", file=sys.stderr)
        return 2
    stats = decode_transducer(
        args.model_dir,
        args.data_dir,
        args.out_dir,
        beam=args.beam,
        batch_size=args.batch_size,
        device=args.device,
        dump_preds=args.dump_preds,
        lm=args.lm,
        lm_weight=args.lm_weight,
        symbol_bonus=args.symbol_bonus,
        max_sym_per_frame=args.max_sym_per_frame,
        lm_unit=args.lm_unit,
    )
    print(stats.format() if stats is not None else f"{args.out_dir}/hyp.txt written\n", end="")
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    from pykaldi2.decoding.streaming import (
        load_transducer,
        microphone_chunks,
        stream_chunks,
        stream_file,
    )

    sources = [args.file is not None, args.mic, args.loopback]
    if sum(sources) != 1:
        print("pykaldi2 stream: give an audio FILE, - (standard input), --mic or --loopback "
              "(exactly one)", file=sys.stderr)  # fmt: skip
        return 2
    bundle = load_transducer(args.model_dir)
    sr = int(float(bundle.features.get("sample_frequency", 16000)))
    last = ""
    if args.mic or args.loopback:
        device = int(args.device) if args.device and args.device.isdigit() else args.device
        if args.mic:
            live = microphone_chunks(sr, args.chunk_seconds, device, args.seconds)
        else:
            from pykaldi2.data.stream_input import loopback_chunks

            live = loopback_chunks(sr, args.chunk_seconds, args.device, args.seconds)
        if not args.quiet:
            what = "listening" if args.mic else "recording what the machine plays"
            print(f"{what} (Ctrl-C to stop)...", file=sys.stderr, flush=True)
        chunks = stream_chunks(bundle, _until_interrupted(live), sr, quantize=args.int8)
    elif args.file == "-":
        from pykaldi2.data.stream_input import pcm_chunks

        pcm = pcm_chunks(sys.stdin.buffer, sr, args.chunk_seconds, args.channels)
        chunks = stream_chunks(bundle, _until_interrupted(pcm), sr, quantize=args.int8)
    else:
        chunks = stream_file(
            bundle, args.file, chunk_seconds=args.chunk_seconds, quantize=args.int8
        )
    for text in chunks:
        if text != last and not args.quiet:
            print(f"partial: {text}", file=sys.stderr, flush=True)
        last = text
    print(last)
    return 0


def _until_interrupted(chunks):
    """The chunks until Ctrl-C: the stream then ends normally (final transcript printed)."""
    try:
        yield from chunks
    except KeyboardInterrupt:
        return


def _cmd_mel_stats(args: argparse.Namespace) -> int:
    from pykaldi2.features.cmvn import acc_cmvn_stats
    from pykaldi2.features.ewma_norm import stats_mean_var, write_global_stats
    from pykaldi2.features.storage import open_features
    from pykaldi2.utils.log import progress

    def frames():
        n = 0
        for d in args.data_dirs:
            feats = open_features(d)
            for utt in sorted(feats):
                if args.max_utts and n >= args.max_utts:
                    return
                n += 1
                yield feats[utt]

    stats = acc_cmvn_stats(progress(frames(), desc="mel stats", unit="utt"))
    write_global_stats(stats, args.out)
    mean, var = stats_mean_var(stats)
    print(f"{args.out}: {int(stats[0, -1])} frames, dim {len(mean)}, mean {mean.mean():.3f} "
          f"(per-bin {mean.min():.3f}..{mean.max():.3f}), variance {var.min():.3f}.."
          f"{var.max():.3f}")  # fmt: skip
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from pykaldi2.export.onnx import export_onnx

    out = export_onnx(args.model_dir, args.out_dir, opset=args.opset)
    print(f"{out}: encoder.onnx, predictor.onnx, joiner.onnx, tokenizer.model, onnx.yaml")
    return 0


def _cmd_decode_onnx(args: argparse.Namespace) -> int:
    from pykaldi2.decoding.scoring import compute_wer, read_text
    from pykaldi2.decoding.streaming import frontend_features, write_hyp
    from pykaldi2.export.onnx import OnnxTransducer
    from pykaldi2.features.transducer_frontend import TransducerFrontendConfig
    from pykaldi2.utils.io import atomic_write_text
    from pykaldi2.utils.log import progress

    m = OnnxTransducer(args.onnx_dir, threads=args.threads)
    fe = TransducerFrontendConfig.from_dict(m.meta["frontend"])
    feats = frontend_features(fe, args.data_dir, m.config.in_feats)
    hyp = {
        u: m.tokenizer.decode(m.greedy(m.encode(x))).split() if len(x) else []
        for u, x in progress(sorted(feats.items()), desc="onnxruntime", unit="utt")
    }
    stats = write_hyp(hyp, args.data_dir, args.out_dir)
    if stats is not None:
        print(stats.format(), end="")
    if args.compare:
        other = read_text(args.compare)
        cmp = compute_wer(other, hyp, mode="present")
        differ = sorted(u for u in hyp if hyp[u] != other.get(u))
        line = (
            f"onnxruntime vs {args.compare}: {len(hyp) - len(differ)}/{len(hyp)} transcripts "
            f"equal, {cmp.word_errs} word differences"
            + (f" (first differing: {', '.join(differ[:5])})" if differ else "")
        )
        atomic_write_text(f"{args.out_dir}/compare", line + "\n")
        print(line)
    return 0


def register(subparsers) -> None:
    from pykaldi2.cli.decoder_args import add_transducer_search_args

    p = subparsers.add_parser(
        "train-transducer",
        help="train an LSTM RNN-Transducer on fbank features with sentencepiece targets",
        description="Trains a sentencepiece tokenizer on the training text (EXP_DIR/tokenizer), "
        "then an RNN-T with the shared trainer (AMP, grad accumulation, warmup/hold/exp-decay "
        "LR, EMA weights, SpecAugment, length bucketing; torchrun/horovodrun). Utterances with "
        "more tokens than encoder frames, without text, or with characters the tokenizer cannot "
        "encode (tokenizer.on_unknown: skip) are skipped and counted in EXP_DIR/log/skipped.json. "
        "Resumes from EXP_DIR/checkpoints. Writes the model dir EXP_DIR/final.",
        epilog="example: pykaldi2 train-transducer --config egs/an4/conf/transducer.yaml "
        "--override trainer.max_epochs=2 exp/rnnt",
    )
    p.add_argument("--config", required=True, help="YAML config (see egs/an4/conf/transducer.yaml)")
    p.add_argument(
        "--override",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value; dotted keys, YAML values (repeatable), "
        "e.g. trainer.lr=5e-4 or model_size=tiny",
    )
    p.add_argument("exp_dir", help="output experiment dir, e.g. exp/rnnt")
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser(
        "decode-transducer",
        help="decode a data dir, manifest or file list with a transducer model dir",
        description="Runs the encoder on whole utterances and greedy search (--beam 1, "
        "batched) or modified beam search, optionally with shallow fusion of a piece n-gram "
        "(--lm, trained with `train-lm --tokenizer MODEL_DIR/tokenizer.model`); writes "
        "OUT_DIR/hyp.txt and, where references exist, OUT_DIR/wer (Kaldi's compute-wer "
        "format, over the utterances that have one). DATA is a data dir with feats.scp (the "
        "model's raw features) or audio to compute them from: a data dir without feats.scp, a "
        "Myrtle JSON manifest, WebDataset shards or a file list. --dump-preds FILE also writes "
        "the predictions there (and FILE.wer), as `transcribe --dump-preds`.",
        epilog="example: pykaldi2 decode-transducer --beam 4 --lm exp/rnnt/lm/tokens4.arpa "
        "--lm-weight 0.3 exp/rnnt/final data/dev_fbank exp/rnnt/decode_dev_lm0.3",
    )
    p.add_argument("model_dir", help="EXP_DIR/final of train-transducer")
    p.add_argument("data_dir", metavar="data", help="data dir (feats.scp or wav.scp), manifest, "
                   "shards or file list")  # fmt: skip
    p.add_argument("out_dir", help="output dir, e.g. exp/rnnt/decode_test")
    add_transducer_search_args(p)
    p.add_argument("--dump-preds", metavar="FILE", help="also write the predictions to FILE")
    p.add_argument("--batch-size", type=int, default=16, help="utterances per encoder batch")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.set_defaults(func=_cmd_decode)

    p = subparsers.add_parser(
        "stream",
        help="streaming recognition of a file, standard input, a microphone or what the "
        "machine plays",
        description="Feeds FILE, standard input (FILE = -: 16-bit PCM WAV, or raw s16le "
        "samples at the model's rate), the microphone (--mic) or a loopback device (--loopback: "
        "what the machine plays) to the model in chunks (streaming fbank, the model's "
        "streaming normalization, frame stacking, encoder with carried LSTM states, greedy "
        "search with a carried predictor state), prints the partial transcripts on stderr as "
        "they change and the final one on stdout. --mic needs the sounddevice package and "
        "PortAudio (pip install 'pykaldi2[mic]'; apt-get install libportaudio2); --loopback the "
        "soundcard package (pip install 'pykaldi2[loopback]') and a sound server with a "
        "loopback/monitor source; both run until Ctrl-C or --seconds, standard input until it "
        "ends.",
        epilog="example: ffmpeg -i URL -f s16le -ac 1 -ar 16000 - | pykaldi2 stream "
        "exp/rnnt/final -",
    )
    p.add_argument("model_dir", help="EXP_DIR/final of train-transducer")
    p.add_argument("file", nargs="?", help="audio file (wav, flac, ...), or - for stdin")
    p.add_argument("--mic", action="store_true", help="listen to a microphone instead of FILE")
    p.add_argument("--loopback", action="store_true",
                   help="record what the machine plays (a loopback device) instead of FILE")  # fmt: skip
    p.add_argument(
        "--device", default=None,
        help="--mic: input device index or name; --loopback: loopback device name (default: "
        "the system's)",
    )  # fmt: skip
    p.add_argument(
        "--seconds", type=float, default=None, help="--mic/--loopback: stop after this long"
    )
    p.add_argument("--channels", type=int, default=1,
                   help="raw PCM on stdin: interleaved channels (channel 0 is decoded)")  # fmt: skip
    p.add_argument("--chunk-seconds", type=float, default=0.32, help="default: %(default)s")
    p.add_argument("--quiet", action="store_true", help="print only the final transcript")
    p.add_argument(
        "--int8",
        action="store_true",
        help="dynamic int8 quantization of the LSTMs and Linears (faster on CPU; the "
        "transcript may differ slightly from fp32's)",
    )
    p.set_defaults(func=_cmd_stream)

    p = subparsers.add_parser(
        "compute-mel-stats",
        help="global mean/variance stats of a data dir's features (seed of the RNN-T's "
        "streaming normalization)",
        description="Myrtle's generate_mel_stats / Kaldi's `compute-cmvn-stats scp:feats.scp "
        "OUT` (global, no --spk2utt): the (2, F + 1) CMVN stats (per-bin sums, sums of squares, "
        "frame count) of the raw features of DATA_DIRs (feats.scp, or the first --max-utts "
        "utterances in sorted order), written as one Kaldi binary matrix. A train-transducer "
        "config takes it as frontend.ewma.stats_file, the warm start of `cmvn: ewma` or the "
        "static `cmvn: global` normalization (else train-transducer computes the same stats "
        "over all training utterances).",
        epilog="example: pykaldi2 compute-mel-stats data/train_fbank exp/mel_stats.mat",
    )
    p.add_argument("data_dirs", nargs="+", help="data dirs with feats.scp (or .scp, .ark, .h5)")
    p.add_argument("out", help="output stats matrix file")
    p.add_argument("--max-utts", type=int, default=0, help="use only this many utterances")
    p.set_defaults(func=_cmd_mel_stats)

    p = subparsers.add_parser(
        "decode-onnx",
        help="decode a data dir with an exported ONNX transducer (onnxruntime greedy search)",
        description="Greedy decoding of DATA_DIR (feats.scp of the model's raw features, through "
        "the exported front end) with the encoder/predictor/joiner of `pykaldi2 export-onnx` "
        "on onnxruntime; writes OUT_DIR/hyp.txt and OUT_DIR/wer (with DATA_DIR/text). With "
        "--compare HYP (e.g. the decode-transducer hyp.txt of the same model) it counts the "
        "transcripts that equal PyTorch's and writes OUT_DIR/compare.",
    )
    p.add_argument("onnx_dir", help="OUT_DIR of export-onnx")
    p.add_argument("data_dir", help="data dir with feats.scp (and text for scoring)")
    p.add_argument("out_dir", help="output dir, e.g. exp/rnnt/decode_test_onnx")
    p.add_argument("--compare", metavar="HYP", help="a hyp.txt to compare the transcripts with")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.set_defaults(func=_cmd_decode_onnx)

    p = subparsers.add_parser(
        "export-onnx",
        help="export a transducer model dir to ONNX (encoder, predictor, joiner with states)",
        description="Writes OUT_DIR/{encoder,predictor,joiner}.onnx with LSTM states as inputs "
        "and outputs, the tokenizer and onnx.yaml (front end, sizes); checked by decoding a "
        "random input with onnxruntime and PyTorch. Needs `pip install onnx onnxruntime`.",
    )
    p.add_argument("model_dir", help="EXP_DIR/final of train-transducer")
    p.add_argument("out_dir", help="output dir")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    p.set_defaults(func=_cmd_export_onnx)
