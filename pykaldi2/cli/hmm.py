"""``pykaldi2`` HMM-GMM commands: train-mono, train-deltas, train-lda-mllt, align-si,
ali-to-pdf, ali-to-phones (Kaldi's steps/train_*.sh, steps/align_si.sh and the ali-* tools).

Each training command reads ``<data>`` (feats.scp + cmvn.scp + text) and ``<lang>`` and writes
a self-describing exp dir: final.mdl, tree (Kaldi binary), ali.ark/scp, pdf.ark/scp,
config.json and log/history.jsonl.
"""

from __future__ import annotations

import argparse


def _override(cfg_cls, args: argparse.Namespace, names: list[str]):
    """A config dataclass from --config (JSON/YAML) plus explicit command-line options."""
    d: dict = {}
    if args.config:
        import yaml

        with open(args.config, encoding="utf-8") as f:
            d = dict(yaml.safe_load(f) or {})
    for n in names:
        v = getattr(args, n, None)
        if v is not None:
            d[n] = v
    try:
        return cfg_cls.from_dict(d)
    except (TypeError, ValueError) as e:
        from pykaldi2.utils.errors import DataError

        raise DataError(str(e), file=args.config or "command line") from None


def _summary(exp: str, model, alis, history) -> None:
    from pykaldi2.hmm.model import gmm_info

    last = history[-1]
    info = gmm_info(model)
    print(
        f"{exp}: {info['number_of_pdfs']} pdfs, {info['number_of_gaussians']} Gaussians, "
        f"{len(alis)} utterances aligned, final log-likelihood per frame "
        f"{last['like_per_frame']:.3f} over {last['frames']} frames"
    )


def _tree_inputs(lang):
    from pykaldi2.hmm.tri import TreeInputs

    try:
        extra = lang.read_int_sets("extra_questions")
    except Exception:
        extra = []
    return TreeInputs(
        roots=lang.roots(),
        phone_sets=lang.read_int_sets("sets"),
        extra_questions=extra,
        ci_phones=lang.silence_phones,
    )


