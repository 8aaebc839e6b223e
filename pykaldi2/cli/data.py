"""``pykaldi2`` data-dir commands: prepare, validate-data-dir, fix-data-dir, subset-data-dir,
combine-data, compute-utt2dur (the Python counterparts of Kaldi's ``utils/*.sh``)."""

from __future__ import annotations

import argparse
import sys


def _validate(args: argparse.Namespace) -> int:
    from pykaldi2.data.validate import validate_data_dir

    problems = validate_data_dir(
        args.data,
        check_audio=args.check_audio,
        require_text=not args.no_text,
        spk_sort=not args.no_spk_sort,
        require_wav=not args.no_wav,
        wav_root=args.wav_root,
        sample_rate=args.sample_rate,
    )
    for p in problems:
        print(p)
    if problems:
        print(f"{args.data}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.data}: OK", file=sys.stderr)
    return 0


def _fix(args: argparse.Namespace) -> int:
    from pykaldi2.data.fix import fix_data_dir

    report = fix_data_dir(
        args.data, args.out, drop_empty_text=not args.keep_empty_text, wav_root=args.wav_root
    )
    print(report)
    return 0


def _subset(args: argparse.Namespace) -> int:
    from pykaldi2.data.datadir import read_data_dir, write_data_dir
    from pykaldi2.data.subset import subset_data_dir

    d = subset_data_dir(
        read_data_dir(args.src_dir),
        utt_list=args.utt_list,
        first=args.first,
        spk_list=args.spk_list,
        shortest=args.shortest,
    )
    write_data_dir(d, args.dest)
    print(f"{args.dest}: {len(d)} utterance(s), {len(d.spk_ids)} speaker(s)")
    return 0


def _combine(args: argparse.Namespace) -> int:
    from pykaldi2.data.datadir import write_data_dir
    from pykaldi2.data.subset import combine_data_dirs

    d = combine_data_dirs(args.src)
    write_data_dir(d, args.dest)
    print(f"{args.dest}: {len(d)} utterance(s) from {len(args.src)} data dirs")
    return 0


def _utt2dur(args: argparse.Namespace) -> int:
    from pykaldi2.data.datadir import read_data_dir, write_data_dir
    from pykaldi2.data.durations import compute_utt2dur

    d = read_data_dir(args.data)
    d.utt2dur = compute_utt2dur(d)
    write_data_dir(d, args.data)
    total = sum(d.utt2dur.values())
    print(f"{args.data}/utt2dur: {len(d)} utterance(s), {total / 3600:.2f} hours")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from pykaldi2.data.corpora import an4, asterisk, librispeech, speechocean762, yesno
    from pykaldi2.utils.errors import DataError

    corpus = args.corpus_dir
    if args.corpus == "an4":
        if args.download:
            corpus = an4.download_an4(corpus)
        dirs = an4.prepare_an4(corpus, args.out_dir)
    elif args.corpus == "librispeech":
        if args.download:
            if not args.parts:
                raise DataError("--download needs --parts (e.g. --parts dev-clean test-clean)")
            librispeech.download_librispeech(corpus, args.parts)
        dirs = librispeech.prepare_librispeech(corpus, args.out_dir, args.parts)
    elif args.corpus == "speechocean762":
        if args.download:
            corpus = speechocean762.download_speechocean762(corpus)
        dirs = speechocean762.prepare_speechocean762(corpus, args.out_dir)
    elif args.corpus == "asterisk":
        if args.download:
            raise DataError("asterisk installs from Debian: `make demo-deps`, not --download")
        dirs = asterisk.prepare_asterisk(corpus, args.out_dir)
    else:
        if args.download:
            corpus = yesno.download_yesno(corpus)
        dirs = yesno.prepare_yesno(corpus, args.out_dir)
    for name, d in dirs.items():
        print(f"{args.out_dir}/{name}: {len(d)} utterance(s), {len(d.spk_ids)} speaker(s)")
    return 0


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="make Kaldi data dirs from a corpus on disk (an4, librispeech, speechocean762, yesno, "
        "asterisk)",
        description="Make Kaldi data dirs (wav.scp, text, utt2spk, spk2utt) from a corpus in "
        "its official layout. Each data dir is validated and written atomically.",
    )
    corpora = p.add_subparsers(dest="corpus", metavar="<corpus>", required=True)
    helps = {
        "an4": "CMU AN4: <out>/train (948 utts) and <out>/test (130 utts)",
        "librispeech": "LibriSpeech: one data dir per part, e.g. <out>/test_clean",
        "yesno": "Kaldi yesno: <out>/train_yesno and <out>/test_yesno (30 + 30 files)",
        "speechocean762": "speechocean762 (OpenSLR 101): <out>/train (2,500 utts), the official "
        "test set as <out>/test_full and split by speaker into <out>/dev and <out>/test "
        "(alternate speakers in id order); --corpus-dir is the folder with train/ test/ WAVE/",
        "asterisk": "Asterisk English prompts (Debian asterisk-core-sounds-en-wav, 8 kHz, "
        "one speaker): <out>/train and <out>/test; --corpus-dir /usr/share/asterisk/sounds/en",
    }
    for name, text in helps.items():
        c = corpora.add_parser(name, help=text, description=text)
        c.add_argument(
            "--corpus-dir",
            required=True,
            help="the corpus on disk (an4/: the folder with etc/ and wav/ or flac/; "
            "librispeech: the folder holding LibriSpeech/; speechocean762: the folder with "
            "train/ test/ WAVE/; yesno: the folder holding waves_yesno/); with --download, "
            "where to download and extract it",
        )
        c.add_argument("out_dir", help="output folder for the data dirs (e.g. data)")
        c.add_argument(
            "--download",
            action="store_true",
            help="download and extract the corpus into --corpus-dir first (resumable; "
            "LibriSpeech archives are md5-checked against openslr's md5sum.txt)",
        )
        if name == "librispeech":
            c.add_argument(
                "--parts",
                nargs="+",
                help="parts to prepare/download, e.g. dev-clean test-clean "
                "(default: every part found)",
            )
        c.set_defaults(func=_prepare)


