#!/usr/bin/env bash
# yesno recipe (Kaldi's egs/yesno/s5): 60 recordings of 8 Hebrew yes/no words, one speaker.
#   bash run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--nj N] [--force]
# Stages: 0 prepare, 1 MFCC + CMVN, 2 lang (local/dict: <SIL> SIL, YES Y, NO N) + unigram LM + G,
# 3 mono, 4 mkgraph + decode + score on test_yesno. Each stage leaves a .done marker in exp/.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh   # PYKALDI2_CMD: where the --nj jobs run (run.pl, slurm.pl ...)

stage=0
stop_stage=100
corpus_dir=../../../shared/data/yesno   # the folder holding waves_yesno/; empty => download
nj=2
force=false

. ../stages.sh   # options, log, run_stage

prepare() {
  if [ -n "$corpus_dir" ]; then
    pykaldi2 prepare yesno --corpus-dir "$corpus_dir" data
  else
    pykaldi2 prepare yesno --download --corpus-dir downloads data
  fi
}

features() {
  for set in train_yesno test_yesno; do
    # MFCC for the GMMs as Kaldi's make_mfcc.sh writes them: uncompressed ark + scp (each GMM
    # pass reads every utterance; a gzip'ed HDF5 dataset costs 10x an ark read)
    pykaldi2 compute-feats --config conf/mfcc.yaml --nj "$nj" --format ark data/$set mfcc
    pykaldi2 compute-cmvn data/$set mfcc
  done
}

lang() {
  # Kaldi's 5-state ergodic silence: 0% WER here, 1.67% with the 3-state left-to-right one
  pykaldi2 prepare-lang --position-independent --sil-topo ergodic --sil-states 5 local/dict '<SIL>' data/lang
  # a unigram: every training file starts with NO, so a bigram would learn "<s> NO" only
  pykaldi2 train-lm --order 1 --oov-word '<SIL>' --skip-first-field --words data/lang/words.txt \
    data/train_yesno/text data/local/lm/1gram.arpa
  pykaldi2 make-g data/lang data/local/lm/1gram.arpa data/lang_test
}

decode() {
  pykaldi2 mkgraph data/lang_test exp/mono/final.mdl exp/mono/graph
  pykaldi2 decode --data data/test_yesno --nj "$nj" exp/mono/graph exp/mono/final.mdl \
    exp/mono/decode_test_yesno
  pykaldi2 score --ref data/test_yesno/text exp/mono/decode_test_yesno
}

run_stage 0 prepare prepare
run_stage 1 features features
run_stage 2 lang lang
run_stage 3 mono pykaldi2 train-mono --config conf/mono.yaml data/train_yesno data/lang exp/mono
run_stage 4 decode decode
