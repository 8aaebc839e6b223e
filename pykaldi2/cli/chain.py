"""``pykaldi2`` LF-MMI (chain) graph commands: chain-est-phone-lm, chain-make-den-fst."""

from __future__ import annotations

import argparse


def _load_model(path: str):
    from pykaldi2.hmm.model import GmmModel

    return GmmModel.load(path)


def _est_phone_lm(args: argparse.Namespace) -> int:
    from pykaldi2.hmm.ali import ali_to_phones, read_ali
    from pykaldi2.lang.den_fst import write_fst
    from pykaldi2.lang.phone_lm import PhoneLmEstimator, PhoneLmOptions
    from pykaldi2.utils.log import progress

    model = _load_model(args.model)
    est = PhoneLmEstimator(
        PhoneLmOptions(args.ngram_order, args.no_prune_ngram_order, args.num_extra_lm_states)
    )
    num = 0
    for ali_path in args.ali:
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


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser(
        "chain-est-phone-lm",
        help="estimate the LF-MMI phone LM (no backoff arcs) from alignments",
        description="Kaldi's chain-est-phone-lm: a phone n-gram without smoothing or backoff "
        "arcs, whose histories of length >= --no-prune-ngram-order are merged into shorter ones "
        "(least likelihood loss first) until --num-extra-lm-states remain beyond the basic ones. "
        "The phone sequences are read from transition-id alignments (ali-to-phones).",
        formatter_class=fmt,
    )
    p.add_argument("model", help="the model pickle that made the alignments (final.mdl)")
    p.add_argument("ali", nargs="+", help="alignment archives (.ark, .scp or ali.N.gz)")
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
    p.add_argument("model", help="model pickle with the chain tree and transition model")
    p.add_argument("phone_lm", help="phone LM FST from chain-est-phone-lm")
    p.add_argument("dir", help="output dir, e.g. exp/chain")
    p.set_defaults(func=_make_den_fst)
