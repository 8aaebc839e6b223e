#!/usr/bin/env bash
# LibriSpeech recipe (Kaldi's egs/librispeech/s5 scaled to pykaldi2): raw corpus -> WER table.
#   bash run.sh [--subset 100|460|960] [--corpus-dir DIR] [--parts "P1 P2 ..."] [--lm-dir DIR]
#               [--stage N] [--stop-stage M] [--nj N] [--force]
# --subset: the training hours: 100 = train-clean-100, 460 = + train-clean-360, 960 = + train-
# other-500 (default 960). --corpus-dir: a folder holding LibriSpeech/ on disk; empty (the
# default) downloads the parts into downloads/ (resumable, md5-checked). --parts: the corpus
# parts to use (default: dev-clean test-clean dev-other test-other + the --subset's training
# parts). --lm-dir: where librispeech-lexicon.txt (and 3-gram.pruned.1e-7.arpa.gz) are; default:
# the corpus dir if it holds them, else openslr resource 11 downloaded into downloads/lm.
# Stages: 0 data dirs per part, 1 MFCC (GMMs) + 80-dim fbank (nnets) per part, 2 data/train_<subset>
# and the GMM subsets of train-clean-100 (2k shortest, 5k, 10k, as Kaldi), 3 dict/lang/LM/G
# (openslr's pruned 3-gram if present, else train-lm on the training transcripts), 4 mono (2k
# shortest), 5 tri1 deltas (5k), 6 tri2 LDA+MLLT (10k), 7 tri3_<subset> LDA+MLLT on the full
# subset, 8 its alignments of the subset and of dev-clean (the nnets' targets), 9-10 CE BLSTM
# (conf/ce_blstm.yaml), 11-12 LF-MMI TDNN-F (conf/chain_tdnnf.yaml), 13-14 sMBR from the CE
# BLSTM (conf/se_blstm.yaml), 15-16 RNN-T (conf/transducer.yaml: Myrtle testing size, 1023
# pieces), 99 the WER table over the test sets. The GMM stages decode every test set.
# Multi-GPU training: stages 9, 11 and 13 are also the entry points run_ce.sh, run_chain.sh and
# run_se.sh (`horovodrun -np 4 sh run_ce.sh --subset 960`); decoding stays here.
# Each stage leaves a .done marker in exp/ (rerun skips finished stages; --force redoes them).
set -euo pipefail
invoke_dir=$PWD   # relative --corpus-dir / --lm-dir are relative to where run.sh was started
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh   # PYKALDI2_CMD: where the --nj jobs run (run.pl, slurm.pl ...)

stage=0
stop_stage=100
corpus_dir=""    # a folder holding LibriSpeech/ on disk; empty => download into downloads/
nj=8
force=false
subset=960
parts=""
lm_dir=""
recipe_opts="subset parts lm_dir"

. ../stages.sh   # options, log, run_stage
. local/decode.sh   # decode_gmm, decode_hybrid, decode_chain_sets, decode_rnnt, wer_table

