"""The decoder options shared by ``decode``, ``decode-nnet``, ``decode-chain`` and the model
exports: Kaldi's gmm-latgen-faster / latgen-faster-mapped flags, same names and defaults; and
the transducer search options shared by ``decode-transducer`` and ``transcribe``."""

from __future__ import annotations

import argparse


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def add_decoder_args(
    p: argparse.ArgumentParser,
    *,
    beam: float = 13.0,
    lattice_beam: float = 6.0,
    acoustic_scale: float = 0.1,
    acoustic_help: str = "scale of the log-likelihoods",
    lattices: bool = True,
) -> None:
    """Add ``--beam --max-active --min-active --lattice-beam --prune-interval --beam-delta
    --hash-ratio --acoustic-scale --no-partial`` and, with ``lattices``,
    ``--determinize-lattice --phone-determinize --max-mem --text-lattices``."""
    g = p.add_argument_group("decoder (Kaldi's LatticeFasterDecoder options)")
    g.add_argument("--beam", type=float, default=beam, help="decoding beam (default: %(default)s)")
    g.add_argument(
        "--max-active", type=int, default=7000, help="most active states per frame (%(default)s)"
    )
    g.add_argument(
        "--min-active", type=int, default=200, help="fewest active states per frame (%(default)s)"
    )
    g.add_argument(
        "--lattice-beam", type=float, default=lattice_beam,
        help="lattice pruning beam (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--prune-interval", type=int, default=25, help="frames between prunings (%(default)s)"
    )
    g.add_argument(
        "--beam-delta", type=float, default=0.5,
        help="beam slack when max/min-active set the cutoff (%(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--hash-ratio", type=float, default=2.0, help="token hash size per token (%(default)s)"
    )
    g.add_argument(
        "--acoustic-scale", type=float, default=acoustic_scale,
        help=f"{acoustic_help} (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--no-partial", action="store_true", help="fail utterances that reach no final state"
    )
    if not lattices:
        return
    g.add_argument(
        "--determinize-lattice", type=_bool, default=True, metavar="BOOL",
        help="write determinized CompactLattices (default: true); false: raw state-level "
        "lattices",
    )  # fmt: skip
    g.add_argument(
        "--phone-determinize", type=_bool, default=True, metavar="BOOL",
        help="determinize on phones + words first (default: true)",
    )  # fmt: skip
    g.add_argument(
        "--max-mem", type=int, default=50_000_000,
        help="determinization memory limit in bytes (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--text-lattices", action="store_true",
        help="write Kaldi's text form lat.J.ark instead of the gzipped binary lat.J.gz",
    )  # fmt: skip


def decoder_config(args: argparse.Namespace):
    """The :class:`~pykaldi2.decoding.wfst.DecoderConfig` of :func:`add_decoder_args`' flags."""
    from pykaldi2.decoding.wfst import DecoderConfig

    kw = {
        "beam": args.beam,
        "max_active": args.max_active,
        "min_active": args.min_active,
        "lattice_beam": args.lattice_beam,
        "prune_interval": args.prune_interval,
        "beam_delta": args.beam_delta,
        "hash_ratio": args.hash_ratio,
        "acoustic_scale": args.acoustic_scale,
        "allow_partial": not args.no_partial,
    }
    if hasattr(args, "determinize_lattice"):
        kw.update(
            determinize_lattice=args.determinize_lattice,
            phone_determinize=args.phone_determinize,
            max_mem=args.max_mem,
        )
    return DecoderConfig(**kw)


def add_transducer_search_args(p) -> None:
    """Transducer search options (decode-transducer, transcribe): --beam, --lm, --lm-unit,
    --lm-weight, --symbol-bonus, --max-sym-per-frame; checked by :func:`transducer_search_error`."""
    p.add_argument("--beam", type=int, default=1, help="1: greedy; >1: modified beam search")
    p.add_argument("--lm", metavar="ARPA", help="n-gram for shallow fusion (beam > 1)")
    p.add_argument("--lm-unit", choices=("pieces", "words"), default="pieces",
                   help="what --lm is an n-gram of: the model's pieces (`train-lm --tokenizer`), "
                   "or words (`train-lm`; hypotheses spell its words only, scored with "
                   "look-ahead) (%(default)s)")  # fmt: skip
    p.add_argument("--lm-weight", type=float, default=0.3, help="LM weight (%(default)s)")
    p.add_argument("--symbol-bonus", type=float, default=0.0,
                   help="added to every emitted symbol's score (greedy: to every non-blank logit, "
                   "icefall's blank penalty; beam: Kaldi's word insertion penalty, negated) "
                   "(%(default)s)")  # fmt: skip
    p.add_argument("--max-sym-per-frame", type=int, default=1,
                   help="beam search: most symbols emitted at one encoder frame (1: icefall's "
                   "modified beam search; greedy search uses the model dir's setting)")  # fmt: skip


def transducer_search_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the options of :func:`add_transducer_search_args`, or None."""
    if args.lm and args.beam <= 1:
        return "--lm needs beam search (--beam > 1)"
    if args.max_sym_per_frame < 1:
        return "--max-sym-per-frame must be >= 1"
    return None
