"""``pykaldi2 mkgraph | decode | score | compute-wer | compute-wer-bootci`` (mkgraph.sh, decode.sh,
score_kaldi.sh, compute-wer, compute-wer-bootci)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _load_model(path: str):
    from pykaldi2.hmm.model import GmmModel

    return GmmModel.load(path)


def _cmd_mkgraph(args) -> int:
    from pykaldi2.hmm.ali import transition_model_id
    from pykaldi2.hmm.exp_dir import check_phones_compatible
    from pykaldi2.lang.hclg import HclgConfig, mkgraph

    model = _load_model(args.model)
    check_phones_compatible(args.lang_dir, Path(args.model).parent)
    config = HclgConfig(
        transition_scale=args.transition_scale, self_loop_scale=args.self_loop_scale
    )
    mkgraph(
        args.lang_dir, model.tree, model.tm, args.graph_dir, config,
        model_id=transition_model_id(model.tm),
    )  # fmt: skip
    return 0


def _cmd_decode(args) -> int:
    from pykaldi2.cli.decoder_args import decoder_config
    from pykaldi2.data.datadir import read_data_dir
    from pykaldi2.data.split import split_utts
    from pykaldi2.decoding.batch import DataDirFeats, decode_dir, matrix_tables
    from pykaldi2.utils.errors import DataError

    model = _load_model(args.model)
    config = decoder_config(args)
    gmm_am = None
    if args.data:
        gmm_am = model.am
        # CMVN + the model's deltas / LDA, streamed an utterance at a time in each job (with
        # --transform-dir: fMLLR, 100 utterances at a time)
        utts = sorted(read_data_dir(args.data).utt2spk)
        sources = [
            DataDirFeats(str(Path(args.model).absolute()), args.data, part, args.transform_dir)
            for part in split_utts(utts, args.nj)
        ]
        n = len(utts)
    elif args.feats:
        if model.feat_type != "raw":
            raise DataError(
                f"the model expects '{model.feat_type}' features; --feats must already be in "
                "the model's feature space",
                file=args.model,
                fix="apply the model's feature transform first, or decode log-likelihoods",
            )
        gmm_am = model.am
        sources, n = matrix_tables(args.feats, args.nj)
    else:
        sources, n = matrix_tables(args.loglik, args.nj)
    decode_dir(
        args.graph_dir,
        sources,
        args.decode_dir,
        model.tm,
        model=args.model,
        config=config,
        gmm_am=gmm_am,
        num_utts=n,
        text_lattices=args.text_lattices,
        cmd=args.cmd,
    )
    if args.ref:
        from pykaldi2.decoding.sweep import score_dir

        score_dir(args.decode_dir, args.ref)
        print((Path(args.decode_dir) / "best_wer").read_text(), end="")
    return 0


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {s!r}"
        ) from None


def _cmd_score(args) -> int:
    from pykaldi2.decoding.sweep import score_dir

    lmwts = list(range(args.min_lmwt, args.max_lmwt + 1))
    wips = args.word_ins_penalties
    if args.tuned_on:  # the setting chosen on a dev set, not the best one on this set
        from pykaldi2.decoding.scoring import best_setting
        from pykaldi2.utils.io import atomic_write_text

        lmwt, wip = best_setting(args.tuned_on)
        lmwts, wips = [float(lmwt)], [float(wip)]
    score_dir(
        args.decode_dir,
        args.ref,
        words_txt=args.words,
        lm_weights=lmwts,
        word_ins_penalties=wips,
        mode=args.mode,
        ignore=args.ignore or (),
    )
    if args.tuned_on:
        atomic_write_text(
            Path(args.decode_dir) / "tuned_on",
            f"LMWT {lmwt} WIP {wip} chosen on {args.tuned_on} (its best_wer); best_wer here is "
            "the WER at that setting\n",
        )
    print((Path(args.decode_dir) / "best_wer").read_text(), end="")
    return 0


def _cmd_compute_wer(args) -> int:
    from pykaldi2.decoding.scoring import compute_wer, read_text

    stats = compute_wer(
        read_text(args.ref), read_text(args.hyp), mode=args.mode, ignore=args.ignore or ()
    )
    sys.stdout.write(stats.format())
    return 0


def _cmd_compute_wer_bootci(args) -> int:
    from pykaldi2.decoding.scoring import (
        best_hyp_file,
        bootstrap_improvement,
        bootstrap_wer,
        read_text,
        utterance_errors,
    )
    from pykaldi2.utils.errors import DataError

    if len(args.hyp) > 2:
        raise DataError(f"{len(args.hyp)} hypotheses given", fix="compare one or two systems")
    ref = read_text(args.ref)
    hyp_files = [best_hyp_file(h) for h in args.hyp]
    per_utt = [utterance_errors(ref, read_text(h), mode=args.mode) for h in hyp_files]
    if len(per_utt) == 2 and per_utt[0][0] != per_utt[1][0]:
        raise DataError(
            f"{hyp_files[0]} and {hyp_files[1]} score different utterances",
            fix="compare decodes of the same data dir, or score with --mode all",
        )
    for i, (f, (_, errs, words)) in enumerate(zip(hyp_files, per_utt, strict=True), 1):
        b = bootstrap_wer(errs, words, args.replications, args.seed)
        print(f"{b.line(f'Set{i}')} ({f})")
    if len(per_utt) == 2:
        p = bootstrap_improvement(per_utt[0][1], per_utt[1][1], args.replications, args.seed)
        print(f"Probability of Set2 improving Set1: {100 * p:.1f}%")
    return 0


def register(subparsers) -> None:
    from pykaldi2.cli.decoder_args import add_decoder_args
    from pykaldi2.cli.job_args import add_cmd_arg

    p = subparsers.add_parser(
        "mkgraph",
        help="build HCLG.fst from a lang dir and a model (utils/mkgraph.sh)",
        description="LG = det(L_disambig o G); CLG = C o LG; HCLG = add-self-loops(min(rmeps("
        "rmsymbols(det(H o CLG))))). Writes GRAPH_DIR/{HCLG.fst, words.txt, phones.txt, "
        "phones/, disambig_tid.int, num_pdfs, model_id}; model_id (the identity of the model's "
        "transition model) is checked wherever the graph is used with a model.",
    )
    p.add_argument("lang_dir", help="lang dir with L_disambig.fst, G.fst, phones.txt, words.txt")
    p.add_argument(
        "model", help="final.mdl (ours or Kaldi's; the tree beside it, as in every exp dir)"
    )
    p.add_argument("graph_dir", help="output graph dir, e.g. exp/mono/graph")
    p.add_argument("--self-loop-scale", type=float, default=0.1, help="default: %(default)s")
    p.add_argument("--transition-scale", type=float, default=1.0, help="default: %(default)s")
    p.set_defaults(func=_cmd_mkgraph)

    p = subparsers.add_parser(
        "decode",
        help="decode log-likelihoods (or GMM features) into lattices (steps/decode.sh)",
        description="Kaldi's gmm-latgen-faster / latgen-faster-mapped in NJ processes: writes "
        "DECODE_DIR/lat.J.gz (Kaldi's gzipped binary archives of determinized CompactLattices, "
        "readable by Kaldi's lattice-* tools), hyp.txt, num_jobs and decode_info.json. Inputs: "
        "--loglik (T x num_pdfs matrices, e.g. a net's log-posteriors minus log-priors), "
        "--feats (features scored by the model's GMMs) or --data (a data dir, features "
        "transformed as the GMM was trained). The graph may be our mkgraph's or Kaldi's "
        "(HCLG.fst as a VectorFst or ConstFst).",
    )
    p.add_argument("graph_dir", help="graph dir from `pykaldi2 mkgraph`")
    p.add_argument("model", help="final.mdl (ours or Kaldi's) the graph was built with")
    p.add_argument("decode_dir", help="output dir, e.g. exp/mono/decode_test")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--loglik", help=".scp or .ark of (T, num_pdfs) log-likelihood matrices")
    src.add_argument("--feats", help=".scp or .ark of features for the model's GMMs")
    src.add_argument(
        "--data",
        help="data dir (feats.scp + cmvn.scp): CMVN and the model's feature transform "
        "(deltas, LDA+MLLT) applied, then scored by the model's GMMs",
    )
    p.add_argument("--nj", type=int, default=1, help="parallel jobs (default: %(default)s)")
    add_cmd_arg(p)
    add_decoder_args(p)
    p.add_argument("--ref", help="reference text: score the decode dir afterwards")
    p.add_argument(
        "--transform-dir",
        help="with --data: dir with fMLLR transforms trans.1 .. trans.N of the data's speakers "
        "(Kaldi's decode.sh --transform-dir), applied after the model's features",
    )
    p.set_defaults(func=_cmd_decode)

    p = subparsers.add_parser(
        "score",
        help="WER over LM weights x word insertion penalties (steps/score_kaldi.sh)",
        description="Best paths of DECODE_DIR/lat.*.gz (or lat.*.ark) for every LMWT and WIP "
        "(lattice-scale --inv-acoustic-scale=LMWT | lattice-add-penalty | lattice-best-path); "
        "writes wer_LMWT_WIP, best_wer and scoring_kaldi/penalty_WIP/LMWT.txt. Kaldi's own "
        "decode dirs work too.",
    )
    p.add_argument("decode_dir", help="decode dir from `pykaldi2 decode`")
    p.add_argument("--ref", required=True, help="reference text (data/<set>/text)")
    p.add_argument("--words", help="words.txt (default: the graph dir's, from decode_info.json)")
    p.add_argument("--min-lmwt", type=int, default=7, help="default: %(default)s")
    p.add_argument("--max-lmwt", type=int, default=17, help="default: %(default)s")
    p.add_argument(
        "--word-ins-penalties",
        type=_floats,
        default=[0.0, 0.5, 1.0],
        help="comma-separated (default: 0.0,0.5,1.0)",
    )
    p.add_argument("--mode", default="present", choices=["strict", "present", "all"])
    p.add_argument("--ignore", nargs="*", help="words removed from ref and hyp before scoring")
    p.add_argument(
        "--tuned-on",
        metavar="DEV_DECODE_DIR",
        help="score only at the LMWT/WIP that DEV_DECODE_DIR's best_wer names (the setting "
        "chosen on a dev set); best_wer here is then the WER at that setting, and the file "
        "tuned_on says where it came from",
    )
    p.set_defaults(func=_cmd_score)

    p = subparsers.add_parser(
        "compute-wer",
        help="WER of a hypothesis text against a reference (Kaldi's compute-wer)",
        description="Prints %%WER, %%SER and 'Scored N sentences' exactly as compute-wer.",
    )
    p.add_argument("--ref", required=True, help="reference text: utt w1 w2 ...")
    p.add_argument("--hyp", required=True, help="hypothesis text: utt w1 w2 ...")
    p.add_argument("--mode", default="strict", choices=["strict", "present", "all"])
    p.add_argument("--ignore", nargs="*", help="words removed from ref and hyp before scoring")
    p.set_defaults(func=_cmd_compute_wer)

    p = subparsers.add_parser(
        "compute-wer-bootci",
        help="bootstrap 95%% confidence intervals of WERs, and P(system 2 improves system 1)",
        description="Kaldi's compute-wer-bootci (Bisani & Ney 2004): the test utterances are "
        "resampled with replacement; each system's WER is printed with mean +- 1.96 std of the "
        "replicated WERs, and with two systems the fraction of replications (same utterances "
        "for both) in which the second makes fewer word errors. A HYP is a text file or a "
        "scored decode dir (its best LMWT/WIP hypotheses) or a decode dir of one setting "
        "(decode-transducer's: its hyp.txt).",
        epilog="example: pykaldi2 compute-wer-bootci data/test/text exp/blstm_ce/decode_test "
        "exp/blstm_smbr/decode_test",
    )
    p.add_argument("ref", help="reference text: utt w1 w2 ...")
    p.add_argument("hyp", nargs="+", help="one or two hypothesis texts or scored decode dirs")
    p.add_argument("--mode", default="strict", choices=["strict", "present", "all"])
    p.add_argument("--replications", type=int, default=10000, help="default: %(default)s")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.set_defaults(func=_cmd_compute_wer_bootci)
