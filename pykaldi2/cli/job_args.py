"""``--cmd``, the option every ``--nj`` command takes: where its jobs run (Kaldi's ``--cmd``
with cmd.sh's ``train_cmd`` / ``decode_cmd``; :mod:`pykaldi2.utils.jobs`)."""

from __future__ import annotations

import argparse

CMD_HELP = (
    "where the --nj jobs run, as Kaldi's --cmd: 'run.pl' (this machine; --max-jobs-run N) or "
    "'slurm.pl [--mem 4G] [--time 4:00:00] [--num-threads N] [--gpu N] [--max-jobs-run N] "
    "[--config conf/slurm.conf] [-p PARTITION ...]' (one sbatch array job per step, job logs "
    "in the exp dir's log/, queue files in q/). Default: $PYKALDI2_CMD, else run.pl"
)


def add_cmd_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--cmd`` to a command that has ``--nj``."""
    p.add_argument("--cmd", default=None, metavar="CMD", help=CMD_HELP)
