"""``pykaldi2 <subcommand>``: the command-line entry point.

Each module in :data:`COMMAND_MODULES` defines ``register(subparsers)``, which adds its
subcommands and sets ``func`` (called with the parsed args) on each. Modules are imported when
the parser is built, so they must import heavy packages (torch, Kaldi bindings) inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pykaldi2 import __version__
from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.log import setup_logging

#: One module per pipeline stage, in pipeline order.
COMMAND_MODULES = [
    "pykaldi2.cli.data",
    "pykaldi2.cli.manifests",
    "pykaldi2.cli.features",
    "pykaldi2.cli.lang",
    "pykaldi2.cli.hmm",
    "pykaldi2.cli.nnet",
    "pykaldi2.cli.decode",
    "pykaldi2.cli.lattice",
    "pykaldi2.cli.simulate",
    "pykaldi2.cli.chain",
    "pykaldi2.cli.transducer",
    "pykaldi2.cli.transcribe",
    "pykaldi2.cli.queue",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pykaldi2",
        description="Kaldi-grade hybrid ASR and RNN-Transducers in PyTorch. "
        "Run `pykaldi2 <command> --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"pykaldi2 {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a stage not written yet must not break the others
            if e.name == name:
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    try:
        ret = args.func(args)
    except Pykaldi2Error as e:
        print(f"pykaldi2 {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pykaldi2 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from pykaldi2.utils.io import is_disk_full

        if not is_disk_full(e):
            raise
        # a write outside the atomic helpers (a log line, a library's own file)
        print(
            f"pykaldi2 {args.command}: error: no space left on the device ({e}). Fix: free "
            "disk space, then run the same command again (outputs are written atomically: "
            "finished ones are kept and the run resumes)",
            file=sys.stderr,
        )
        return 1
    return int(ret or 0)


if __name__ == "__main__":
    sys.exit(main())
