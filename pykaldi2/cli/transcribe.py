"""``pykaldi2 transcribe | export-gmm-model | export-hybrid-model | export-chain-model``: the
model directory and the transcription API on the command line (see :mod:`pykaldi2.api`)."""

from __future__ import annotations

import argparse
import sys


def _cmd_transcribe(args: argparse.Namespace) -> int:
    import tempfile

    from pykaldi2.api import load_model
    from pykaldi2.cli.decoder_args import transducer_search_error
    from pykaldi2.data.manifests import items_from_inputs
    from pykaldi2.decoding.scoring import read_text
    from pykaldi2.utils.io import atomic_write_text

    problem = transducer_search_error(args)
    if problem:
        print(f"pykaldi2 transcribe: {problem}", file=sys.stderr)
        return 2
    model = load_model(args.model_dir)
    if args.beam > 1 or args.lm or args.symbol_bonus or args.max_sym_per_frame != 1:
        if not hasattr(model, "set_search"):
            print(f"pykaldi2 transcribe: the transducer search options are for transducer "
                  f"models; {args.model_dir} is a {model.model_dir.kind} model (its decoder "
                  "settings are in its model dir)", file=sys.stderr)  # fmt: skip
            return 2
        model.set_search(beam=args.beam, lm=args.lm, lm_unit=args.lm_unit,
                         lm_weight=args.lm_weight, symbol_bonus=args.symbol_bonus,
                         max_sym_per_frame=args.max_sym_per_frame)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pykaldi2-transcribe-") as tmp:
        # shards are read once, their audio written to tmp while transcribing
        items = items_from_inputs(args.inputs, data_root=args.data_root, extract_to=tmp)
        texts = model.transcribe([it.audio for it in items])
    lines = "".join(f"{it.key} {t}".rstrip() + "\n" for it, t in zip(items, texts))
    if args.output:
        atomic_write_text(args.output, lines)
    elif not args.dump_preds:
        sys.stdout.write(lines)
    if args.dump_preds:
        from pykaldi2.decoding.preds import write_preds

        refs = {it.key: it.text.split() for it in items if it.text is not None}
        if args.ref:
            refs.update(read_text(args.ref))
        hyp = {it.key: t.split() for it, t in zip(items, texts)}
        stats = write_preds(args.dump_preds, hyp, refs, {it.key: it.audio for it in items})
        scored = f"{stats.num_sent} of {len(hyp)}" if stats is not None else "none"
        print(f"{args.dump_preds}: {len(hyp)} predictions; utterances with a reference: {scored}")
        if stats is not None:
            print(stats.wer_line())
    return 0


def _cmd_export_gmm(args: argparse.Namespace) -> int:
    from pykaldi2.api import save_gmm_model
    from pykaldi2.cli.decoder_args import decoder_config
    from pykaldi2.features.compute import load_feature_config

    decoder = decoder_config(args)
    md = save_gmm_model(
        args.out_dir,
        args.model,
        args.graph_dir,
        load_feature_config(args.data).to_dict(),
        norm_vars=args.norm_vars,
        decoder=decoder.to_dict(),
        overwrite=args.overwrite,
    )
    print(f"{md.path}: {md.kind} model, files {', '.join(sorted(md.files))}")
    return 0


def _cmd_export_hybrid(args: argparse.Namespace) -> int:
    from pykaldi2.api import save_hybrid_model
    from pykaldi2.cli.decoder_args import decoder_config

    md = save_hybrid_model(
        args.out_dir,
        args.nnet_dir,
        args.graph_dir,
        decoder=decoder_config(args).to_dict(),
        nnet_compute={"prior_scale": args.prior_scale, "mode": args.mode},
        overwrite=args.overwrite,
    )
    print(f"{md.path}: {md.kind} model, files {', '.join(sorted(md.files))}")
    return 0


def _cmd_export_chain(args: argparse.Namespace) -> int:
    from pykaldi2.api import save_chain_model
    from pykaldi2.cli.decoder_args import decoder_config

    md = save_chain_model(
        args.out_dir,
        args.chain_dir,
        args.graph_dir,
        decoder=decoder_config(args).to_dict(),
        mode=args.mode,
        overwrite=args.overwrite,
    )
    print(f"{md.path}: {md.kind} model, files {', '.join(sorted(md.files))}")
    return 0


