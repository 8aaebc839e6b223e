#!/usr/bin/env python3
"""Download LibriSpeech's LM resources (openslr.org/11) that run.sh stage 3 needs.

    python local/download_lm.py downloads/lm       # lexicon, vocabulary, pruned 3-gram

Resumable (pykaldi2.data.download); files are md5-checked against openslr's md5sum.txt for the
resource when the server lists them. Files already present are kept.
"""

from __future__ import annotations

import argparse
import sys

from pykaldi2.data.download import download, fetch_md5sums
from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.log import get_logger

BASE_URL = "https://www.openslr.org/resources/11"
#: librispeech-lexicon.txt (prepare-dict), librispeech-vocab.txt (the LM vocabulary) and the
#: pruned 3-gram Kaldi decodes with (tgsmall).
FILES = ("librispeech-lexicon.txt", "librispeech-vocab.txt", "3-gram.pruned.1e-7.arpa.gz")

log = get_logger("download_lm")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dest_dir", help="folder for the files, e.g. downloads/lm")
    p.add_argument("--files", nargs="+", default=list(FILES), help="default: %(default)s")
    args = p.parse_args(argv)
    try:
        md5s = fetch_md5sums(f"{BASE_URL}/md5sum.txt")
    except Pykaldi2Error as e:
        log.warning("no md5sum.txt for openslr resource 11 (%s): downloading unchecked", e)
        md5s = {}
    try:
        for name in args.files:
            download(f"{BASE_URL}/{name}", f"{args.dest_dir}/{name}", md5=md5s.get(name))
    except Pykaldi2Error as e:
        print(f"download_lm.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
