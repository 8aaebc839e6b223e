#!/usr/bin/env bash
# Asterisk demo (`make demo`): the Asterisk PBX English prompts from Debian (no download: apt-get
# install asterisk-core-sounds-en-wav asterisk-core-sounds-en), 516 train / 33 test prompts,
# one speaker, 8 kHz, about 25 minutes. Grapheme lexicon (letters as phones), trigram LM on the
# train prompts. Small fast configs: the whole recipe fits in 20 minutes on 2 CPU cores.
#   bash run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--nj N] [--force]
# Stages: 0 prepare, 1 features (MFCC for the GMMs, 40-dim fbank for the nnets), 2 grapheme
# dict/lang/LM/G, 3 mono, 4 tri1, 5 tri2 (each with mkgraph + decode + score), 6 tri2 alignments,
# 7 CE BLSTM, 8 its decode + the model dir for pykaldi2.load_model (exp/blstm_ce/export),
# 9 RNN-T, 10 its greedy decode and its decodes with a piece LM and a word LM, 11 LF-MMI TDNN-F, 12 its
# decode, 99 the WER table.
# Each stage leaves a .done marker in exp/ (rerun skips finished stages; --force redoes them).
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh   # PYKALDI2_CMD: where the --nj jobs run (run.pl, slurm.pl ...)

stage=0
stop_stage=100
corpus_dir=/usr/share/asterisk/sounds/en   # the -wav package's prompts
nj=2
force=false
lm_order=3

. ../stages.sh   # options, log, run_stage
. ../functions.sh   # decode_gmm, decode_nnet_export, decode_chain_dev, chain_data

features() {
  local set d
  for set in train test; do
    # MFCC for the GMMs as Kaldi's make_mfcc.sh writes them: uncompressed ark + scp (each GMM
    # pass reads every utterance; a gzip'ed HDF5 dataset costs 10x an ark read)
    pykaldi2 compute-feats --config conf/mfcc.yaml --nj "$nj" --format ark data/$set mfcc
    pykaldi2 compute-cmvn data/$set mfcc
    pykaldi2 combine-data data/${set}_fbank data/$set   # a copy with its own feats.scp
    pykaldi2 compute-feats --config conf/fbank.yaml --nj "$nj" data/${set}_fbank fbank
    pykaldi2 compute-cmvn data/${set}_fbank fbank
  done
  # the RNN-T's dev set (its LM weight is chosen there): the first 26 training prompts
  pykaldi2 subset-data-dir --first 26 data/train_fbank data/dev_fbank
  cut -d' ' -f1 data/train_fbank/utt2spk | tail -n +27 > data/train_nodev.list
  pykaldi2 subset-data-dir --utt-list data/train_nodev.list data/train_fbank data/train_nodev_fbank
  for d in dev_fbank train_nodev_fbank; do   # the feature config, for speed perturbation
    mkdir -p data/$d/conf && cp data/train_fbank/conf/feats.json data/$d/conf/
  done
}

# the RNN-T's decodes: greedy on dev and test, then beam 4 with a piece 4-gram of the training
# prompts, and beam 4 with their word trigram (hypotheses spell its words only), each LM's
# weight and symbol bonus chosen on dev (egs/functions.sh rnnt_lm_fusion). The word LM's grid
# spans the dev choices of four trainings over a wider one (RESULTS.md, twelfth session)
rnnt_decode() {
  local set
  for set in dev test; do
    pykaldi2 decode-transducer exp/rnnt/final data/${set}_fbank exp/rnnt/decode_${set}_greedy
  done
  rnnt_lm_weights="0.2 0.4 0.6" rnnt_symbol_bonuses="0.0 1.0" \
    rnnt_lm_fusion exp/rnnt dev_fbank test_fbank
  rnnt_lm_unit=words rnnt_lm_weights="0.4 0.6 0.8" rnnt_symbol_bonuses="1.0 2.0" \
    rnnt_lm_fusion exp/rnnt dev_fbank test_fbank
}

