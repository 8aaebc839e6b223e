"""``pykaldi2 import-manifest``: Myrtle JSON manifests, WebDataset shards and file lists ->
a Kaldi data dir (:mod:`pykaldi2.data.manifests`)."""

from __future__ import annotations

import argparse


def _cmd_import(args: argparse.Namespace) -> int:
    from pykaldi2.data.manifests import import_manifest

    d = import_manifest(
        args.sources,
        args.out_dir,
        data_root=args.data_root,
        extract_to=args.extract_to,
        text_case=args.text_case,
        prefix=args.prefix,
    )
    what = "with transcripts" if d.text else "without transcripts"
    print(f"{args.out_dir}: {len(d.wav_scp)} utterance(s) {what}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-manifest",
        help="make a data dir from Myrtle JSON manifests, WebDataset shards or file lists",
        description="Writes a Kaldi data dir (wav.scp, text, utt2spk/spk2utt, utt2dur from "
        "the manifests' original_duration) from SOURCES: Myrtle/MLPerf JSON manifests (.json: "
        "transcript, files[].fname relative to --data-root, original_duration; the speed-1 "
        "file of files[] is the audio), WebDataset tar shards (.tar, .tar.gz, globs: "
        "<key>.flac|wav + <key>.txt) or file lists (one audio path per line, no transcripts). "
        "Utterance ids are the file stems (relative paths when stems collide); each utterance is "
        "its own speaker. Shard audio stays in the shards (wav.scp entries `tar --occurrence=1 "
        "-xOf SHARD MEMBER |`; each read scans the shard up to the sample) unless --extract-to "
        "DIR unpacks it in one pass. To train on shards without any data dir, give "
        "train-transducer / train-ce `shards:` instead.",
        epilog="example: pykaldi2 import-manifest --data-root /datasets/LibriSpeech "
        "/datasets/LibriSpeech/librispeech-dev-clean.json data/dev_clean",
    )
    p.add_argument("sources", nargs="+", help="manifests, shards (or globs), file lists")
    p.add_argument("out_dir", help="the data dir to write")
    p.add_argument("--data-root", help="folder the JSON fname paths are relative to")
    p.add_argument("--extract-to", metavar="DIR", help="unpack shard audio into DIR")
    p.add_argument("--text-case", choices=["keep", "upper", "lower"], default="keep",
                   help="case of the transcripts in text (default: %(default)s)")  # fmt: skip
    p.add_argument("--prefix", default="", help="prepended to every utterance id")
    p.set_defaults(func=_cmd_import)
