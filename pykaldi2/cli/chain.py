"""``pykaldi2`` LF-MMI (chain) commands: chain-est-phone-lm, chain-make-den-fst,
build-tree-chain, chain-get-egs, train-chain, decode-chain."""

from __future__ import annotations

import argparse
from pathlib import Path


def _load_model(path: str):
    from pykaldi2.hmm.model import GmmModel

    return GmmModel.load(path)


def _est_phone_lm(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.ali import ali_to_phones, read_ali
    from pykaldi2.hmm.exp_dir import read_ali_dir
    from pykaldi2.lang.den_fst import write_fst
    from pykaldi2.lang.phone_lm import PhoneLmEstimator, PhoneLmOptions
    from pykaldi2.utils.log import progress

    model = _load_model(args.model)
    est = PhoneLmEstimator(
        PhoneLmOptions(args.ngram_order, args.no_prune_ngram_order, args.num_extra_lm_states)
    )
    num = 0
    for ali_path in args.ali:
        if Path(ali_path).is_dir():
            alis = read_ali_dir(ali_path, model)[0]
        else:
            alis = read_ali(ali_path)
        for utt, ali in progress(sorted(alis.items()), desc=f"phone LM counts ({ali_path})"):
            est.add_counts([int(p) for p in ali_to_phones(model, ali)], seq_id=utt)
            num += 1
    fst = est.estimate()
    write_fst(fst, args.phone_lm)
    print(f"{args.phone_lm}: {fst.num_states} states, from {num} alignments")
    return 0


def _make_den_fst(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pykaldi2.kaldi import kaldifst
    from pykaldi2.lang.den_fst import DenGraph, chain_make_den_fst, normalization_fst, write_fst
    from pykaldi2.utils.errors import DataError

    model = _load_model(args.model)
    if not Path(args.phone_lm).is_file():
        raise DataError("no such phone LM", file=args.phone_lm, fix="run chain-est-phone-lm")
    phone_lm = kaldifst.StdVectorFst.read(args.phone_lm)
    den = chain_make_den_fst(phone_lm, model.tree, model.tm)
    graph = DenGraph.from_fst(den, model.tm.num_pdfs)
    out = Path(args.dir)
    write_fst(den, out / "den.fst")
    write_fst(normalization_fst(den, graph.initial_probs), out / "normalization.fst")
    print(
        f"{out}/den.fst: {graph.num_states} states, {graph.num_arcs} arcs, "
        f"{model.tm.num_pdfs} pdfs; {out}/normalization.fst"
    )
    return 0


def _build_tree_chain(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.ali import write_ali, write_model_id
    from pykaldi2.hmm.chain_tree import ChainTreeConfig, TreeInputs, chain_build_tree
    from pykaldi2.hmm.exp_dir import read_transforms_dir
    from pykaldi2.hmm.inputs import feats_for_model
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.lang_dir import load_lang
    from pykaldi2.lang.topo import TopoConfig, make_topo
    from pykaldi2.training.data import load_alignments
    from pykaldi2.utils.errors import DataError

    lang = load_lang(args.lang)
    topo = khg.HmmTopology()
    if args.topo:
        if not Path(args.topo).is_file():
            raise DataError("no such topology file", file=args.topo)
        topo.read(Path(args.topo).read_text(encoding="utf-8"))
    else:  # steps/nnet3/chain/gen_topo.py on the lang's phones
        topo.read(make_topo(lang.nonsilence_phones, lang.silence_phones, TopoConfig.chain()))
    alis, ali_model = load_alignments([args.ali_dir])
    # a SAT ali dir (align-fmllr) has the speakers' fMLLR transforms trans.*: the tree
    # statistics are of the adapted features, as build_tree.sh's transform-feats
    transforms = read_transforms_dir(args.ali_dir)
    feats = feats_for_model(ali_model, args.data, utts=sorted(alis), transforms=transforms)
    extra = lang.dir / "phones" / "extra_questions.int"
    tree_inputs = TreeInputs(
        roots=lang.roots(),
        phone_sets=lang.read_int_sets("sets"),
        extra_questions=lang.read_int_sets("extra_questions") if extra.is_file() else [],
        ci_phones=lang.silence_phones,
    )
    cfg = ChainTreeConfig(
        num_leaves=args.num_leaves, frame_subsampling_factor=args.frame_subsampling_factor,
        context_width=args.context_width, central_position=args.central_position,
        cluster_thresh=args.cluster_thresh,
    )  # fmt: skip
    model, new_alis = chain_build_tree(ali_model, feats, alis, topo, tree_inputs, cfg)
    out = Path(args.tree_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "final.mdl")
    write_model_id(out, model)
    write_ali(out / "ali.ark", new_alis)
    (out / "num_pdfs").write_text(f"{model.tm.num_pdfs}\n", encoding="utf-8")
    print(
        f"{out}: chain tree with {model.tm.num_pdfs} pdfs (context width {cfg.context_width}, "
        f"central position {cfg.central_position}), {len(new_alis)} alignments at 1/"
        f"{cfg.frame_subsampling_factor} rate"
    )
    return 0


def _chain_get_egs(args: argparse.Namespace) -> int:
    from pykaldi2.training.chain import TrainChainConfig, chain_model_for
    from pykaldi2.training.chain_get_egs import chain_get_egs, egs_dir_of
    from pykaldi2.utils.errors import DataError

    cfg = TrainChainConfig.load(args.config, overrides=args.override or [])
    if not cfg.egs.enabled:
        raise DataError("the config has no egs.chunk_widths", file=args.config,
                        fix="set egs.chunk_widths (e.g. [140, 100, 160])")  # fmt: skip
    model = chain_model_for(cfg)
    egs_dir = Path(args.egs_dir) if args.egs_dir else egs_dir_of(cfg, args.exp_dir)
    info = chain_get_egs(
        cfg, egs_dir, model.left_context, model.right_context, nj=args.nj, cmd=args.cmd
    )
    print(
        f"{egs_dir}: {info.num_chunks} chunks in {info.num_archives} archives, "
        f"{info.num_valid_chunks} validation chunks, context {info.left_context}/"
        f"{info.right_context} (+{info.extra_context})"
    )
    return 0


def _train_chain(args: argparse.Namespace) -> int:
    from pykaldi2.training.chain import TrainChainConfig, train_chain

    cfg = TrainChainConfig.load(args.config, overrides=args.override or [])
    final = train_chain(cfg, args.exp_dir)
    print(f"{args.exp_dir}: model dir {final}")
    return 0


def _decode_chain(args: argparse.Namespace) -> int:
    from pykaldi2.cli.decoder_args import decoder_config
    from pykaldi2.decoding.nnet import decode_chain

    summary = decode_chain(
        args.model_dir, args.graph_dir, args.data_dir, args.decode_dir,
        nj=args.nj, cmd=args.cmd, decoder=decoder_config(args), device=args.device,
        mode=args.mode,
        text_lattices=args.text_lattices,
    )  # fmt: skip
    print(f"{args.decode_dir}: {summary}")
    best = Path(args.decode_dir) / "best_wer"
    if best.is_file():
        print(best.read_text(encoding="utf-8").strip())
    return 0


def _register_train_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-chain",
        help="train an LF-MMI (chain) TDNN-F/BLSTM acoustic model from GMM alignments",
        description="Builds the chain transition model (chain topology on the alignment "
        "model's tree), the phone LM and den.fst from the training alignments, numerator "
        "supervision per utterance (left/right tolerance, frame subsampling), then trains with "
        "the LF-MMI objective (leaky HMM, l2 and xent regularization). Resumes from "
        "EXP_DIR/checkpoints automatically. Writes EXP_DIR/config.yaml, checkpoints/, log/ and "
        "the model dir EXP_DIR/final/ (final.pt, model.yaml, features.yaml, final.mdl, tree, "
        "den.fst, normalization.fst, phone_lm.fst, config.yaml). Build its graph with "
        "`pykaldi2 mkgraph LANG EXP_DIR/final/final.mdl GRAPH --self-loop-scale 1.0`.",
        epilog="example: pykaldi2 train-chain --config conf/chain_tdnnf.yaml exp/chain_tdnnf",
    )
    p.add_argument("--config", required=True, help="YAML config (egs/an4/conf/chain_tdnnf.yaml)")
    p.add_argument(
        "--override",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value; dotted keys, YAML values (repeatable), "
        "e.g. trainer.lr=5e-4 or chain.xent_regularize=0.1",
    )
    p.add_argument("exp_dir", help="output experiment dir, e.g. exp/chain_tdnnf")
    p.set_defaults(func=_train_chain)

    p = sub.add_parser(
        "decode-chain",
        help="decode a data dir with a chain model dir through HCLG, then score",
        description="The model's raw outputs (no log-softmax, no priors) at 1/3 of the frame "
        "rate are decoded in NJ processes through GRAPH_DIR/HCLG.fst, which must be built from "
        "MODEL_DIR/final.mdl with --self-loop-scale 1.0; writes DECODE_DIR/lat.J.ark, hyp.txt "
        "and decode_info.json and scores against DATA_DIR/text (LMWT 0.7..1.7, i.e. Kaldi's "
        "post-decode-acwt 10 with LMWT 7..17) when the text exists.",
    )
    p.add_argument("model_dir", help="model dir from train-chain (EXP_DIR/final)")
    p.add_argument("graph_dir", help="graph dir: mkgraph LANG MODEL_DIR/final.mdl, scale 1.0")
    p.add_argument("data_dir", help="data dir with feats.scp (and cmvn.scp, text)")
    p.add_argument("decode_dir", help="output dir, e.g. exp/chain_tdnnf/decode_test")
    p.add_argument("--nj", type=int, default=1, help="decoding jobs (default: %(default)s)")
    from pykaldi2.cli.job_args import add_cmd_arg

    add_cmd_arg(p)
    from pykaldi2.cli.decoder_args import add_decoder_args

    add_decoder_args(
        p, beam=15.0, lattice_beam=8.0, acoustic_scale=1.0,
        acoustic_help="scale of the network outputs (1.0 for chain models)",
    )  # fmt: skip
    p.add_argument(
        "--mode",
        choices=("chunk", "utterance"),
        default="chunk",
        help="run the net on the training chunks with their context (default) or on whole "
        "utterances (a BLSTM sees all of its context)",
    )
    p.add_argument("--device", default="cpu", help="torch device of the net (default: cpu)")
    p.set_defaults(func=_decode_chain)


def _register_tree_egs(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser(
        "build-tree-chain",
        help="the chain tree at 1/3 frame rate (steps/nnet3/chain/build_tree.sh)",
        description="Kaldi's steps/nnet3/chain/build_tree.sh: convert ALI_DIR's alignments to "
        "the chain topology at 1/F of the frame rate (convert-ali --frame-subsampling-factor), "
        "accumulate tree statistics on the subsampled features of ALI_DIR's model "
        "(acc-tree-stats, left biphone by default), cluster-phones, build-tree with "
        "--num-leaves leaves (a multiple of 8), one Gaussian per leaf (gmm-init-model), and "
        "convert the alignments to the new tree. Writes TREE_DIR/final.mdl, tree, ali.ark/scp "
        "and num_pdfs; train-chain takes TREE_DIR as tree_dir.",
        formatter_class=fmt,
    )
    p.add_argument("data", help="data dir the alignments belong to (features as ALI_DIR's)")
    p.add_argument("lang", help="lang dir (phones, roots, sets, extra questions)")
    p.add_argument(
        "ali_dir", help="GMM alignment dir (final.mdl + ali; + trans.* of align-fmllr: SAT)"
    )
    p.add_argument("tree_dir", help="output dir, e.g. exp/chain/tree_sp")
    p.add_argument("--num-leaves", type=int, default=500, help="build-tree --max-leaves")
    p.add_argument("--frame-subsampling-factor", type=int, default=3)
    p.add_argument("--context-width", type=int, default=2)
    p.add_argument("--central-position", type=int, default=1)
    p.add_argument("--cluster-thresh", type=float, default=-1.0)
    p.add_argument(
        "--topo", help="topology file (default: the chain topology of gen_topo.py for the "
        "lang's phones)",
    )  # fmt: skip
    p.set_defaults(func=_build_tree_chain)

    p = sub.add_parser(
        "chain-get-egs",
        help="write the LF-MMI training examples of a train-chain config to disk",
        description="Kaldi's steps/nnet3/chain/get_egs.sh for CONFIG (a train-chain config "
        "with egs.chunk_widths): the phone LM, den.fst and normalization.fst, then in "
        "egs.nj processes the chunks of every utterance (features read once; supervision "
        "from the alignment with tolerance, composed with normalization.fst; input windows "
        "in the model's context) into shuffled archives EGS_DIR/egs.K.npz + valid.npz and "
        "info.json. Resumable; a finished egs dir is reused (train-chain runs this stage "
        "itself when the egs are missing).",
        formatter_class=fmt,
    )
    p.add_argument("--config", required=True, help="the train-chain YAML config")
    p.add_argument("--override", action="append", metavar="KEY=VALUE",
                   help="override a config value (as train-chain)")  # fmt: skip
    p.add_argument("--nj", type=int, default=None, help="processes (default: egs.nj)")
    from pykaldi2.cli.job_args import add_cmd_arg

    add_cmd_arg(p)
    p.add_argument("--egs-dir", help="egs dir (default: egs.dir, else EXP_DIR/egs)")
    p.add_argument("exp_dir", help="the train-chain experiment dir")
    p.set_defaults(func=_chain_get_egs)


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    _register_tree_egs(sub)

    p = sub.add_parser(
        "chain-est-phone-lm",
        help="estimate the LF-MMI phone LM (no backoff arcs) from alignments",
        description="Kaldi's chain-est-phone-lm: a phone n-gram without smoothing or backoff "
        "arcs, whose histories of length >= --no-prune-ngram-order are merged into shorter ones "
        "(least likelihood loss first) until --num-extra-lm-states remain beyond the basic ones. "
        "The phone sequences are read from transition-id alignments (ali-to-phones).",
        formatter_class=fmt,
    )
    p.add_argument("model", help="final.mdl that made the alignments (ours or Kaldi's)")
    p.add_argument("ali", nargs="+", help="alignment archives (.ark, .scp or ali.N.gz) or ali dirs")
    p.add_argument("phone_lm", help="output FST, e.g. exp/chain/phone_lm.fst")
    p.add_argument("--ngram-order", type=int, default=4)
    p.add_argument("--no-prune-ngram-order", type=int, default=3)
    p.add_argument("--num-extra-lm-states", type=int, default=2000)
    p.set_defaults(func=_est_phone_lm)

    p = sub.add_parser(
        "chain-make-den-fst",
        help="phone LM -> den.fst and normalization.fst for LF-MMI training",
        description="Kaldi's chain-make-den-fst: compose the phone LM with the context and the "
        "HMMs of MODEL's tree and transition model (transition probabilities included), map "
        "transition-ids to pdf_id+1, remove epsilons and minimize. Writes DIR/den.fst and "
        "DIR/normalization.fst (den.fst entered through its initial probs, every state final; "
        "compose numerator supervision with it).",
        formatter_class=fmt,
    )
    p.add_argument(
        "model",
        help="the chain transition model and tree: our final.mdl, or Kaldi's 0.trans_mdl "
        "(with its dir's tree)",
    )
    p.add_argument("phone_lm", help="phone LM FST from chain-est-phone-lm")
    p.add_argument("dir", help="output dir, e.g. exp/chain")
    p.set_defaults(func=_make_den_fst)

    _register_train_decode(sub)
