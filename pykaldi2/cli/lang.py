"""``pykaldi2`` lang commands: prepare-dict, prepare-lang, train-lm, make-g (Kaldi's
local/prepare_dict.sh, utils/prepare_lang.sh, an n-gram trainer, utils/format_lm.sh)."""

from __future__ import annotations

import argparse


def _prepare_dict(args: argparse.Namespace) -> int:
    from pykaldi2.lang import dicts

    if args.corpus == "graphemes":
        if args.lm_text:
            print("--lm-text is for an4; use train-lm --skip-first-field DATA_DIR/text")
            return 2
        d = dicts.prepare_grapheme_dict(
            args.corpus_dir, args.dict_dir, oov_word=args.oov_word, apostrophe=args.apostrophe
        )
    elif args.corpus == "lexicon":
        if args.lm_text:
            print("--lm-text is for an4; use train-lm --skip-first-field DATA_DIR/text")
            return 2
        d = dicts.prepare_lexicon_dict(
            args.corpus_dir, args.dict_dir, oov_word=args.oov_word, stress=args.stress
        )
    elif args.corpus == "an4":
        d = dicts.prepare_an4_dict(args.corpus_dir, args.dict_dir, oov_word=args.oov_word)
        if args.lm_text:
            from pykaldi2.utils.io import atomic_write_text

            sents = dicts.an4_lm_text(args.corpus_dir)
            atomic_write_text(args.lm_text, "".join(" ".join(s) + "\n" for s in sents))
            print(f"{args.lm_text}: {len(sents)} sentences (AN4 train transcripts)")
    else:
        if args.lm_text:
            print("--lm-text is for an4; LibriSpeech has official ARPA LMs (use make-g)")
            return 2
        d = dicts.prepare_librispeech_dict(args.corpus_dir, args.dict_dir, oov_word=args.oov_word)
    print(
        f"{args.dict_dir}: {len(d.lexicon)} pronunciations, "
        f"{len({e.word for e in d.lexicon})} words, {len(d.all_phones)} phones"
    )
    return 0


def _prepare_lang(args: argparse.Namespace) -> int:
    from pykaldi2.lang.lang_dir import load_lang
    from pykaldi2.lang.prepare_lang import PrepareLangConfig, prepare_lang
    from pykaldi2.lang.topo import TopoConfig, TopoEntry

    if args.chain_topo:
        topo = TopoConfig.chain()
    else:
        topo = TopoConfig(
            TopoEntry("left-to-right", args.nonsil_states),
            TopoEntry(args.sil_topo, args.sil_states),
        )
    config = PrepareLangConfig(
        oov_word=args.oov_word,
        position_dependent=not args.position_independent,
        sil_prob=args.sil_prob,
        share_silence_phones=args.share_silence_phones,
        topo=topo,
    )
    prepare_lang(args.dict_dir, args.oov_word, args.lang_dir, config=config)
    lang = load_lang(args.lang_dir)
    print(
        f"{args.lang_dir}: {len(lang.words) - 4} words, {len(lang.phone_ids)} phones "
        f"({len(lang.silence_phones)} silence), {len(lang.disambig_phones)} disambiguation symbols"
    )
    return 0


def _train_lm(args: argparse.Namespace) -> int:
    from pykaldi2.lang.arpa import read_arpa
    from pykaldi2.lang.train_lm import TrainLmConfig, train_lm

    config = TrainLmConfig(
        order=args.order,
        oov_word=args.oov_word,
        skip_first_field=args.skip_first_field,
        full_vocab=not args.no_full_vocab,
    )
    oovs = train_lm(args.text, args.arpa, words=args.words, config=config,
                    tokenizer=args.tokenizer)  # fmt: skip
    counts = read_arpa(args.arpa).counts()
    msg = f"{args.arpa}: {config.order}-gram, n-gram counts {counts}"
    if args.words:
        msg += f"; {sum(oovs.values())} OOV tokens ({len(oovs)} words) mapped to {args.oov_word}"
    print(msg)
    return 0


def _make_g(args: argparse.Namespace) -> int:
    from pykaldi2.lang.format_lm import format_lm

    r = format_lm(args.lang_dir, args.arpa, args.out_dir, check_words=not args.no_check_words)
    print(
        f"{args.out_dir}/G.fst: {r.num_states} states, {r.num_arcs} arcs "
        f"({r.num_backoff_arcs} backoff), word mass per state in [{r.min_mass:.3f}, {r.max_mass:.3f}]"
    )
    return 0


def _validate_lang(args: argparse.Namespace) -> int:
    import sys

    from pykaldi2.lang.validate import validate_lang

    problems = validate_lang(args.lang_dir)
    for p in problems:
        print(p)
    print(f"{args.lang_dir}: {len(problems) or 'OK, no'} problem(s)", file=sys.stderr)
    return 1 if problems else 0


