"""pykaldi2: Kaldi-grade hybrid ASR and RNN-Transducers in PyTorch, installed with pip.

Importing the package has no side effects: the Kaldi bindings and torch are imported by the
modules that need them (see :mod:`pykaldi2.kaldi` for the binding import order).
"""

__version__ = "0.1.0"
