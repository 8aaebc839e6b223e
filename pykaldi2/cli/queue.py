"""``pykaldi2 queue FILE``: an experiment queue (DeepSpeech-Keras' ``queue`` of
``config.yaml|key=value|exp_dir=...`` lines), run one after another, resumable.

Each non-empty line (``#`` starts a comment) is ``CONFIG|KEY=VALUE|...``: a training config,
``--override`` values for it (dotted keys, YAML values) and these queue keys:

- ``exp_dir=DIR`` (required): the experiment dir;
- ``command=train-transducer|train-ce|train-chain``: the trainer (default: the one whose config
  accepts every key of CONFIG and of the overrides; an error if not exactly one does);
- ``decode=DIR[,DIR...]``: data dirs decoded after training into ``EXP_DIR/decode_<name>``
  (default: the config's ``valid_data``), scored where they have a text;
  ``decode-transducer`` for transducers (``beam=N``, ``lm=ARPA``, ``lm_unit=pieces|words``,
  ``lm_weight=W``, ``symbol_bonus=B``), for CE and chain models ``decode-nnet`` / ``decode-chain`` through
  ``graph=DIR`` (required then).

A line whose ``EXP_DIR/queue.done`` holds the same line is finished and skipped; an interrupted
line is rerun, and its trainer resumes from its checkpoints. ``EXP_DIR/queue.done`` holding
another line is an error (two lines must not share an exp dir). At the end a table of every
line's status and WERs (``%WER`` of each decode dir's ``wer`` or ``best_wer``) is printed and
written to ``FILE.summary``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pykaldi2.utils.errors import DataError

QUEUE_KEYS = ("exp_dir", "command", "decode", "graph", "beam", "lm", "lm_unit", "lm_weight",
              "symbol_bonus")  # fmt: skip
COMMANDS = ("train-transducer", "train-ce", "train-chain")
DONE = "queue.done"


@dataclass
class QueueLine:
    """One experiment of the queue file (``lineno``: 1-based, for messages)."""

    lineno: int
    text: str
    config: str
    overrides: list[str]
    exp_dir: str
    command: str = ""
    decode: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # graph, beam, lm, ...


def parse_queue(path: str | os.PathLike) -> list[QueueLine]:
    """The lines of a queue file (errors name the file and the line)."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"unreadable queue file: {e}", file=str(path)) from None
    out, dirs = [], {}
    for lineno, line in enumerate(raw, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        config, *fields = [f.strip() for f in text.split("|")]
        q = QueueLine(lineno, text, config, [], "")
        for f in fields:
            key, sep, value = f.partition("=")
            if not sep or not key:
                raise DataError(f"{f!r} is not KEY=VALUE", file=str(path), line=lineno)
            if key in QUEUE_KEYS:
                if key == "exp_dir":
                    q.exp_dir = value
                elif key == "command":
                    q.command = value
                elif key == "decode":
                    q.decode = [d for d in value.split(",") if d]
                else:
                    q.options[key] = value
            else:
                q.overrides.append(f)
        if not q.exp_dir:
            raise DataError("no exp_dir=DIR", file=str(path), line=lineno,
                            fix="end the line with |exp_dir=exp/NAME")  # fmt: skip
        if q.command and q.command not in COMMANDS:
            raise DataError(f"command={q.command}: not one of {', '.join(COMMANDS)}",
                            file=str(path), line=lineno)  # fmt: skip
        if q.exp_dir in dirs:
            raise DataError(f"exp_dir {q.exp_dir} is also the exp dir of line {dirs[q.exp_dir]}",
                            file=str(path), line=lineno)  # fmt: skip
        dirs[q.exp_dir] = lineno
        out.append(q)
    if not out:
        raise DataError("the queue file has no experiments", file=str(path))
    return out


def _config_classes():
    from pykaldi2.training.ce import TrainCEConfig
    from pykaldi2.training.chain import TrainChainConfig
    from pykaldi2.training.transducer import TrainTransducerConfig

    return {
        "train-transducer": TrainTransducerConfig,
        "train-ce": TrainCEConfig,
        "train-chain": TrainChainConfig,
    }


def resolve(q: QueueLine, source: str):
    """(command, the loaded config) of a line: the config file with the line's overrides,
    validated by its trainer's config class (so a typo fails before anything runs)."""
    from pykaldi2.training.config import apply_overrides, read_config

    classes = _config_classes()
    if not Path(q.config).is_file():
        raise DataError("config file not found", file=q.config, line=q.lineno)
    d = apply_overrides(read_config(q.config), q.overrides)  # base: resolved
    command = q.command
    if not command:
        fits = [c for c, cls in classes.items() if set(d) <= set(cls.field_names())]
        if len(fits) != 1:
            raise DataError(
                f"{'no trainer takes' if not fits else 'several trainers take'} the keys of "
                f"{q.config} ({', '.join(fits) or 'none'})", file=source, line=q.lineno,
                fix="add |command=train-transducer (or train-ce, train-chain) to the line",
            )  # fmt: skip
        command = fits[0]
    try:
        cfg = classes[command].load(q.config, q.overrides)
    except DataError as e:
        raise DataError(f"line {q.lineno}: {e}", file=source) from None
    return command, cfg


def _decode_dirs(q: QueueLine, cfg) -> list[str]:
    return q.decode or list(getattr(cfg, "valid_data", []) or [])


def _decode_commands(q: QueueLine, command: str, cfg, source: str) -> list[tuple[str, list]]:
    """(decode dir, argv) of every decode of a line."""
    out = []
    exp = Path(q.exp_dir)
    for data in _decode_dirs(q, cfg):
        name = Path(data.rstrip("/")).name
        dest = exp / f"decode_{name}"
        if command == "train-transducer":
            argv = ["decode-transducer"]
            if "beam" in q.options:
                argv += ["--beam", q.options["beam"]]
            if "lm" in q.options:
                argv += ["--lm", q.options["lm"], "--lm-weight", q.options.get("lm_weight", "0.3")]
                if "lm_unit" in q.options:
                    argv += ["--lm-unit", q.options["lm_unit"]]
            if "symbol_bonus" in q.options:
                argv += ["--symbol-bonus", q.options["symbol_bonus"]]
            argv += [str(exp / "final"), data, str(dest)]
        else:
            if "graph" not in q.options:
                raise DataError(f"decoding a {command} model needs graph=DIR", file=source,
                                line=q.lineno)  # fmt: skip
            tool = "decode-nnet" if command == "train-ce" else "decode-chain"
            argv = [tool, str(exp / "final"), q.options["graph"], data, str(dest)]
        out.append((str(dest), argv))
    return out


def _run(argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "pykaldi2.cli.main", *argv]
    print("+ pykaldi2 " + " ".join(argv), flush=True)
    return subprocess.call(cmd)


def read_wer(decode_dir: str | os.PathLike) -> str:
    """The ``%WER`` figure of a decode dir (``best_wer`` or ``wer``), "-" if none."""
    for name in ("best_wer", "wer"):
        f = Path(decode_dir) / name
        if f.is_file():
            for line in f.read_text().splitlines():
                if "%WER" in line:
                    return line.split("%WER", 1)[1].split()[0]
    return "-"


def run_queue(path: str | os.PathLike, stop_on_error: bool = False) -> tuple[list[list[str]], int]:
    """Run the queue; returns (summary rows, number of failed lines)."""
    source = str(path)
    lines = parse_queue(path)
    resolved = [resolve(q, source) for q in lines]  # every config checked before any run
    rows, failed = [], 0
    for q, (command, cfg) in zip(lines, resolved):
        exp = Path(q.exp_dir)
        done = exp / DONE
        decodes = _decode_commands(q, command, cfg, source)
        if done.is_file():
            if done.read_text(encoding="utf-8").strip() != q.text:
                raise DataError(
                    f"line {q.lineno}: {q.exp_dir} holds another queue line's finished run "
                    f"({done.read_text(encoding='utf-8').strip()!r})",
                    file=source, fix="give this line its own exp_dir",
                )  # fmt: skip
            status = "skipped (done)"
        else:
            print(f"queue line {q.lineno}: {q.text}", flush=True)
            argv = [command, "--config", q.config]
            for o in q.overrides:
                argv += ["--override", o]
            rc = _run([*argv, q.exp_dir])
            for _, dargv in decodes:
                if rc == 0:
                    rc = _run(dargv)
            if rc == 0:
                from pykaldi2.utils.io import atomic_write_text

                atomic_write_text(done, q.text + "\n")
                status = "done"
            else:
                status, failed = f"failed (exit {rc})", failed + 1
                if stop_on_error:
                    rows.append(_row(q, status, decodes))
                    break
        rows.append(_row(q, status, decodes))
    return rows, failed


def _row(q: QueueLine, status: str, decodes) -> list[str]:
    wers = ", ".join(f"{Path(d).name}: {read_wer(d)}" for d, _ in decodes) or "-"
    return [str(q.lineno), q.exp_dir, status, wers]


def format_table(rows: list[list[str]]) -> str:
    head = ["line", "exp_dir", "status", "%WER"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [head, *rows]) + "\n"


def _cmd_queue(args: argparse.Namespace) -> int:
    from pykaldi2.utils.io import atomic_write_text

    rows, failed = run_queue(args.file, stop_on_error=args.stop_on_error)
    table = format_table(rows)
    atomic_write_text(f"{args.file}.summary", table)
    print(table, end="")
    return 1 if failed else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "queue",
        help="run a queue of experiments (config|key=value|exp_dir=...) in order, resumable",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example line: conf/transducer.yaml|trainer.lr=5e-4|exp_dir=exp/rnnt_lr5e-4"
        "|decode=data/dev_fbank,data/test_fbank|beam=4",
    )
    p.add_argument("file", help="the queue file")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failed line")
    p.set_defaults(func=_cmd_queue)
