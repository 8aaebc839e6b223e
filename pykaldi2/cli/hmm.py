"""``pykaldi2`` HMM-GMM commands: train-mono, train-deltas, train-lda-mllt, train-sat, align-si,
align-fmllr, decode-fmllr, ali-to-pdf, ali-to-phones (Kaldi's steps/train_*.sh,
steps/align_{si,fmllr}.sh, steps/decode_fmllr.sh and the ali-* tools).

Each training command reads ``<data>`` (feats.scp + cmvn.scp + text) and ``<lang>``, splits the
data in ``--nj`` parts by speaker and writes an exp dir in Kaldi's layout that Kaldi's tools read
too: final.mdl and tree (Kaldi binary), final.mat + splice_opts (LDA), cmvn_opts, phones.txt,
ali.JOB.gz, num_jobs, final.occs, model_id, and ours beside them: final.mdl.json, config.json,
per-job logs in log/ and log/history.jsonl. The previous system (ALI_DIR) may be ours or
Kaldi's.
"""

from __future__ import annotations

import argparse

from pykaldi2.cli.job_args import add_cmd_arg

#: command-line options that override config fields: (flag, field, type, help)
_MONO_OPTS = [
    ("--num-iters", "num_iters", int, "training iterations (40)"),
    ("--totgauss", "totgauss", int, "target number of Gaussians (1000)"),
    ("--max-iter-inc", "max_iter_inc", int, "last iteration that mixes up (30)"),
    ("--boost-silence", "boost_silence", float, "silence likelihood factor in alignment (1.0)"),
    ("--max-missing-text-fraction", "max_missing_text_fraction", float,
     "utterances without a transcript are listed and left out; more than this fraction of "
     "them is an error (0.1)"),
]  # fmt: skip
_TRI_OPTS = [
    ("--num-leaves", "num_leaves", int, "maximum tree leaves (deltas 2000, lda-mllt 2500)"),
    ("--tot-gauss", "tot_gauss", int, "target Gaussians (deltas 10000, lda-mllt 15000)"),
    ("--num-iters", "num_iters", int, "training iterations (35)"),
    ("--boost-silence", "boost_silence", float, "silence likelihood factor in alignment (1.0)"),
    _MONO_OPTS[-1],
]


def _config(cfg_cls, args: argparse.Namespace, opts) -> object:
    """A config dataclass from --config (YAML/JSON) plus explicit command-line options."""
    from pykaldi2.utils.config import read_yaml_mapping

    d = dict(read_yaml_mapping(args.config)) if args.config else {}
    for _, name, _, _ in opts:
        if getattr(args, name, None) is not None:
            d[name] = getattr(args, name)
    return cfg_cls.from_dict(d, source=args.config or "command line")


def _summary(exp: str, model, history) -> int:
    from pykaldi2.hmm.model import gmm_info

    last = history[-1]
    info = gmm_info(model)
    print(
        f"{exp}: {info['number_of_pdfs']} pdfs, {info['number_of_gaussians']} Gaussians, "
        f"log-likelihood per frame {last['like_per_frame']:.3f} over {last['frames']} frames "
        "(last iteration)"
    )
    return 0


