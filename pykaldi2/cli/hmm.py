"""``pykaldi2`` HMM-GMM commands: train-mono, train-deltas, train-lda-mllt, align-si,
ali-to-pdf, ali-to-phones (Kaldi's steps/train_*.sh, steps/align_si.sh and the ali-* tools).

Each training command reads ``<data>`` (feats.scp + cmvn.scp + text) and ``<lang>`` and writes
an exp dir that Kaldi's tools read too: final.mdl and tree (Kaldi binary), final.mat +
splice_opts (LDA), cmvn_opts, phones.txt, num_jobs, final.occs, and ours beside them:
final.mdl.json, ali.ark/scp, pdf.ark/scp, config.json and log/history.jsonl. The previous
system (ALI_DIR) may be ours or Kaldi's (ali.N.gz).
"""

from __future__ import annotations

import argparse

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


def _summary(args: argparse.Namespace, model, alis, history) -> int:
    from pykaldi2.hmm.exp_dir import write_side_files
    from pykaldi2.hmm.model import gmm_info

    exp = args.exp
    write_side_files(exp, lang_dir=args.lang, num_jobs=1, model=model, alis=alis)

    last = history[-1]
    info = gmm_info(model)
    print(
        f"{exp}: {info['number_of_pdfs']} pdfs, {info['number_of_gaussians']} Gaussians, "
        f"{len(alis)} utterances aligned, log-likelihood per frame "
        f"{last['like_per_frame']:.3f} over {last['frames']} frames (last iteration)"
    )
    return 0


def _prev_system(args: argparse.Namespace):
    """lang, previous model + alignments, and the transcripts of ``args.data``."""
    from pathlib import Path

    from pykaldi2.hmm.exp_dir import check_phones_compatible, read_ali_dir
    from pykaldi2.hmm.inputs import load_texts
    from pykaldi2.hmm.tri import TreeInputs
    from pykaldi2.lang.lang_dir import load_lang

    lang = load_lang(args.lang)
    d = Path(args.ali_dir)
    check_phones_compatible(args.lang, d)
    prev_alis, prev = read_ali_dir(d)
    texts = load_texts(args.data, lang)
    extra_path = lang.dir / "phones" / "extra_questions.int"
    tree_inputs = TreeInputs(
        roots=lang.roots(),
        phone_sets=lang.read_int_sets("sets"),
        extra_questions=lang.read_int_sets("extra_questions") if extra_path.is_file() else [],
        ci_phones=lang.silence_phones,
    )
    return lang, prev, prev_alis, texts, tree_inputs