def _train_mono(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.inputs import load_training_inputs
    from pykaldi2.hmm.mono import MonoConfig, train_mono

    cfg = _override(MonoConfig, args, ["num_iters", "totgauss", "boost_silence", "max_iter_inc"])
    inp = load_training_inputs(args.data, args.lang, deltas=True, max_utts=args.max_utts)
    lang = inp.lang
    model, alis, history = train_mono(
        inp.feats,
        inp.texts,
        lang.read_topo(),
        lang.read_L(),
        lang.disambig_phones,
        lang.silence_phones,
        cfg,
        exp_dir=None,
        shared_phones=lang.read_int_sets("sets"),
    )
    model.feat_type = "delta"
    _write(args.exp, model, alis, history, cfg.to_dict())
    _summary(args.exp, model, alis, history)
    return 0


def _write(exp, model, alis, history, cfg_dict) -> None:
    from pykaldi2.hmm.mono import write_exp_dir

    write_exp_dir(exp, model, alis, history, cfg_dict)


def _load_prev(ali_dir: str):
    from pathlib import Path

    from pykaldi2.hmm.ali import read_ali
    from pykaldi2.hmm.model import GmmModel

    d = Path(ali_dir)
    return GmmModel.load(d / "final.mdl"), read_ali(d / "ali.scp")


def _train_deltas(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.inputs import feats_for_model, load_texts
    from pykaldi2.hmm.tri import DeltasConfig, train_deltas
    from pykaldi2.lang.lang_dir import load_lang

    cfg = _override(DeltasConfig, args, ["num_leaves", "tot_gauss", "num_iters", "boost_silence"])
    lang = load_lang(args.lang)
    prev, prev_alis = _load_prev(args.ali_dir)
    feats = feats_for_model(prev, args.data)
    texts = {u: t for u, t in load_texts(args.data, lang).items() if u in feats}
    model, alis, history = train_deltas(
        feats,
        texts,
        lang.read_L(),
        lang.disambig_phones,
        lang.silence_phones,
        _tree_inputs(lang),
        prev,
        prev_alis,
        cfg,
    )
    _write(args.exp, model, alis, history, cfg.to_dict())
    _summary(args.exp, model, alis, history)
    return 0


def _align_si(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pykaldi2.hmm.ali import ali_to_pdf, write_ali
    from pykaldi2.hmm.align import AlignConfig, compile_train_graphs, gmm_align_compiled
    from pykaldi2.hmm.inputs import feats_for_model, load_texts
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.lang.lang_dir import load_lang

    lang = load_lang(args.lang)
    model = GmmModel.load(Path(args.src_dir) / "final.mdl")
    feats = feats_for_model(model, args.data)
    texts = {u: t for u, t in load_texts(args.data, lang).items() if u in feats}
    graphs = compile_train_graphs(model, lang.read_L(), lang.disambig_phones, texts)
    res = gmm_align_compiled(
        model, graphs, feats, AlignConfig(beam=args.beam, retry_beam=args.retry_beam)
    )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "final.mdl")
    model.write_tree(out / "tree")
    write_ali(out / "ali.ark", res.alis)
    write_ali(out / "pdf.ark", {u: ali_to_pdf(model, a) for u, a in res.alis.items()})
    print(
        f"{out}: aligned {len(res.alis)} of {len(graphs)} utterances "
        f"({len(res.failed)} failed), log-likelihood per frame {res.like_per_frame:.3f}"
    )
    return 0 if res.alis else 1


def _ali_convert(args: argparse.Namespace, per: str) -> int:
    from pykaldi2.hmm.ali import ali_to_pdf, ali_to_phones, read_ali
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.utils.io import atomic_write

    model = GmmModel.load(args.model)
    alis = read_ali(args.ali)
    with atomic_write(args.out) as f:
        for utt, a in sorted(alis.items()):
            seq = ali_to_pdf(model, a) if per == "pdf" else ali_to_phones(model, a, args.per_frame)
            f.write(utt + " " + " ".join(str(int(v)) for v in seq) + "\n")
    print(f"{args.out}: {len(alis)} utterances")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-mono",
        help="flat-start monophone GMM training (steps/train_mono.sh)",
        description="Monophone HMM-GMM training from a flat start on CMVN'd features + deltas: "
        "equal alignment, then NUM_ITERS iterations of Viterbi realignment (at Kaldi's "
        "realign iterations), statistics and re-estimation with mixing up to TOTGAUSS.",
    )
    p.add_argument("data", help="data dir with feats.scp, cmvn.scp and text")
    p.add_argument("lang", help="lang dir (phones.txt, words.txt, L.fst, topo, phones/)")
    p.add_argument("exp", help="output exp dir, e.g. exp/mono")
    p.add_argument("--config", help="YAML/JSON file of MonoConfig fields")
    p.add_argument("--num-iters", dest="num_iters", type=int, help="iterations (40)")
    p.add_argument("--totgauss", type=int, help="target number of Gaussians (1000)")
    p.add_argument("--max-iter-inc", dest="max_iter_inc", type=int, help="last mix-up iter (30)")
    p.add_argument(
        "--boost-silence",
        dest="boost_silence",
        type=float,
        help="scale silence likelihoods in alignment (1.0)",
    )
    p.add_argument(
        "--max-utts",
        dest="max_utts",
        type=int,
        default=0,
        help="use only the first N utterances (Kaldi trains mono on a subset)",
    )
    p.set_defaults(func=_train_mono)

    p = subparsers.add_parser(
        "train-deltas",
        help="triphone GMM training on delta features (steps/train_deltas.sh)",
        description="Build a decision tree from the alignments in ALI_DIR (acc-tree-stats, "
        "cluster-phones, build-tree), initialize one Gaussian per leaf, convert the "
        "alignments, then train (realign at 10 20 30, mix up to --tot-gauss).",
    )
    p.add_argument("data")
    p.add_argument("lang")
    p.add_argument("ali_dir", help="dir with final.mdl and ali.scp (e.g. exp/mono)")
    p.add_argument("exp", help="output exp dir, e.g. exp/tri1")
    p.add_argument("--config", help="YAML/JSON file of DeltasConfig fields")
    p.add_argument("--num-leaves", dest="num_leaves", type=int, help="max tree leaves (2000)")
    p.add_argument("--tot-gauss", dest="tot_gauss", type=int, help="target Gaussians (10000)")
    p.add_argument("--num-iters", dest="num_iters", type=int, help="iterations (35)")
    p.add_argument("--boost-silence", dest="boost_silence", type=float, help="(1.0)")
    p.set_defaults(func=_train_deltas)

    p = subparsers.add_parser(
        "align-si",
        help="align a data dir with a GMM model (steps/align_si.sh)",
        description="Viterbi-align every utterance of DATA to its transcript with "
        "SRC_DIR/final.mdl; writes OUT_DIR/ali.{ark,scp} (transition-ids), pdf.{ark,scp} "
        "(pdf-id targets), final.mdl and tree. Failed utterances are listed and skipped.",
    )
    p.add_argument("data")
    p.add_argument("lang")
    p.add_argument("src_dir", help="exp dir with final.mdl")
    p.add_argument("out_dir", help="output dir, e.g. exp/tri1_ali")
    p.add_argument("--beam", type=float, default=10.0, help="alignment beam (10)")
    p.add_argument("--retry-beam", dest="retry_beam", type=float, default=40.0, help="(40)")
    p.set_defaults(func=_align_si)

    for name, per in (("ali-to-pdf", "pdf"), ("ali-to-phones", "phones")):
        p = subparsers.add_parser(
            name,
            help=f"alignments -> {'pdf-ids' if per == 'pdf' else 'phone sequences'} as text",
            description=f"Kaldi's {name}: read an ali archive (.ark/.scp/.gz) and write one "
            "text line per utterance.",
        )
        p.add_argument("model", help="final.mdl the alignments belong to")
        p.add_argument("ali", help="ali.scp, ali.ark or ali.N.gz")
        p.add_argument("out", help="output text file")
        if per == "phones":
            p.add_argument(
                "--per-frame",
                dest="per_frame",
                action="store_true",
                help="one phone per frame instead of the phone sequence",
            )
        p.set_defaults(func=lambda a, per=per: _ali_convert(a, per))