lang() {
  pykaldi2 prepare-dict graphemes data/train data/local/dict
  pykaldi2 prepare-lang data/local/dict '<UNK>' data/lang
  pykaldi2 train-lm --order $lm_order --skip-first-field --words data/lang/words.txt \
    data/train/text data/local/lm/${lm_order}gram.arpa
  pykaldi2 make-g data/lang data/local/lm/${lm_order}gram.arpa data/lang_test
}

mono() {
  pykaldi2 train-mono --config conf/mono.yaml data/train data/lang exp/mono
  decode_gmm mono
}

# gmm_nj: --nj for the GMM steps on data/train, at most its number of speakers (split_data
# never splits a speaker; the prompts have one, so the GMM passes run as one job)
gmm_nj() { local n; n=$(wc -l < data/train/spk2utt); echo $((nj < n ? nj : n)); }

# tri SRC NAME TRAIN-CMD: align with exp/SRC, train exp/NAME from those alignments, decode it
tri() {
  pykaldi2 align-si --nj "$(gmm_nj)" data/train data/lang exp/$1 exp/$1_ali
  pykaldi2 "$3" --config conf/$2.yaml data/train data/lang exp/$1_ali exp/$2
  decode_gmm "$2"
}

run_stage 0 prepare pykaldi2 prepare asterisk --corpus-dir "$corpus_dir" data
run_stage 1 features features
run_stage 2 lang lang
run_stage 3 mono mono
run_stage 4 tri1 tri mono tri1 train-deltas       # MFCC + deltas
run_stage 5 tri2 tri tri1 tri2 train-lda-mllt     # LDA + MLLT
run_stage 6 tri2_ali pykaldi2 align-si --nj "$(gmm_nj)" data/train data/lang exp/tri2 exp/tri2_ali
run_stage 7 blstm_ce pykaldi2 train-ce --config conf/ce_blstm.yaml exp/blstm_ce
run_stage 8 blstm_ce_decode decode_nnet_export blstm_ce exp/tri2/graph
run_stage 9 rnnt pykaldi2 train-transducer --config conf/transducer_v5.yaml exp/rnnt
run_stage 10 rnnt_decode rnnt_decode
# LF-MMI TDNN-F from scratch as Kaldi's chain recipes (conf/chain_tdnnf.yaml): speed-perturbed
# data, its tri2 alignments, the chain tree at 1/3 rate (300 leaves), egs on disk
chain_tdnnf() {
  chain_data tri2 300
  pykaldi2 train-chain --config conf/chain_tdnnf.yaml exp/chain_tdnnf
}
run_stage 11 chain_tdnnf chain_tdnnf
# the decode, its LM weight chosen on the utterances train-chain held out (functions.sh
# decode_chain_dev; decode_test/best_wer_on_test: the best on test, as the GMM and CE rows)
run_stage 12 chain_tdnnf_decode decode_chain_dev chain_tdnnf

# stage 99: the WER table of every decoded system (always runs)
if [ "$stop_stage" -ge 99 ]; then
  printf '%-12s %s\n' system "test WER (best LMWT_WIP on test for the GMM and CE systems)"
  for d in mono/decode_test tri1/decode_test tri2/decode_test blstm_ce/decode_test \
    chain_tdnnf/decode_test chain_tdnnf/decode_test:on_test rnnt/decode_test_greedy \
    rnnt/decode_test_fbank_lm rnnt/decode_test_fbank_wlm; do
    name=${d%%/*} best=best_wer
    case $d in
      chain_tdnnf/decode_test) name="chain (dev)" ;;   # LM weight chosen on its dev set
      chain_tdnnf/decode_test:on_test) name="chain" best=best_wer_on_test d=${d%:*} ;;
      rnnt/decode_test_greedy) name="rnnt" ;;
      rnnt/decode_test_fbank_lm) name="rnnt + LM" ;;   # weight, bonus chosen on dev
      rnnt/decode_test_fbank_wlm) name="rnnt + wLM" ;;   # word trigram, chosen on dev
    esac
    for f in exp/$d/$best exp/$d/wer; do
      if [ -f "$f" ]; then printf '%-12s %s\n' "$name" "$(head -n 1 "$f")"; break; fi
    done
  done
fi
