"""Kaldi data dirs (read/write/validate/fix/subset/combine), audio I/O and corpus preparers.

    >>> from pykaldi2.data import read_data_dir, load_utterance, validate_data_dir
    >>> d = read_data_dir("data/train")
    >>> x, sr = load_utterance(d, d.utt_ids[0])     # float32 int16-scaled samples

Corpus preparers live in :mod:`pykaldi2.data.corpora`; datasets and samplers for training in
:mod:`pykaldi2.data.datasets` and :mod:`pykaldi2.data.samplers`; the check that the utterances
a command trains or aligns have transcripts in :mod:`pykaldi2.data.transcripts`.
"""

from pykaldi2.data.audio import load_utterance, read_audio
from pykaldi2.data.datadir import DataDir, read_data_dir, write_data_dir
from pykaldi2.data.durations import compute_utt2dur
from pykaldi2.data.fix import fix_data_dir
from pykaldi2.data.subset import combine_data, subset_data_dir
from pykaldi2.data.validate import Problem, validate_data_dir

__all__ = [
    "DataDir",
    "read_data_dir",
    "write_data_dir",
    "read_audio",
    "load_utterance",
    "validate_data_dir",
    "Problem",
    "fix_data_dir",
    "subset_data_dir",
    "combine_data",
    "compute_utt2dur",
]