for v in corpus_dir lm_dir; do
  if [ -n "${!v}" ] && [[ ${!v} != /* ]]; then printf -v $v '%s' "$invoke_dir/${!v}"; fi
done
case $subset in
  100) train_parts="train-clean-100" ;;
  460) train_parts="train-clean-100 train-clean-360" ;;
  960) train_parts="train-clean-100 train-clean-360 train-other-500" ;;
  *) echo "$0: --subset must be 100, 460 or 960 (got $subset)" >&2; exit 2 ;;
esac
parts=${parts:-"dev-clean test-clean dev-other test-other $train_parts"}
test_sets=""; train_sets=""   # data dir names: test_clean ..., train_clean_100 ...
for p in $parts; do
  case $p in
    dev-*|test-*) test_sets+=" ${p//-/_}" ;;
    train-*) train_sets+=" ${p//-/_}" ;;
    *) echo "$0: unknown LibriSpeech part $p in --parts" >&2; exit 2 ;;
  esac
done
. local/train_nnet.sh   # $train, $gmm, $ali, $valid_ali; train_ce, train_chain, train_se, train_rnnt

prepare_part() {
  if [ -n "$corpus_dir" ]; then
    pykaldi2 prepare librispeech --corpus-dir "$corpus_dir" data --parts "$1"
  else
    pykaldi2 prepare librispeech --download --corpus-dir downloads data --parts "$1"
  fi
}

# features SET: MFCC into data/SET, 80-dim fbank into its copy data/SET_fbank (HDF5 + cmvn.scp)
features() {
  pykaldi2 combine-data data/${1}_fbank data/$1
  pykaldi2 compute-feats --config conf/fbank.yaml --nj "$nj" data/${1}_fbank fbank
  pykaldi2 compute-cmvn data/${1}_fbank fbank
  # MFCC for the GMMs as Kaldi's make_mfcc.sh writes them: uncompressed ark + scp (each GMM
  # pass reads every utterance; a gzip'ed HDF5 dataset costs 10x an ark read)
  pykaldi2 compute-feats --config conf/mfcc.yaml --nj "$nj" --format ark data/$1 mfcc
  pykaldi2 compute-cmvn data/$1 mfcc
}

# subset_even SRC N DEST: N utterances evenly spaced over SRC (utils/subset_data_dir.sh SRC N)
subset_even() {
  local total
  total=$(wc -l < $1/utt2spk)
  awk -v n=$2 -v t=$total 'int((NR - 1) * n / t) != int(NR * n / t) { print $1 }' $1/utt2spk \
    > $3.list
  pykaldi2 subset-data-dir --utt-list $3.list $1 $3
  rm $3.list
}

train_data() {
  if [ -z "$train_sets" ]; then
    log "no training part in --parts \"$parts\": nothing to train on"; exit 1
  fi
  local set mfcc_dirs=() fbank_dirs=()
  for set in $train_sets; do mfcc_dirs+=(data/$set); fbank_dirs+=(data/${set}_fbank); done
  pykaldi2 combine-data data/$train "${mfcc_dirs[@]}"
  pykaldi2 combine-data data/${train}_fbank "${fbank_dirs[@]}"
  pykaldi2 subset-data-dir --shortest 2000 data/train_clean_100 data/train_2kshort
  subset_even data/train_clean_100 5000 data/train_5k
  subset_even data/train_clean_100 10000 data/train_10k
}

# the lexicon and LM resources: --lm-dir, the corpus dir, or openslr resource 11 downloaded
find_lm_dir() {
  local d
  for d in $lm_dir $corpus_dir ${corpus_dir:+$corpus_dir/LibriSpeech $corpus_dir/lm}; do
    if [ -f "$d/librispeech-lexicon.txt" ]; then echo "$d"; return 0; fi
  done
  python local/download_lm.py downloads/lm >&2 && echo downloads/lm
}

lang() {
  local res arpa
  res=$(find_lm_dir) || { log "no librispeech-lexicon.txt: pass --lm-dir DIR (openslr.org/11)"; exit 1; }
  pykaldi2 prepare-dict librispeech "$res" data/local/dict
  pykaldi2 prepare-lang data/local/dict '<UNK>' data/lang
  arpa=$res/3-gram.pruned.1e-7.arpa.gz
  if [ ! -f "$arpa" ]; then   # no openslr LM: a 3-gram on the training transcripts
    arpa=data/local/lm/3gram.arpa
    pykaldi2 train-lm --order 3 --words data/lang/words.txt --skip-first-field data/$train/text $arpa
  fi
  pykaldi2 make-g --no-check-words data/lang "$arpa" data/lang_test
}

mono() {
  pykaldi2 train-mono --config conf/mono.yaml data/train_2kshort data/lang exp/mono
  decode_gmm mono
}

tri1() {
  pykaldi2 align-si --nj "$nj" data/train_5k data/lang exp/mono exp/mono_ali_5k
  pykaldi2 train-deltas --config conf/tri1.yaml data/train_5k data/lang exp/mono_ali_5k exp/tri1
  decode_gmm tri1
}

tri2() {
  pykaldi2 align-si --nj "$nj" data/train_10k data/lang exp/tri1 exp/tri1_ali_10k
  pykaldi2 train-lda-mllt --config conf/tri2.yaml data/train_10k data/lang exp/tri1_ali_10k exp/tri2
  decode_gmm tri2
}

tri3() {
  pykaldi2 align-si --nj "$nj" data/$train data/lang exp/tri2 exp/tri2_ali_$train
  pykaldi2 train-lda-mllt --config conf/tri3_$subset.yaml data/$train data/lang \
    exp/tri2_ali_$train exp/$gmm
  decode_gmm $gmm
}

# the nnets' targets: alignments of the full subset and of dev-clean (CE validation)
gmm_ali() {
  pykaldi2 align-si --nj "$nj" data/$train data/lang exp/$gmm $ali
  pykaldi2 align-si --nj "$nj" data/dev_clean data/lang exp/$gmm $valid_ali
}

for p in $parts; do run_stage 0 prepare_$p prepare_part $p; done
for set in $test_sets $train_sets; do run_stage 1 features_$set features $set; done
run_stage 2 $train train_data
run_stage 3 lang lang
run_stage 4 mono mono
run_stage 5 tri1 tri1
run_stage 6 tri2 tri2
run_stage 7 $gmm tri3
run_stage 8 ${gmm}_ali gmm_ali
# Training (stages 9, 11, 13, 15) runs the commands of local/train_nnet.sh, like run_*.sh.
run_stage 9 blstm_ce_$subset train_ce
run_stage 10 blstm_ce_${subset}_decode decode_hybrid blstm_ce_$subset exp/$gmm/graph
run_stage 11 chain_tdnnf_$subset train_chain
run_stage 12 chain_tdnnf_${subset}_decode decode_chain_sets chain_tdnnf_$subset
run_stage 13 blstm_smbr_$subset train_se
run_stage 14 blstm_smbr_${subset}_decode decode_hybrid blstm_smbr_$subset exp/$gmm/graph
run_stage 15 rnnt_$subset train_rnnt
run_stage 16 rnnt_${subset}_decode decode_rnnt rnnt_$subset

# stage 99: the WER table (always runs; reads exp/*/decode_<set>/best_wer or wer)
if [ "$stop_stage" -ge 99 ]; then
  wer_table mono tri1 tri2 $gmm blstm_ce_$subset chain_tdnnf_$subset blstm_smbr_$subset \
    rnnt_$subset:greedy rnnt_$subset:beam4
fi
