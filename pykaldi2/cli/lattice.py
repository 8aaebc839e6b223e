"""``pykaldi2 lattice-best-path | lattice-to-nbest | lattice-to-ctm | lattice-copy``: Kaldi's
lattice tools on lattice archives (ours or Kaldi's: ark, ark.gz such as a decode dir's
lat.N.gz, scp; binary or text; CompactLattice or Lattice).

The scores of a path are ``lm_scale * graph + acoustic_scale * acoustic + wip * words``
(Kaldi's lattice-scale / lattice-add-penalty before the tool); ``--lmwt L`` is the scoring
scripts' ``--inv-acoustic-scale L``. Several archives may be given (a decode dir's
``lat.*.gz``); a decode dir stands for its lattices.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _archives(specs: list[str]) -> list[Path]:
    from pykaldi2.decoding.sweep import lattice_files

    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        out += lattice_files(p) if p.is_dir() else [p]
    return out


def _lattices(specs: list[str]):
    from pykaldi2.decoding.lattice_io import read_archives

    return read_archives(_archives(specs))


def _lmwt(args) -> tuple[float, float]:
    """(lmwt, wip) of the path cost ``graph + acoustic / lmwt + wip * words``."""
    from pykaldi2.utils.errors import DataError

    if args.lmwt is not None:
        return float(args.lmwt), float(args.word_ins_penalty)
    if args.acoustic_scale <= 0 or args.lm_scale <= 0:
        raise DataError("--acoustic-scale and --lm-scale must be > 0")
    return args.lm_scale / args.acoustic_scale, args.word_ins_penalty / args.lm_scale


def _symbols(path: str | None):
    if path is None:
        return None
    from pykaldi2.lang.symbols import SymbolTable

    return SymbolTable.read(path)


def _word_str(words, ids: list[int]) -> list[str]:
    return words.syms(ids) if words is not None else [str(i) for i in ids]


def _out(path: str | None):
    """A text output: the file (written atomically) or stdout."""
    import contextlib

    from pykaldi2.utils.io import atomic_write

    if path is None or path == "-":
        return contextlib.nullcontext(sys.stdout)
    return atomic_write(path, "w", encoding="utf-8")


def _kaldi_text_line(key: str, items: list[str]) -> str:
    """An entry of Kaldi's text archive of integer vectors (``key w1 w2 \\n``: each item then
    a space), as lattice-best-path | int2sym.pl writes it."""
    return key + " " + "".join(f"{x} " for x in items) + "\n"


def _cmd_best_path(args) -> int:
    import contextlib

    from pykaldi2.decoding.lattice import best_path
    from pykaldi2.hmm.ali import AliWriter
    from pykaldi2.utils.log import progress

    lmwt, wip = _lmwt(args)
    words = _symbols(args.word_symbol_table)
    n_done = n_fail = 0
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(_out(args.output))
        # alignments written as they come (a job's alignments never held in memory)
        ali = stack.enter_context(AliWriter(args.ali_out)) if args.ali_out else None
        for utt, lat in progress(_lattices(args.lattices), desc="best paths", unit="lat"):
            p = best_path(lat, lmwt, wip)
            if p is None:
                n_fail += 1
                print(f"lattice-best-path: {utt}: no path to a final state", file=sys.stderr)
                continue
            f.write(_kaldi_text_line(utt, _word_str(words, p.words)))
            if ali is not None:
                ali.write(utt, p.ali)
            n_done += 1
    print(f"lattice-best-path: {n_done} done, {n_fail} without a final state", file=sys.stderr)
    return 0 if n_done else 1


def _cmd_nbest(args) -> int:
    from pykaldi2.decoding.compact_lattice import CompactLattice
    from pykaldi2.decoding.lattice import nbest_paths
    from pykaldi2.decoding.lattice_io import LatticeWriter

    lmwt, wip = _lmwt(args)
    words = _symbols(args.word_symbol_table)
    import contextlib

    with contextlib.ExitStack() as stack:
        writer = (
            stack.enter_context(LatticeWriter(args.nbest_out, binary=not args.text))
            if args.nbest_out
            else None
        )
        text = stack.enter_context(_out(args.output))
        for utt, lat in _lattices(args.lattices):
            clat = lat if isinstance(lat, CompactLattice) else CompactLattice.from_raw(lat)
            for k, p in enumerate(nbest_paths(clat, args.n, lmwt, wip), 1):
                key = f"{utt}-{k}"
                if writer is not None:
                    writer.write(key, clat.path_lattice(p.arcs, p.final_state))
                text.write(
                    f"{key} {p.graph_cost:.6g} {p.ac_cost:.6g} "
                    + " ".join(_word_str(words, p.words))
                    + "\n"
                )
    return 0


def _cmd_to_ctm(args) -> int:
    from pykaldi2.decoding.word_align import (
        lattice_to_ctm,
        read_align_lexicon,
        read_word_boundary,
    )
    from pykaldi2.hmm.model import GmmModel

    lmwt, wip = _lmwt(args)
    model = GmmModel.load(args.model)
    words = _symbols(args.word_symbol_table)
    lines, failed = lattice_to_ctm(
        _lattices(args.lattices),
        model,
        lmwt=lmwt,
        word_ins_penalty=wip,
        lexicon=read_align_lexicon(args.align_lexicon) if args.align_lexicon else None,
        boundary=read_word_boundary(args.word_boundary) if args.word_boundary else None,
        frame_shift=args.frame_shift,
        print_silence=args.print_silence,
        words=None if words is None else {i: words.sym(i) for i in range(len(words))},
    )
    with _out(args.output) as f:
        f.writelines(lines)
    for utt, err in failed.items():
        print(f"lattice-to-ctm: {utt}: {err}", file=sys.stderr)
    return 0 if lines or not failed else 1


def _cmd_copy(args) -> int:
    from pykaldi2.decoding.compact_lattice import CompactLattice
    from pykaldi2.decoding.lattice_io import LatticeWriter

    n = 0
    with LatticeWriter(args.output, binary=not args.text) as w:
        for utt, lat in _lattices(args.lattices):
            if args.write_compact and not isinstance(lat, CompactLattice):
                lat = CompactLattice.from_raw(lat)
            elif not args.write_compact and isinstance(lat, CompactLattice):
                lat = lat.to_raw()
            w.write(utt, lat)
            n += 1
    print(f"lattice-copy: copied {n} lattices to {args.output}", file=sys.stderr)
    return 0


def _add_scale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("lattices", nargs="+", help="lattice archives (ark, .gz, scp) or decode dirs")
    p.add_argument("--lmwt", type=float, help="LM weight (score_kaldi.sh's LMWT: acoustic / LMWT)")
    p.add_argument("--acoustic-scale", type=float, default=1.0, help="default: %(default)s")
    p.add_argument("--lm-scale", type=float, default=1.0, help="default: %(default)s")
    p.add_argument(
        "--word-ins-penalty", type=float, default=0.0, help="lattice-add-penalty (%(default)s)"
    )
    p.add_argument("--word-symbol-table", help="words.txt: print words, not ids")
    p.add_argument("--output", "-o", help="output text file (default: stdout)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "lattice-best-path",
        help="best path of each lattice: transcripts and alignments (lattice-best-path)",
        description="Kaldi's lattice-scale | lattice-add-penalty | lattice-best-path: writes "
        "'utt w1 w2 ...' per lattice (ids, or words with --word-symbol-table) and with "
        "--ali-out the transition-id alignments (a Kaldi ark: .ark + .scp, or .gz).",
        epilog="example: pykaldi2 lattice-best-path --lmwt 10 --word-symbol-table "
        "exp/tri1/graph/words.txt exp/tri1/decode_test/lat.1.gz",
    )
    _add_scale_args(p)
    p.add_argument("--ali-out", help="write the best paths' alignments here (ali.ark or ali.gz)")
    p.set_defaults(func=_cmd_best_path)

    p = subparsers.add_parser(
        "lattice-to-nbest",
        help="the n best paths of each lattice (lattice-to-nbest, nbest-to-linear)",
        description="Kaldi's lattice-to-nbest: the N best paths (on determinized lattices the N "
        "best word sequences), keys UTT-1 .. UTT-N. Prints 'key graph_cost acoustic_cost "
        "words...' (costs unscaled, as nbest-to-linear's lm/ac costs); --nbest-out writes them "
        "as a lattice archive of linear CompactLattices, as lattice-to-nbest does.",
    )
    _add_scale_args(p)
    p.add_argument("--n", type=int, default=10, help="paths per lattice (default: %(default)s)")
    p.add_argument("--nbest-out", help="lattice archive for the n-best (lat.gz, .ark)")
    p.add_argument("--text", action="store_true", help="--nbest-out in Kaldi's text form")
    p.set_defaults(func=_cmd_nbest)

    p = subparsers.add_parser(
        "lattice-to-ctm",
        help="word times of each lattice's best path as CTM (steps/get_ctm.sh)",
        description="Kaldi's lattice-1best | lattice-align-words-lexicon (--align-lexicon "
        "LANG/phones/align_lexicon.int) or lattice-align-words (--word-boundary "
        "LANG/phones/word_boundary.int) | nbest-to-ctm: lines 'utt 1 start duration word' "
        "with times in seconds (frames x --frame-shift). --model is the final.mdl the "
        "lattices' transition-ids come from.",
        epilog="example: pykaldi2 lattice-to-ctm --lmwt 10 --model exp/tri1/final.mdl "
        "--align-lexicon data/lang/phones/align_lexicon.int --word-symbol-table "
        "data/lang/words.txt exp/tri1/decode_test -o exp/tri1/decode_test/ctm",
    )
    _add_scale_args(p)
    p.add_argument("--model", required=True, help="final.mdl (transition model of the lattices)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--align-lexicon", help="LANG/phones/align_lexicon.int")
    g.add_argument("--word-boundary", help="LANG/phones/word_boundary.int")
    p.add_argument("--frame-shift", type=float, default=0.01, help="seconds (%(default)s)")
    p.add_argument("--print-silence", action="store_true", help="also print <eps> (silence)")
    p.set_defaults(func=_cmd_to_ctm)

    p = subparsers.add_parser(
        "lattice-copy",
        help="copy lattice archives, converting binary/text and Lattice/CompactLattice",
        description="Kaldi's lattice-copy: reads archives (ark, .gz, scp, decode dirs) and "
        "writes one archive (gzipped when OUTPUT ends in .gz); --text for Kaldi's text form.",
    )
    p.add_argument("lattices", nargs="+", help="lattice archives or decode dirs")
    p.add_argument("--output", "-o", required=True, help="output archive (e.g. lat.ark, all.gz)")
    p.add_argument("--text", action="store_true", help="write Kaldi's text form")
    p.add_argument(
        "--write-compact", type=lambda s: s.lower() in ("true", "1", "yes"), default=True,
        metavar="BOOL", help="CompactLattices (default true) or raw Lattices",
    )  # fmt: skip
    p.set_defaults(func=_cmd_copy)
