"""Test helpers: a real Kaldi GMM exp dir of ../shared/data/kaldi_reference as decoder inputs.

The model is Kaldi's binary final.mdl read by :meth:`pykaldi2.hmm.model.GmmModel.load`; the
features are those of steps/decode.sh (apply-cmvn per speaker, add-deltas or LDA, as the model's
cmvn_opts / feature type say) from :func:`pykaldi2.hmm.inputs.feats_for_model`, read from the
corpus folder (the scp paths there are relative to it).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pykaldi2.decoding.wfst import GmmScorer
from pykaldi2.hmm.decoder import TransitionTables
from pykaldi2.hmm.inputs import feats_for_model
from pykaldi2.hmm.model import GmmModel


def kaldi_system(exp: Path) -> SimpleNamespace:
    """A Kaldi GMM exp dir: the model, its TransitionTables and a GMM scorer."""
    model = GmmModel.load(exp / "final.mdl")
    return SimpleNamespace(
        model=model,
        tables=TransitionTables.from_trans_model(model.tm),
        scorer=GmmScorer(model.am),
    )


def decode_feats(corpus: Path, data: str, model: GmmModel) -> dict[str, np.ndarray]:
    """The features decode.sh gives ``model`` for ``corpus/data``."""
    with contextlib.chdir(corpus):
        return feats_for_model(model, data)


def kaldi_best_paths(decode_log: Path) -> dict[str, tuple[list[str], float]]:
    """utt -> (words, total cost) from gmm-latgen-faster's log (cost = -loglike/frame x frames)."""
    words: dict[str, list[str]] = {}
    out = {}
    for line in Path(decode_log).read_text().splitlines():
        m = re.search(r"Log-like per frame for utterance (\S+) is (\S+) over (\d+) frames", line)
        if m:
            utt = m.group(1)
            out[utt] = (words.get(utt, []), -float(m.group(2)) * int(m.group(3)))
        elif line and not line.startswith(("#", "LOG", "WARNING", "gmm-", "apply-", "add-")):
            f = line.split()
            words[f[0]] = f[1:]
    return out
