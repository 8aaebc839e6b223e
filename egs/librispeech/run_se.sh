#!/bin/sh
# PyKaldi2's entry point for sMBR sequence training of the CE BLSTM: run.sh stage 13 (train_se of
# local/train_nnet.sh, the same command and config), one process per rank (Horovod or torchrun
# from the environment):
#   sh run_se.sh [--subset 100|460|960] [--override KEY=VALUE ...]
#   horovodrun -np 4 sh run_se.sh --subset 960
# Needs the full-subset GMM's graph and alignments (stages 7-8) and the CE BLSTM (stage 9) of the
# same --subset (default 960). Decoding stays in run.sh (stage 14).
set -e
cd "$(dirname "$0")"
. local/entry.sh   # PATH, need, --subset N (default 960), train_ce/train_chain/train_se
need exp/$gmm/graph/HCLG.fst "--subset $subset --stop-stage 7"
need $ali/num_jobs "--subset $subset --stop-stage 8"
need exp/blstm_ce_$subset/final/final.pt "--subset $subset --stop-stage 9"
train_se "$@"