def _train_mono(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.inputs import load_training_inputs
    from pykaldi2.hmm.mono import MonoConfig, train_mono

    cfg = _config(MonoConfig, args, _MONO_OPTS)
    inp = load_training_inputs(
        args.data, args.lang, deltas=True, max_utts=args.max_utts,
        max_missing_text_fraction=cfg.max_missing_text_fraction,
    )  # fmt: skip
    lang = inp.lang
    model, alis, history = train_mono(
        inp.feats,
        inp.texts,
        lang.read_topo(),
        lang.read_L(),
        lang.disambig_phones,
        lang.silence_phones,
        cfg,
        exp_dir=args.exp,
        shared_phones=lang.read_int_sets("sets"),
    )
    return _summary(args, model, alis, history)


def _train_tri(args: argparse.Namespace) -> int:
    """train-deltas (features as the previous model's) or train-lda-mllt (base features)."""
    from pathlib import Path

    from pykaldi2.data.transcripts import check_transcribed
    from pykaldi2.hmm.inputs import feats_for_model, load_feats
    from pykaldi2.hmm.lda import LdaMlltConfig, train_lda_mllt
    from pykaldi2.hmm.tri import DeltasConfig, train_deltas

    lda = args.command == "train-lda-mllt"
    cfg = _config(LdaMlltConfig if lda else DeltasConfig, args, _TRI_OPTS)
    lang, prev, prev_alis, texts, tree_inputs = _prev_system(args)
    if lda:  # the previous system's CMVN options, then splicing + LDA (train_lda_mllt.sh)
        norm_means, norm_vars = prev.cmvn_config
        feats = load_feats(args.data, cmvn=norm_means, deltas=False, norm_vars=norm_vars)
    else:
        feats = feats_for_model(prev, args.data)
    keep = check_transcribed(
        feats, texts, text_file=str(Path(args.data) / "text"),
        max_missing_fraction=cfg.max_missing_text_fraction,
    )  # fmt: skip
    texts = {u: texts[u] for u in keep}
    train = train_lda_mllt if lda else train_deltas
    model, alis, history = train(
        feats,
        texts,
        lang.read_L(),
        lang.disambig_phones,
        lang.silence_phones,
        tree_inputs,
        prev,
        prev_alis,
        cfg,
        exp_dir=args.exp,
    )
    return _summary(args, model, alis, history)


def _align_si(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pykaldi2.hmm.ali import write_ali_dir
    from pykaldi2.hmm.align import AlignConfig, align_si
    from pykaldi2.hmm.exp_dir import check_phones_compatible, write_side_files
    from pykaldi2.hmm.model import GmmModel

    model_path = Path(args.src_dir) / "final.mdl"
    check_phones_compatible(args.lang, args.src_dir)
    model = GmmModel.load(model_path)
    over = {"max_missing_text_fraction": args.max_missing_text_fraction}
    cfg = AlignConfig(
        beam=args.beam, retry_beam=args.retry_beam,
        **{k: v for k, v in over.items() if v is not None},
    )  # fmt: skip
    res = align_si(
        args.data, args.lang, model_path, cfg, nj=args.nj, transform_dir=args.transform_dir
    )
    out = write_ali_dir(args.out_dir, model, res)
    write_side_files(out, lang_dir=args.lang, num_jobs=args.nj, model=model, alis=res.alis)
    print(
        f"{out}: aligned {len(res.alis)} of {len(res.alis) + len(res.failed)} utterances "
        f"({len(res.failed)} failed{', listed in failed_utts' if res.failed else ''}), "
        f"log-likelihood per frame {res.like_per_frame:.3f}"
    )
    return 0 if res.alis else 1


def _ali_convert(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.ali import ali_to_pdf, ali_to_phones, read_ali
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.utils.io import atomic_write

    model = GmmModel.load(args.model)
    alis = read_ali(args.ali)
    with atomic_write(args.out) as f:
        for utt, a in sorted(alis.items()):
            if args.to == "pdf":
                seq = ali_to_pdf(model, a)
            else:
                seq = ali_to_phones(model, a, per_frame=args.per_frame)
            f.write(utt + " " + " ".join(str(int(v)) for v in seq) + "\n")
    print(f"{args.out}: {len(alis)} utterances")
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
    p.set_defaults(func=func)
    if not prev:
        p.add_argument(
            "--max-utts",
            dest="max_utts",
            type=int,
            default=0,
            help="use only the first N utterances (Kaldi trains mono on a subset)",
        )


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

    for name in ("align-si", "align"):
        p = subparsers.add_parser(
            name,
            help="align a data dir with a GMM model in parallel (steps/align_si.sh)"
            + ("" if name == "align-si" else "; same as align-si"),
            description="Viterbi-align every utterance of DATA to its transcript with "
            "SRC_DIR/final.mdl in --nj processes; writes OUT_DIR/ali.{ark,scp} "
            "(transition-ids), pdf.{ark,scp} (pdf-id targets), final.mdl and tree. Failed "
            "utterances are logged, listed in OUT_DIR/failed_utts and skipped.",
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
        p.add_argument("--beam", type=float, default=10.0, help="alignment beam (10)")
        p.add_argument("--retry-beam", dest="retry_beam", type=float, default=40.0, help="(40)")
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
        p.add_argument("ali", help="ali.scp, ali.ark or ali.N.gz")
        p.add_argument("out", help="output text file")
        if to == "phones":
            p.add_argument(
                "--per-frame",
                dest="per_frame",
                action="store_true",
                help="one phone per frame instead of the phone sequence",
            )
        p.set_defaults(func=_ali_convert, to=to)
