"""``python -m pykaldi2.nnet.transducer``: the parameter counts of the named sizes."""

from __future__ import annotations

import torch

from pykaldi2.nnet.transducer.config import PRESETS
from pykaldi2.nnet.transducer.model import Transducer


def main() -> None:
    for name, cfg in PRESETS.items():
        with torch.device("meta"):  # sizes only, no memory
            model = Transducer(cfg)
        print(f"{name:8s} vocab {cfg.vocab_size:5d}: {model.summary()}")


if __name__ == "__main__":
    main()
