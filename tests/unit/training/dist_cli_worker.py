"""Run under torchrun / horovodrun by test_training_distributed_trainer.py: several ``pykaldi2``
commands, one after the other, in each rank's process (``pykaldi2.cli.main.main(argv)``, what
the console script calls): one launch instead of one per command, so the test stays short.

argv: JSON_FILE holding a list of argv lists, e.g. [["train-ce", "--config", "c.yaml", "exp"]].
Each command initialises the process group (Dist.from_env) and tears it down at its end.
"""

import json
import sys

import torch

from pykaldi2.cli.main import main


def run() -> int:
    torch.set_num_threads(1)
    with open(sys.argv[1]) as f:
        commands = json.load(f)
    for argv in commands:
        rc = main(argv)
        if rc != 0:
            print(f"dist_cli_worker: {' '.join(argv)} exited {rc}", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(run())