def _train_mono(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.mono import MonoConfig, train_mono

    cfg = _config(MonoConfig, args, _MONO_OPTS)
    model, history = train_mono(args.data, args.lang, args.exp, cfg, nj=args.nj or 1, cmd=args.cmd)
    return _summary(args.exp, model, history)


def _train_tri(args: argparse.Namespace) -> int:
    """train-deltas (features as the previous model's) or train-lda-mllt (base features)."""
    from pykaldi2.hmm.exp_dir import check_phones_compatible
    from pykaldi2.hmm.lda import LdaMlltConfig, train_lda_mllt
    from pykaldi2.hmm.tri import DeltasConfig, train_deltas

    lda = args.command == "train-lda-mllt"
    cfg = _config(LdaMlltConfig if lda else DeltasConfig, args, _TRI_OPTS)
    train = train_lda_mllt if lda else train_deltas
    check_phones_compatible(args.lang, args.ali_dir)
    model, history = train(
        args.data, args.lang, args.ali_dir, args.exp, cfg, nj=args.nj, cmd=args.cmd
    )
    return _summary(args.exp, model, history)


def _train_sat(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.sat import SatConfig, train_sat

    cfg = _config(SatConfig, args, _TRI_OPTS)
    model, history = train_sat(
        args.data, args.lang, args.ali_dir, args.exp, cfg, nj=args.nj, cmd=args.cmd
    )
    return _summary(args.exp, model, history)


def _align_fmllr(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.align import AlignConfig
    from pykaldi2.hmm.sat import align_fmllr

    cfg = AlignConfig(beam=args.beam, retry_beam=args.retry_beam)
    res = align_fmllr(
        args.data, args.lang, args.src_dir, args.out_dir, cfg, nj=args.nj,
        boost_silence=args.boost_silence, cmd=args.cmd,
    )  # fmt: skip
    return _aligned(args.out_dir, res)


def _decode_fmllr(args: argparse.Namespace) -> int:
    from pykaldi2.decoding.decode_fmllr import DecodeFmllrConfig, decode_fmllr
    from pykaldi2.decoding.wfst import DecoderConfig

    cfg = DecodeFmllrConfig(
        decode=DecoderConfig(
            beam=args.beam, lattice_beam=args.lattice_beam, acoustic_scale=args.acoustic_scale
        ),
        first_beam=args.first_beam,
        silence_weight=args.silence_weight,
    )
    res = decode_fmllr(
        args.graph_dir, args.data, args.exp, args.decode_dir, cfg, nj=args.nj, cmd=args.cmd
    )
    print(
        f"{args.decode_dir}: {res.num_done} utterances decoded ({res.num_partial} partial, "
        f"{len(res.failed)} failed); transforms in trans.*"
    )
    if args.ref:
        from pathlib import Path

        from pykaldi2.decoding.sweep import score_dir

        score_dir(args.decode_dir, args.ref, lm_weights=range(5, 21))
        print((Path(args.decode_dir) / "best_wer").read_text(), end="")
    return 0 if res.num_done else 1


def _aligned(out_dir, res) -> int:
    total = res.num_done + len(res.failed)
    print(
        f"{out_dir}: aligned {res.num_done} of {total} utterances "
        f"({len(res.failed)} failed{', listed in failed_utts' if res.failed else ''}), "
        f"log-likelihood per frame {res.align_like / max(res.align_frames, 1):.3f}"
    )
    return 0 if res.num_done else 1


def _align_si(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.ali_dir import align_si
    from pykaldi2.hmm.align import AlignConfig
    from pykaldi2.hmm.exp_dir import check_phones_compatible

    check_phones_compatible(args.lang, args.src_dir)
    over = {"max_missing_text_fraction": args.max_missing_text_fraction}
    cfg = AlignConfig(
        beam=args.beam, retry_beam=args.retry_beam,
        **{k: v for k, v in over.items() if v is not None},
    )  # fmt: skip
    res = align_si(
        args.data, args.lang, args.src_dir, args.out_dir, cfg, nj=args.nj,
        boost_silence=args.boost_silence, transform_dir=args.transform_dir, cmd=args.cmd,
    )  # fmt: skip
    return _aligned(args.out_dir, res)


def _ali_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pykaldi2.hmm.ali import ali_to_pdf, ali_to_phones
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.hmm.streams import ali_files, iter_alis
    from pykaldi2.utils.io import atomic_write

    model = GmmModel.load(args.model)
    src = Path(args.ali)
    n = 0
    with atomic_write(args.out) as f:
        for utt, a in iter_alis(ali_files(src) if src.is_dir() else [src]):
            n += 1
            if args.to == "pdf":
                seq = ali_to_pdf(model, a)
            else:
                seq = ali_to_phones(model, a, per_frame=args.per_frame)
            f.write(utt + " " + " ".join(str(int(v)) for v in seq) + "\n")
    print(f"{args.out}: {n} utterances")
    return 0


def _gmm_copy(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.model import GmmModel

    model = GmmModel.load(args.model_in)
    model.save(args.model_out, binary=args.binary == "true")
    print(f"{args.model_out}: {model.num_pdfs} pdfs, {int(model.am.num_gauss)} Gaussians")
    return 0


def _gmm_info(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.model import GmmModel, gmm_info

    for key, value in gmm_info(GmmModel.load(args.model)).items():
        print(key.replace("_", " ").replace("transition ", "transition-"), value)
    return 0


def _add_training(sub, name: str, help_: str, description: str, opts, func, prev: bool) -> None:
    p = sub.add_parser(name, help=help_, description=description)
    p.add_argument("data", help="data dir with feats.scp, cmvn.scp and text")
    p.add_argument("lang", help="lang dir (phones.txt, words.txt, L.fst, topo, phones/)")
    if prev:
        p.add_argument(
            "ali_dir",
            help="previous system: our ali/exp dir (final.mdl, ali.scp) or Kaldi's (final.mdl, "
            "tree, ali.*.gz)",
        )
    p.add_argument("exp", help="output exp dir")
    p.add_argument("--config", help="YAML/JSON file of config fields (see the Python API)")
    for flag, name_, type_, text in opts:
        p.add_argument(flag, dest=name_, type=type_, help=text)
    p.add_argument(
        "--nj",
        type=int,
        default=None,
        help="parallel jobs: the data split by speaker as split_data.sh "
        + ("(1)" if not prev else "(default: the ali dir's num_jobs, else 1)"),
    )
    add_cmd_arg(p)
    p.set_defaults(func=func)


def register(subparsers) -> None:
    _add_training(
        subparsers,
        "train-mono",
        "flat-start monophone GMM training (steps/train_mono.sh)",
        "Monophone HMM-GMM training from a flat start on CMVN'd features + deltas: equal "
        "alignment, then iterations of Viterbi realignment (at Kaldi's realign iterations), "
        "statistics and re-estimation, mixing up to --totgauss Gaussians.",
        _MONO_OPTS,
        _train_mono,
        prev=False,
    )
    _add_training(
        subparsers,
        "train-deltas",
        "triphone GMM training on delta features (steps/train_deltas.sh)",
        "Build a decision tree from the alignments of ALI_DIR (acc-tree-stats, cluster-phones, "
        "build-tree), one Gaussian per leaf, convert the alignments, then train (realign at "
        "10 20 30, mix up to --tot-gauss).",
        _TRI_OPTS,
        _train_tri,
        prev=True,
    )
    _add_training(
        subparsers,
        "train-lda-mllt",
        "LDA+MLLT triphone GMM training (steps/train_lda_mllt.sh)",
        "LDA (40 dims from +-3 spliced CMVN'd frames, classes = pdfs of ALI_DIR, silence "
        "excluded), a new tree, then training with MLLT re-estimated at iterations 2 4 6 12.",
        _TRI_OPTS,
        _train_tri,
        prev=True,
    )

    _add_training(
        subparsers,
        "train-sat",
        "speaker-adapted (fMLLR) triphone GMM training (steps/train_sat.sh)",
        "Per-speaker fMLLR transforms on the features of ALI_DIR's system (e.g. LDA+MLLT), a "
        "new tree on the adapted features, training with the transforms re-estimated at "
        "iterations 2 4 6 12, then the speaker-independent alignment model final.alimdl. "
        "Writes trans.JOB (Kaldi matrices keyed by speaker).",
        _TRI_OPTS,
        _train_sat,
        prev=True,
    )

    for name in ("align-si", "align"):
        p = subparsers.add_parser(
            name,
            help="align a data dir with a GMM model in parallel (steps/align_si.sh)"
            + ("" if name == "align-si" else "; same as align-si"),
            description="Viterbi-align every utterance of DATA to its transcript with "
            "SRC_DIR/final.mdl in --nj jobs (DATA split by speaker); writes Kaldi's ali dir: "
            "OUT_DIR/ali.JOB.gz (transition-ids), num_jobs, final.mdl, tree (and final.mat), "
            "per-job logs in OUT_DIR/log. Failed utterances are logged, listed in "
            "OUT_DIR/failed_utts and skipped.",
        )
        p.add_argument("data")
        p.add_argument("lang")
        p.add_argument(
            "src_dir",
            help="exp dir with final.mdl and tree (ours or Kaldi's: final.mat + splice_opts "
            "for LDA systems, cmvn_opts)",
        )
        p.add_argument("out_dir", help="output dir, e.g. exp/tri1_ali")
        p.add_argument("--nj", type=int, default=1, help="parallel processes (1)")
        add_cmd_arg(p)
        p.add_argument("--beam", type=float, default=10.0, help="alignment beam (10)")
        p.add_argument("--retry-beam", dest="retry_beam", type=float, default=40.0, help="(40)")
        p.add_argument(
            "--boost-silence", dest="boost_silence", type=float, default=1.0,
            help="factor on the optional silence's likelihood (1.0)",
        )  # fmt: skip
        p.add_argument(
            "--max-missing-text-fraction", type=float,
            help="utterances without a transcript are listed and not aligned; more than this "
            "fraction of them is an error (0.1)",
        )  # fmt: skip
        p.add_argument(
            "--transform-dir",
            dest="transform_dir",
            help="dir with fMLLR transforms trans.1 .. trans.N of DATA's speakers (a Kaldi SAT "
            "dir, e.g. exp/tri3_ali): applied after the model's features",
        )
        p.set_defaults(func=_align_si)

    p = subparsers.add_parser(
        "align-fmllr",
        help="align a data dir with a SAT system, estimating fMLLR (steps/align_fmllr.sh)",
        description="Align DATA with SRC_DIR/final.alimdl on speaker-independent features, "
        "estimate each speaker's fMLLR transform, align again with SRC_DIR/final.mdl on the "
        "adapted features. Writes Kaldi's ali dir: ali.JOB.gz, trans.JOB, num_jobs, "
        "final.mdl, final.alimdl, tree, final.mat, per-job logs.",
    )
    p.add_argument("data")
    p.add_argument("lang")
    p.add_argument("src_dir", help="SAT exp dir (final.mdl, final.alimdl)")
    p.add_argument("out_dir", help="output dir, e.g. exp/tri3_ali")
    p.add_argument("--nj", type=int, default=1, help="parallel jobs (1)")
    add_cmd_arg(p)
    p.add_argument("--beam", type=float, default=10.0, help="alignment beam (10)")
    p.add_argument("--retry-beam", dest="retry_beam", type=float, default=40.0, help="(40)")
    p.add_argument("--boost-silence", dest="boost_silence", type=float, default=1.0, help="(1.0)")
    p.set_defaults(func=_align_fmllr)

    p = subparsers.add_parser(
        "decode-fmllr",
        help="two-pass decoding of a SAT system with fMLLR (steps/decode_fmllr.sh)",
        description="Decode DATA with EXP/final.alimdl on speaker-independent features, "
        "estimate each speaker's fMLLR transform from the best paths, decode with "
        "EXP/final.mdl, re-estimate the transform and decode again. DECODE_DIR gets "
        "lat.J.ark, hyp.txt, trans.JOB and the first passes in si/ and pass2/.",
    )
    p.add_argument("graph_dir", help="graph dir of EXP/final.mdl (`pykaldi2 mkgraph`)")
    p.add_argument("data", help="data dir (feats.scp, cmvn.scp, utt2spk)")
    p.add_argument("exp", help="SAT exp dir (final.mdl, final.alimdl)")
    p.add_argument("decode_dir")
    p.add_argument("--nj", type=int, default=1, help="parallel jobs, by speaker (1)")
    add_cmd_arg(p)
    p.add_argument("--beam", type=float, default=13.0, help="(13)")
    p.add_argument("--first-beam", dest="first_beam", type=float, default=10.0, help="SI pass (10)")
    p.add_argument("--lattice-beam", dest="lattice_beam", type=float, default=6.0, help="(6)")
    p.add_argument("--acoustic-scale", dest="acoustic_scale", type=float, default=0.1, help="(0.1)")
    p.add_argument(
        "--silence-weight", dest="silence_weight", type=float, default=0.01,
        help="weight of silence frames in the fMLLR statistics (0.01)",
    )  # fmt: skip
    p.add_argument("--ref", help="reference text: score the decode dir afterwards")
    p.set_defaults(func=_decode_fmllr)
    p = subparsers.add_parser(
        "gmm-copy",
        help="copy a GMM model into Kaldi's format, binary or text (Kaldi's gmm-copy)",
        description="Read a model (Kaldi binary or text final.mdl with its dir's tree, "
        "final.mat, opts files; or a pickled final.mdl of an earlier pykaldi2) and write "
        "MODEL_OUT in Kaldi's format, with tree, final.mat/splice_opts (LDA), cmvn_opts and "
        "MODEL_OUT.json beside it. The way to convert old pickled models in place.",
    )
    p.add_argument("model_in")
    p.add_argument("model_out")
    p.add_argument(
        "--binary", choices=("true", "false"), default="true", help="binary or text (true)"
    )
    p.set_defaults(func=_gmm_copy)
    p = subparsers.add_parser(
        "gmm-info",
        help="print the sizes of a GMM model (Kaldi's gmm-info)",
        description="Number of phones, pdfs, transition-ids, transition-states, the feature "
        "dimension and the number of Gaussians of MODEL (ours or Kaldi's).",
    )
    p.add_argument("model")
    p.set_defaults(func=_gmm_info)

    for name, to in (("ali-to-pdf", "pdf"), ("ali-to-phones", "phones")):
        p = subparsers.add_parser(
            name,
            help=f"alignments -> {'pdf-ids' if to == 'pdf' else 'phone sequences'} as text",
            description=f"Kaldi's {name}: read an ali archive (.ark/.scp/.gz) and write one "
            "text line per utterance.",
        )
        p.add_argument("model", help="final.mdl the alignments belong to")
        p.add_argument("ali", help="an ali dir, ali.scp, ali.ark or ali.N.gz")
        p.add_argument("out", help="output text file")
        if to == "phones":
            p.add_argument(
                "--per-frame",
                dest="per_frame",
                action="store_true",
                help="one phone per frame instead of the phone sequence",
            )
        p.set_defaults(func=_ali_convert, to=to)
