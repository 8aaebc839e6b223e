#!/bin/sh
# PyKaldi2's entry point for the hybrid CE BLSTM: run.sh stage 7, the same command and config,
# one process per rank (the trainer picks Horovod or torchrun up from the environment):
#   sh run_ce.sh [--override KEY=VALUE ...]
#   horovodrun -np 4 sh run_ce.sh
#   torchrun --nproc_per_node 4 --no-python sh run_ce.sh
# Needs stages 0-6 (features, tri3 alignments). Decoding stays in run.sh (stage 8).
set -e
cd "$(dirname "$0")"
. ../entry.sh
need data/train_fbank/feats.scp "--stop-stage 1"
need exp/tri3_ali/num_jobs "--stop-stage 6"
exec pykaldi2 train-ce --config conf/ce_blstm.yaml "$@" exp/blstm_ce
