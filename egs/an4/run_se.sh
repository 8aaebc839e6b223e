#!/bin/sh
# PyKaldi2's entry point for sequence training (sMBR) of the CE BLSTM: run.sh stage 13, the same
# command and config, one process per rank (Horovod or torchrun from the environment):
#   sh run_se.sh [--criterion mmi|bmmi|smbr|mpfe] [--override KEY=VALUE ...]
#   horovodrun -np 4 sh run_se.sh
# Needs the tri3 graph and alignments (stage 6) and the CE BLSTM (stage 7). Decoding stays in
# run.sh (stage 14).
set -e
cd "$(dirname "$0")"
. ../entry.sh
need exp/tri3/graph/HCLG.fst "--stop-stage 6"
need exp/tri3_ali/num_jobs "--stop-stage 6"
need exp/blstm_ce/final/final.pt "--stop-stage 7"
exec pykaldi2 train-se --criterion smbr --config conf/se_blstm.yaml "$@" exp/blstm_smbr
