#!/bin/sh
# PyKaldi2's entry point for the hybrid CE BLSTM: run.sh stage 9 (train_ce of
# local/train_nnet.sh, the same command and config), one process per rank (the trainer picks
# Horovod or torchrun up from the environment):
#   sh run_ce.sh [--subset 100|460|960] [--override KEY=VALUE ...]
#   horovodrun -np 4 sh run_ce.sh --subset 960
#   torchrun --nproc_per_node 4 --no-python sh run_ce.sh --subset 960
# Needs stages 0-8 of the same --subset (default 960). Decoding stays in run.sh (stage 10).
set -e
cd "$(dirname "$0")"
. local/entry.sh   # PATH, need, --subset N (default 960), train_ce/train_chain/train_se
need data/${train}_fbank/feats.scp "--subset $subset --stop-stage 2"
need $ali/num_jobs "--subset $subset --stop-stage 8"
need $valid_ali/num_jobs "--subset $subset --stop-stage 8"
train_ce "$@"
