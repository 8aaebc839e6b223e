"""LSTM RNN-Transducer (nn.Module only): encoder, predictor, joiner and the model.

Dimension legend: B batch, T input frames, T' encoder frames (after time reduction),
F input features, U target symbols, V output symbols (blank included), H hidden units.
"""

from pykaldi2.nnet.transducer.config import PRESETS, TransducerConfig
from pykaldi2.nnet.transducer.encoder import EncoderState, TransducerEncoder
from pykaldi2.nnet.transducer.joiner import TransducerJoiner
from pykaldi2.nnet.transducer.model import Transducer
from pykaldi2.nnet.transducer.predictor import PredictorState, TransducerPredictor

__all__ = [
    "PRESETS",
    "EncoderState",
    "PredictorState",
    "Transducer",
    "TransducerConfig",
    "TransducerEncoder",
    "TransducerJoiner",
    "TransducerPredictor",
]
