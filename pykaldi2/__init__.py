"""pykaldi2: Kaldi-grade hybrid ASR and RNN-Transducers in PyTorch, installed with pip.

Importing the package has no side effects: the Kaldi bindings and torch are imported by the
modules that need them (see :mod:`pykaldi2.kaldi` for the binding import order).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``pykaldi2.load_model`` without importing the API (and numpy, yaml) at package import."""
    if name == "load_model":
        from pykaldi2.api import load_model

        return load_model
    raise AttributeError(f"module 'pykaldi2' has no attribute {name!r}")