def _command(subparsers, name: str, func, help: str, description: str, *args: str):
    """Add subcommand ``name`` running ``func``, with positional ``args``.

    Each arg is ``"dest:help"``; ``"dest+:help"`` takes one or more values.
    """
    p = subparsers.add_parser(name, help=help, description=description)
    for arg in args:
        dest, _, text = arg.partition(":")
        many = dest.endswith("+")
        p.add_argument(dest.rstrip("+"), nargs="+" if many else None, help=text)
    p.set_defaults(func=func)
    return p


def _add_wav_root(p, extra: str = "") -> None:
    p.add_argument(
        "--wav-root",
        metavar="DIR",
        help="folder that relative wav.scp paths are relative to (default: the current "
        "directory, as in Kaldi), e.g. the corpus folder of a corpus shipping Kaldi data dirs"
        + extra,
    )


def register(subparsers) -> None:
    """Add the data-dir subcommands to ``pykaldi2``."""
    _add_prepare(subparsers)

    p = _command(
        subparsers,
        "validate-data-dir",
        _validate,
        "list every problem of a Kaldi data dir (exit 1 if any)",
        "Check a data dir like Kaldi's utils/validate_data_dir.sh, but report every problem "
        "with its file and line: unsorted files, duplicate ids, utterances missing from a "
        "file, empty transcripts and illegal words (<s> </s> #0), utt2spk not sorted by "
        "speaker when sorted by utterance (Kaldi's rule; speaker-id prefixes are the usual "
        "way to satisfy it, not required), bad segments, CRLF line ends and byte-order marks, "
        "and with --check-audio missing or unreadable audio.",
        "data:the data dir",
    )
    p.add_argument(
        "--check-audio",
        action="store_true",
        help="also read every recording as compute-feats does (decoding files, running pipes) "
        "and check segments, sample rates and WAV headers",
    )
    p.add_argument(
        "--sample-rate",
        type=int,
        help="with --check-audio: the expected rate in Hz (default: the most common one)",
    )
    p.add_argument("--no-text", action="store_true", help="the data dir has no transcripts")
    p.add_argument(
        "--no-spk-sort",
        action="store_true",
        help="do not require utt2spk to be sorted by speaker (Kaldi's --no-spk-sort)",
    )
    p.add_argument(
        "--no-wav",
        action="store_true",
        help="a features-only data dir: no wav.scp needed, feats.scp is (Kaldi's --no-wav)",
    )
    _add_wav_root(p)

    p = _command(
        subparsers,
        "fix-data-dir",
        _fix,
        "sort a data dir and drop inconsistent utterances",
        "Like Kaldi's utils/fix_data_dir.sh: sort every file, drop duplicate lines and "
        "utterances missing from any file (or with bad segments / empty transcripts), "
        "rebuild spk2utt, and print what was dropped.",
        "data:the data dir (fixed in place unless --out is given)",
    )
    p.add_argument("--out", help="write the fixed data dir here instead")
    _add_wav_root(p, " (the fixed wav.scp gets the resolved paths)")
    p.add_argument(
        "--keep-empty-text", action="store_true", help="keep utterances with empty transcripts"
    )

    p = _command(
        subparsers,
        "subset-data-dir",
        _subset,
        "copy a subset of a data dir",
        "Like Kaldi's utils/subset_data_dir.sh. Give exactly one selection.",
        "src_dir:the source data dir",
        "dest:the new data dir",
    )
    sel = p.add_mutually_exclusive_group(required=True)
    sel.add_argument("--utt-list", help="file with one utterance id per line")
    sel.add_argument("--spk-list", help="file with one speaker id per line")
    sel.add_argument("--first", type=int, metavar="N", help="the first N utterances (sorted)")
    sel.add_argument("--shortest", type=int, metavar="N", help="the N shortest utterances")

    _command(
        subparsers,
        "combine-data",
        _combine,
        "combine several data dirs into one",
        "Like Kaldi's utils/combine_data.sh; duplicate utterance ids are an error.",
        "dest:the new data dir",
        "src+:the data dirs to combine",
    )
    _command(
        subparsers,
        "compute-utt2dur",
        _utt2dur,
        "write utt2dur (durations in seconds) into a data dir",
        "Like Kaldi's utils/data/get_utt2dur.sh: durations from audio headers, pipe "
        "commands, or segments.",
        "data:the data dir",
    )
