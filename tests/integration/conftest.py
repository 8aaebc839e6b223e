"""Shared integration fixtures: the yesno recipe's GMM part (egs/yesno/run.sh stages 0-3), run
once per session through the CLI in a temporary dir, for the tests that continue from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pykaldi2.cli.main import main

YESNO_RECIPE = Path(__file__).resolve().parents[2] / "egs" / "yesno"


def run_cli(*argv: str | Path) -> None:
    """``pykaldi2 ARGV...`` in-process; a non-zero exit fails the test with the command."""
    args = [str(a) for a in argv]
    assert main(args) == 0, f"pykaldi2 {' '.join(args)} failed"


@dataclass(frozen=True)
class YesnoGmm:
    """What :func:`yesno_gmm` built: data dirs with MFCC + CMVN, lang dirs, a monophone GMM."""

    root: Path
    train: Path  # data/train_yesno (30 files)
    test: Path  # data/test_yesno (30 files, 240 words)
    lang: Path  # data/lang (position-independent, 5-state ergodic silence)
    lang_test: Path  # data/lang_test (unigram G.fst)
    mono: Path  # exp/mono (final.mdl)


@pytest.fixture(scope="session")
def yesno_gmm(yesno_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> YesnoGmm:
    """prepare -> MFCC + CMVN -> lang + unigram G -> train-mono, as egs/yesno/run.sh."""
    root = tmp_path_factory.mktemp("yesno")
    data, exp = root / "data", root / "exp"
    run_cli("prepare", "yesno", "--corpus-dir", yesno_dir, data)
    for s in ("train_yesno", "test_yesno"):
        run_cli(
            "compute-feats", "--config", YESNO_RECIPE / "conf/mfcc.yaml", data / s, root / "mfcc"
        )
        run_cli("compute-cmvn", data / s, root / "mfcc")
    lang, lm = data / "lang", data / "local/1gram.arpa"
    run_cli(
        "prepare-lang",
        "--position-independent",
        "--sil-topo",
        "ergodic",
        "--sil-states",
        "5",
        YESNO_RECIPE / "local/dict",
        "<SIL>",
        lang,
    )
    run_cli(
        "train-lm",
        "--order=1",
        "--oov-word=<SIL>",
        "--skip-first-field",
        f"--words={lang / 'words.txt'}",
        data / "train_yesno/text",
        lm,
    )
    run_cli("make-g", lang, lm, data / "lang_test")
    mono = exp / "mono"
    run_cli(
        "train-mono", "--config", YESNO_RECIPE / "conf/mono.yaml", data / "train_yesno", lang, mono
    )
    return YesnoGmm(root, data / "train_yesno", data / "test_yesno", lang, data / "lang_test", mono)


@pytest.fixture(scope="session")
def cli():
    """:func:`run_cli`, for tests that run ``pykaldi2`` commands."""
    return run_cli
