#!/bin/sh
# PyKaldi2's entry point for LF-MMI (chain) training, one process per rank (Horovod or torchrun
# from the environment), the same command and config as run.sh:
#   sh run_chain.sh [--override KEY=VALUE ...]           # stage 12: TDNN-F from scratch
#   sh run_chain.sh --blstm [--override KEY=VALUE ...]   # stage 15: BLSTM from the CE BLSTM
#   horovodrun -np 4 sh run_chain.sh
# Needs the chain data of stage 11 (--blstm: the tri3 alignments of stage 6 and the CE BLSTM of
# stage 7). Decoding stays in run.sh (stage 12 decodes after its training, which resumes to the
# end at once when run_chain.sh finished it; stage 16 for --blstm).
set -e
cd "$(dirname "$0")"
. ../entry.sh
sys=chain_tdnnf
if [ "${1:-}" = --blstm ]; then
  sys=chain_blstm
  shift
  need exp/blstm_ce/final/final.pt "--stop-stage 7"
fi
if [ "$sys" = chain_tdnnf ]; then   # stage 11: speed-perturbed data, its alignments, chain tree
  need data/train_sp_fbank/feats.scp "--stop-stage 11"
  need exp/chain/tree_sp/final.mdl "--stop-stage 11"
else
  need data/train_fbank/feats.scp "--stop-stage 1"
  need exp/tri3_ali/num_jobs "--stop-stage 6"
fi
exec pykaldi2 train-chain --config conf/$sys.yaml "$@" exp/$sys