def register(sub: argparse._SubParsersAction) -> None:
    from pykaldi2.lang.dicts import STRESS_MODES

    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser(
        "prepare-dict",
        help="write a dictionary dir (lexicon, phone lists) for a corpus",
        description="Write a Kaldi dictionary dir: lexicon.txt, nonsilence_phones.txt, "
        "silence_phones.txt (SIL, SPN), optional_silence.txt, extra_questions.txt. "
        "an4: CORPUS_DIR is the an4/ folder (etc/an4.dic, an4.phone, an4.filler). "
        "librispeech: CORPUS_DIR holds librispeech-lexicon.txt (and librispeech-vocab.txt). "
        "graphemes: CORPUS_DIR is a data dir (e.g. data/train); every word of its text is "
        "spelled with its letters as phones (HELLO -> H E L L O), for corpora without a "
        "lexicon such as the Asterisk demo. "
        "lexicon: CORPUS_DIR is any Kaldi-style lexicon file (WORD P1 P2 ...; CMUdict's "
        "WORD(2) alternatives allowed), e.g. speechocean762's resource/lexicon.txt; SIL and SPN "
        "are added as silence phones with the words !SIL, <SPOKEN_NOISE> and the OOV word.",
        formatter_class=fmt,
    )
    p.add_argument("corpus", choices=["an4", "librispeech", "graphemes", "lexicon"])
    p.add_argument(
        "corpus_dir",
        help="an4/ corpus dir, the LibriSpeech LM resources dir, (graphemes) a data dir, or "
        "(lexicon) a lexicon file",
    )
    p.add_argument("dict_dir", help="output dictionary dir, e.g. data/local/dict")
    p.add_argument("--oov-word", default="<UNK>", help="word for out-of-vocabulary words (SPN)")
    p.add_argument("--lm-text", help="an4 only: also write the train transcripts here (LM text)")
    p.add_argument(
        "--apostrophe",
        choices=["drop", "phone"],
        default="drop",
        help="graphemes only: drop apostrophes (DON'T -> D O N T) or make them a phone (APOS)",
    )
    p.add_argument(
        "--stress",
        choices=list(STRESS_MODES),
        default="keep",
        help="lexicon only: keep CMU stress digits (AH0/AH1 share a tree root, one extra "
        "question per stress mark, as Kaldi's LibriSpeech recipe) or strip them (AH0 -> AH)",
    )
    p.set_defaults(func=_prepare_dict)

    p = sub.add_parser(
        "prepare-lang",
        help="dictionary dir -> lang dir (phones.txt, words.txt, L.fst, topo, ...)",
        description="Kaldi's utils/prepare_lang.sh: writes phones.txt, words.txt, topo, "
        "L.fst, L_disambig.fst (with #0 self-loops), oov.{txt,int} and phones/ (silence, "
        "nonsilence, disambig, sets, roots, extra_questions, word_boundary, align_lexicon).",
        formatter_class=fmt,
    )
    p.add_argument("dict_dir")
    p.add_argument("oov_word", help="the OOV word; must be in the lexicon (e.g. '<UNK>')")
    p.add_argument("lang_dir")
    p.add_argument("--position-independent", action="store_true", help="no _B/_E/_I/_S phones")
    p.add_argument("--sil-prob", type=float, default=0.5, help="optional silence probability")
    p.add_argument("--share-silence-phones", action="store_true", help="one root for silences")
    p.add_argument("--nonsil-states", type=int, default=3, help="HMM states of nonsilence phones")
    p.add_argument("--sil-states", type=int, default=5, help="HMM states of silence phones")
    p.add_argument(
        "--sil-topo",
        choices=["left-to-right", "ergodic"],
        default="ergodic",
        help="silence topology (Kaldi's prepare_lang.sh: 5-state ergodic)",
    )
    p.add_argument("--chain-topo", action="store_true", help="1-state LF-MMI topology")
    p.set_defaults(func=_prepare_lang)

    p = sub.add_parser(
        "train-lm",
        help="train an interpolated modified Kneser-Ney n-gram LM (ARPA)",
        description="Train an n-gram ARPA LM with interpolated modified Kneser-Ney smoothing. "
        "TEXT has one sentence per line. With --words, words not in the vocabulary are mapped "
        "to --oov-word and counted, and every vocabulary word gets a probability.",
        formatter_class=fmt,
    )
    p.add_argument("text", help="training text (a Kaldi `text` file with --skip-first-field)")
    p.add_argument("arpa", help="output ARPA file (.gz to compress)")
    p.add_argument("--order", type=int, default=3, help="n-gram order")
    p.add_argument("--words", help="lang/words.txt or a lexicon: the LM vocabulary")
    p.add_argument("--oov-word", default="<UNK>", help="what words outside --words become")
    p.add_argument("--skip-first-field", action="store_true", help="lines start with an utt id")
    p.add_argument(
        "--tokenizer", metavar="TOKENIZER_MODEL",
        help="cut the text into this sentencepiece model's pieces first: a piece LM for "
        "transducer shallow fusion (decode-transducer --lm)",
    )  # fmt: skip
    p.add_argument(
        "--no-full-vocab", action="store_true", help="leave unseen vocabulary words out of the LM"
    )
    p.set_defaults(func=_train_lm)

    p = sub.add_parser(
        "make-g",
        help="ARPA LM + lang dir -> lang dir with G.fst (format_lm)",
        description="Kaldi's utils/format_lm.sh: copy LANG_DIR to OUT_DIR and add G.fst made "
        "from the ARPA LM (kaldilm arpa2fst, #0 on backoff arcs), then check G.",
        formatter_class=fmt,
    )
    p.add_argument("lang_dir")
    p.add_argument("arpa", help="ARPA LM (.gz allowed)")
    p.add_argument("out_dir", help="output lang dir, e.g. data/lang_test")
    p.add_argument(
        "--no-check-words",
        action="store_true",
        help="skip reading the ARPA in Python to list words missing from words.txt (huge LMs)",
    )
    p.set_defaults(func=_make_g)

    p = sub.add_parser(
        "validate-lang",
        help="check a lang dir for inconsistencies (validate_lang.pl)",
        description="Report every inconsistency of a lang dir: symbol tables, phones/ lists "
        "and sets, topology, L.fst/L_disambig.fst (and G.fst when present). Exit 1 on problems.",
        formatter_class=fmt,
    )
    p.add_argument("lang_dir")
    p.set_defaults(func=_validate_lang)
