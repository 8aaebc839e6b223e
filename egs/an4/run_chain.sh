#!/bin/sh
# PyKaldi2's entry point for LF-MMI (chain) training, one process per rank (Horovod or torchrun
# from the environment), the same command and config as run.sh:
#   sh run_chain.sh [--override KEY=VALUE ...]           # stage 11: TDNN-F from scratch
#   sh run_chain.sh --blstm [--override KEY=VALUE ...]   # stage 15: BLSTM from the CE BLSTM
#   horovodrun -np 4 sh run_chain.sh
# Needs the tri3 alignments (stage 6; --blstm also the CE BLSTM of stage 7). Decoding stays in
# run.sh (stages 12 and 16).
set -e
cd "$(dirname "$0")"
. ../entry.sh
sys=chain_tdnnf
if [ "${1:-}" = --blstm ]; then
  sys=chain_blstm
  shift
  need exp/blstm_ce/final/final.pt "--stop-stage 7"
fi
need data/train_fbank/feats.scp "--stop-stage 1"
need exp/tri3_ali/num_jobs "--stop-stage 6"
exec pykaldi2 train-chain --config conf/$sys.yaml "$@" exp/$sys
