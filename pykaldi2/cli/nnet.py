"""``pykaldi2 train-ce | train-se | decode-nnet | align-nnet | adjust-priors``: hybrid
cross-entropy and sequence training, decoding, alignment and prior adjustment (PyKaldi2's
train_ce.py / train_se2.py; Kaldi's steps/nnet3/train_*.py --xent, train_discriminative.sh,
decode.sh, align.sh and nnet3-am-adjust-priors)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pykaldi2.cli.job_args import add_cmd_arg


def _cmd_train_ce(args: argparse.Namespace) -> int:
    from pykaldi2.training.ce import TrainCEConfig, train_ce

    cfg = TrainCEConfig.load(args.config, overrides=args.override or [])
    final = train_ce(cfg, args.exp_dir)
    print(f"{args.exp_dir}: model dir {final}")
    return 0


def _cmd_train_se(args: argparse.Namespace) -> int:
    from pykaldi2.training.se import TrainSEConfig, criterion_overrides, train_se

    over = criterion_overrides(args.criterion) if args.criterion else []
    cfg = TrainSEConfig.load(args.config, overrides=[*over, *(args.override or [])])
    final = train_se(cfg, args.exp_dir)
    print(f"{args.exp_dir}: model dir {final}")
    return 0


def _cmd_decode_nnet(args: argparse.Namespace) -> int:
    from pykaldi2.cli.decoder_args import decoder_config
    from pykaldi2.decoding.nnet import decode_nnet

    decoder = decoder_config(args)
    compute = _compute_config(args)
    summary = decode_nnet(
        args.model_dir,
        args.graph_dir,
        args.data_dir,
        args.decode_dir,
        nj=args.nj,
        cmd=args.cmd,
        decoder=decoder,
        compute=compute,
        score=not args.no_score,
        text_lattices=args.text_lattices,
    )
    best = Path(args.decode_dir) / "best_wer"
    if not args.no_score and best.is_file():
        print(best.read_text(), end="")
    else:
        print(f"{args.decode_dir}: decoded {summary.num_done} utterances")
    return 0


def _cmd_align_nnet(args: argparse.Namespace) -> int:
    from pykaldi2.decoding.align_nnet import align_nnet
    from pykaldi2.hmm.ali import write_ali_dir
    from pykaldi2.hmm.align import AlignConfig
    from pykaldi2.hmm.exp_dir import write_side_files
    from pykaldi2.hmm.model import GmmModel

    over = {"max_missing_text_fraction": args.max_missing_text_fraction}
    cfg = AlignConfig(
        beam=args.beam, retry_beam=args.retry_beam, acoustic_scale=args.acoustic_scale,
        **{k: v for k, v in over.items() if v is not None},
    )  # fmt: skip
    compute = _compute_config(args)
    res = align_nnet(
        args.model_dir, args.data_dir, args.lang_dir, config=cfg, compute=compute, nj=args.nj,
        cmd=args.cmd, log_dir=Path(args.ali_dir) / "log",
    )  # fmt: skip
    model = GmmModel.load(Path(args.model_dir) / "final.mdl")
    out = write_ali_dir(args.ali_dir, model, res)
    write_side_files(out, lang_dir=args.lang_dir, num_jobs=args.nj, model=model, alis=res.alis)
    total = len(res.alis) + len(res.failed)
    print(
        f"{out}: aligned {len(res.alis)} of {total} utterances ({len(res.failed)} failed"
        f"{', listed in failed_utts' if res.failed else ''}), {res.num_frames} frames"
    )
    return 0 if res.alis else 1


def _cmd_adjust_priors(args: argparse.Namespace) -> int:
    from pykaldi2.decoding.adjust_priors import adjust_priors

    compute = _compute_config(args)
    stats = adjust_priors(
        args.model_dir, args.data_dir, args.out_dir, max_utts=args.max_utts, seed=args.seed,
        compute=compute, overwrite=args.overwrite,
    )  # fmt: skip
    print(
        f"{args.out_dir}: priors from the average posteriors of {stats['utts']} utterances "
        f"({stats['frames']} frames); |log(new/old)| mean {stats['mean_abs_log_ratio']:.3f}, "
        f"max {stats['max_abs_log_ratio']:.3f}"
    )
    return 0


def _compute_config(args: argparse.Namespace):
    """The NnetComputeConfig of the options :func:`_add_compute_args` added."""
    from pykaldi2.decoding.nnet import NnetComputeConfig

    return NnetComputeConfig(
        mode=args.mode, batch_chunks=args.batch_chunks,
        prior_scale=getattr(args, "prior_scale", 1.0), device=args.device,
    )  # fmt: skip


def _add_compute_args(p: argparse.ArgumentParser, prior_scale: bool = True) -> None:
    """How the network runs (NnetComputeConfig): --mode, --batch-chunks, --device, and with
    ``prior_scale`` --prior-scale."""
    if prior_scale:
        p.add_argument(
            "--prior-scale", type=float, default=1.0,
            help="log-likelihood = log-posterior - SCALE * log-prior (default: %(default)s)",
        )  # fmt: skip
    p.add_argument(
        "--mode", choices=["chunk", "utterance"], default="utterance",
        help="run the net on whole utterances (default) or on its training chunks with their "
        "context (bounds memory on long recordings)",
    )  # fmt: skip
    p.add_argument(
        "--batch-chunks", type=int, default=64, help="chunks per forward pass (default: 64)"
    )
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def register(subparsers) -> None:
    from pykaldi2.cli.decoder_args import add_decoder_args

    p = subparsers.add_parser(
        "train-ce",
        help="train a hybrid BLSTM/TDNN-F acoustic model with frame cross-entropy",
        description="Train on chunks of features with pdf_id targets from an alignment dir "
        "(ali-to-pdf). Resumes from EXP_DIR/checkpoints automatically. Writes EXP_DIR/"
        "config.yaml, checkpoints/, log/ (tensorboard, valid.jsonl) and the self-contained "
        "model dir EXP_DIR/final/ (final.pt, model.yaml, features.yaml, priors.npy, final.mdl, "
        "tree, config.yaml). Runs unchanged under `torchrun --nproc_per_node N` and "
        "`horovodrun -np N` (one process per rank).",
        epilog="example: pykaldi2 train-ce --config conf/ce_blstm.yaml "
        "--override trainer.max_epochs=2 exp/blstm_ce",
    )
    p.add_argument("--config", required=True, help="YAML config (see egs/an4/conf/ce_blstm.yaml)")
    p.add_argument(
        "--override",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value; dotted keys, YAML values (repeatable), "
        "e.g. trainer.lr=5e-4 or train_data=[data/train]",
    )
    p.add_argument("exp_dir", help="output experiment dir, e.g. exp/blstm_ce")
    p.set_defaults(func=_cmd_train_ce)

    p = subparsers.add_parser(
        "train-se",
        help="sequence-train a CE model: lattice MMI, boosted MMI, sMBR or MPFE",
        description="Starts from a train-ce model dir (init_model); numerators from an "
        "alignment dir (ali_dir), denominator lattices generated on the fly through den_graph "
        "(HCLG.fst) from the current model in a pool of worker processes. With "
        "`--override numerator=online --override lang_dir=data/lang` the numerators are "
        "re-aligned with the current model in the same worker jobs (training graphs from the "
        "lang dir's L.fst and the data's text; the stored alignment where that fails, counted "
        "as ali_failed in log/train.jsonl). Logs the true objective per "
        "frame (EXP_DIR/log/train.jsonl, valid.jsonl). Resumes exactly from "
        "EXP_DIR/checkpoints. Writes EXP_DIR/final/ in the train-ce format (decode it with "
        "`pykaldi2 decode-nnet`). Runs under `torchrun` and `horovodrun` like train-ce.",
        epilog="example: pykaldi2 train-se --criterion smbr --config conf/se_blstm.yaml "
        "exp/blstm_se",
    )
    p.add_argument("--config", required=True, help="YAML config (see egs/an4/conf/se_blstm.yaml)")
    p.add_argument(
        "--criterion",
        choices=["mmi", "bmmi", "smbr", "mpfe"],
        help="overrides sequence.criterion (bmmi: boost 0.1; default: the config's)",
    )
    p.add_argument(
        "--override",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value (repeatable), e.g. trainer.lr=1e-5 or sequence.ce_weight=0",
    )
    p.add_argument("exp_dir", help="output experiment dir, e.g. exp/blstm_se")
    p.set_defaults(func=_cmd_train_se)

    p = subparsers.add_parser(
        "decode-nnet",
        help="decode a data dir with a CE model dir through HCLG, then score",
        description="Computes log-likelihoods (log-softmax minus prior_scale * log-priors) in "
        "batches and decodes them in NJ processes into DECODE_DIR/lat.J.gz, hyp.txt and "
        "decode_info.json; scores against DATA_DIR/text over LM weights x insertion penalties "
        "(wer_LMWT_WIP, best_wer) when the text exists.",
    )
    p.add_argument("model_dir", help="model dir from train-ce (EXP_DIR/final)")
    p.add_argument("graph_dir", help="graph dir from `pykaldi2 mkgraph` with the same tree")
    p.add_argument("data_dir", help="data dir with feats.scp (and cmvn.scp, text)")
    p.add_argument("decode_dir", help="output dir, e.g. exp/blstm_ce/decode_test")
    p.add_argument("--nj", type=int, default=1, help="decoding jobs (default: %(default)s)")
    add_cmd_arg(p)
    add_decoder_args(p, acoustic_help="scale of the log-likelihoods (0.1 for CE models)")
    _add_compute_args(p)
    p.add_argument("--no-score", action="store_true", help="do not score against DATA_DIR/text")
    p.set_defaults(func=_cmd_decode_nnet)

    p = subparsers.add_parser(
        "align-nnet",
        help="align a data dir with a CE model dir (steps/nnet3/align.sh)",
        description="Viterbi-align every utterance of DATA_DIR to its transcript with the "
        "network's log-likelihoods (log-softmax minus prior_scale * log-priors) through "
        "training graphs from LANG_DIR/L.fst and MODEL_DIR/final.mdl, in NJ processes. Writes "
        "ALI_DIR/ali.{ark,scp} (transition-ids), pdf.{ark,scp}, final.mdl and tree: an "
        "ali_dir for train-ce and train-se with this model (e.g. sMBR numerators from the CE "
        "network, as Kaldi's discriminative recipes do). Failed utterances are listed in "
        "ALI_DIR/failed_utts.",
        epilog="example: pykaldi2 align-nnet --nj 2 exp/blstm_ce/final data/train_fbank "
        "data/lang exp/blstm_ce_ali",
    )
    p.add_argument("model_dir", help="model dir from train-ce or train-se (EXP_DIR/final)")
    p.add_argument("data_dir", help="data dir with feats.scp (and cmvn.scp) and text")
    p.add_argument("lang_dir", help="lang dir with L.fst and words.txt")
    p.add_argument("ali_dir", help="output dir, e.g. exp/blstm_ce_ali")
    p.add_argument("--nj", type=int, default=1, help="parallel jobs (default: %(default)s)")
    add_cmd_arg(p)
    p.add_argument("--beam", type=float, default=10.0, help="default: %(default)s")
    p.add_argument("--retry-beam", type=float, default=40.0, help="default: %(default)s")
    p.add_argument(
        "--max-missing-text-fraction", type=float,
        help="utterances without a transcript are listed and not aligned; more than this "
        "fraction of them is an error (0.1)",
    )  # fmt: skip
    p.add_argument(
        "--acoustic-scale", type=float, default=0.1, help="default: %(default)s (CE models)"
    )
    _add_compute_args(p)
    p.set_defaults(func=_cmd_align_nnet)

    p = subparsers.add_parser(
        "adjust-priors",
        help="pdf priors from the network's average posteriors (nnet3-am-adjust-priors)",
        description="Write OUT_DIR: a copy of the CE/SE model dir MODEL_DIR whose priors.npy is "
        "the network's average posterior over (a seeded random subset of) DATA_DIR, as Kaldi's "
        "nnet3 training does after CE and discriminative training; the old priors are kept as "
        "priors_prev.npy. Use after train-se (the sequence-trained network's outputs no longer "
        "match the alignment counts).",
        epilog="example: pykaldi2 adjust-priors exp/blstm_smbr/final data/train_fbank "
        "exp/blstm_smbr/final_adj",
    )
    p.add_argument("model_dir", help="model dir from train-ce or train-se (EXP_DIR/final)")
    p.add_argument("data_dir", help="data dir with feats.scp (and cmvn.scp): training data")
    p.add_argument("out_dir", help="output model dir")
    p.add_argument(
        "--max-utts", type=int, default=2000, help="utterances to average over (0: all; 2000)"
    )
    p.add_argument("--seed", type=int, default=0, help="subset seed (default: %(default)s)")
    _add_compute_args(p, prior_scale=False)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    p.set_defaults(func=_cmd_adjust_priors)