def register(subparsers) -> None:
    """Add ``transcribe`` and the ``export-*-model`` commands to ``pykaldi2``."""
    from pykaldi2.cli.decoder_args import add_decoder_args, add_transducer_search_args

    p = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files, data dirs, manifests or file lists with a model directory",
        description="Transcribe audio (any format soundfile reads; resampled to the model's "
        "rate) with a model directory (export-gmm-model, export-hybrid-model, "
        "export-chain-model or train-transducer's final/). INPUTS are audio files, Kaldi data "
        "dirs (wav.scp, text), Myrtle JSON manifests (.json), WebDataset shards (.tar, .tar.gz: "
        "<key>.flac + <key>.txt) or file lists (one audio path per line). Prints one Kaldi "
        "`text` line per utterance (the key - the file stem - then the words). With "
        "--dump-preds FILE the predictions go to FILE (text lines, or a JSON list with "
        "per-utterance WER for FILE.json) and the WER over the utterances that have a "
        "reference (data dir text, manifest transcripts, shard .txt, --ref) is printed and "
        "written to FILE.wer; utterances without one are not scored.",
        epilog="example: pykaldi2 transcribe --dump-preds preds.txt exp/rnnt/final data/test_fbank",
    )
    p.add_argument("model_dir", help="the model directory (with model.yaml)")
    p.add_argument("inputs", nargs="+", help="audio files, data dirs, manifests, shards, lists")
    p.add_argument("-o", "--output", help="write the lines to this file instead of stdout")
    p.add_argument("--dump-preds", metavar="FILE", help="write the predictions (and FILE.wer)")
    p.add_argument("--ref", metavar="TEXT", help="references (a Kaldi text file by key)")
    p.add_argument(
        "--data-root", help="folder the fname paths of JSON manifests are relative to "
        "(default: the manifest's folder)",
    )  # fmt: skip
    add_transducer_search_args(
        p.add_argument_group("transducer models (as decode-transducer; then decoded offline)")
    )
    p.set_defaults(func=_cmd_transcribe)

    p = subparsers.add_parser(
        "export-gmm-model",
        help="pack a GMM model, its graph and feature config into a model directory",
        description="Write a self-contained model directory (model.yaml, model.mdl, HCLG.fst, "
        "words.txt) for `pykaldi2 transcribe` and pykaldi2.load_model. The feature config is "
        "read from DATA (the data dir the model was trained on: DATA/conf/feats.json).",
    )
    p.add_argument("model", help="the GMM model, e.g. exp/mono/final.mdl")
    p.add_argument("graph_dir", help="graph dir with HCLG.fst and words.txt (pykaldi2 mkgraph)")
    p.add_argument("data", help="the training data dir (for its feature config)")
    p.add_argument("out_dir", help="the model directory to write, e.g. exp/mono/export")
    add_decoder_args(p, acoustic_help="acoustic scale", lattices=False)
    p.add_argument(
        "--norm-vars", action="store_true", help="the model was trained with variance norm."
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    p.set_defaults(func=_cmd_export_gmm)

    p = subparsers.add_parser(
        "export-hybrid-model",
        help="pack a train-ce model dir and its graph into a model directory",
        description="Write a self-contained hybrid model directory (model.yaml, nnet/ = the "
        "train-ce final dir, HCLG.fst, words.txt) for `pykaldi2 transcribe` and "
        "pykaldi2.load_model.",
        epilog="example: pykaldi2 export-hybrid-model --acoustic-scale 0.1 exp/blstm_ce/final "
        "exp/tri2/graph exp/blstm_ce/export",
    )
    p.add_argument("nnet_dir", help="the train-ce model dir, e.g. exp/blstm_ce/final")
    p.add_argument("graph_dir", help="graph dir of the same tree (HCLG.fst, words.txt)")
    p.add_argument("out_dir", help="the model directory to write, e.g. exp/blstm_ce/export")
    add_decoder_args(
        p, acoustic_help="acoustic scale, 1 / the best LMWT of a scored decode", lattices=False
    )
    p.add_argument("--prior-scale", type=float, default=1.0, help="prior scale (%(default)s)")
    p.add_argument(
        "--mode", choices=["chunk", "utterance"], default="utterance",
        help="inference mode: whole utterances (default) or the training chunks (bounds memory "
        "on long recordings)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    p.set_defaults(func=_cmd_export_hybrid)

    p = subparsers.add_parser(
        "export-chain-model",
        help="pack a train-chain model dir and its graph into a model directory",
        description="Write a self-contained chain model directory (model.yaml, nnet/ = the "
        "train-chain final dir, HCLG.fst, words.txt) for `pykaldi2 transcribe` and "
        "pykaldi2.load_model. The graph is mkgraph's with the chain final.mdl and "
        "--self-loop-scale 1.0; the network's outputs are decoded at acoustic scale 1.0 "
        "(Kaldi's --acwt 1.0) unless --acoustic-scale says otherwise (1 / the best LM weight of "
        "decode-chain's scoring).",
        epilog="example: pykaldi2 export-chain-model exp/chain_tdnnf/final exp/chain_tdnnf/graph "
        "exp/chain_tdnnf/export",
    )
    p.add_argument("chain_dir", help="the train-chain model dir, e.g. exp/chain_tdnnf/final")
    p.add_argument("graph_dir", help="its graph dir (mkgraph --self-loop-scale 1.0)")
    p.add_argument("out_dir", help="the model directory to write, e.g. exp/chain_tdnnf/export")
    add_decoder_args(
        p, acoustic_scale=1.0, lattices=False,
        acoustic_help="acoustic scale (chain: 1.0, or 1 / the best LMWT of a scored decode)",
    )  # fmt: skip
    p.add_argument(
        "--mode", choices=["chunk", "utterance"], default="utterance",
        help="inference on whole utterances (default) or on the training chunks with their "
        "context",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    p.set_defaults(func=_cmd_export_chain)
