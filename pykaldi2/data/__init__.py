"""Kaldi data dirs (read/write/validate/fix/subset/combine), audio I/O and corpus preparers.

>>> from pykaldi2.data import read_data_dir, load_utterance
"""

from pykaldi2.data.audio import load_utterance, read_audio
from pykaldi2.data.datadir import DataDir, read_data_dir, write_data_dir

__all__ = ["DataDir", "read_data_dir", "write_data_dir", "read_audio", "load_utterance"]
