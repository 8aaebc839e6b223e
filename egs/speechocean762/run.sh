#!/usr/bin/env bash
# speechocean762 recipe (OpenSLR 101: 5,000 read English sentences by 250 Mandarin-L1 speakers,
# half of them children; 2.9 h train / 2.7 h test, 15,967 test words): raw corpus -> WER table.
#   bash run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--nj N] [--force]
#               [--mono-utts N] [--eval-sets "dev test"] [--dev-set dev] [--gmm-eval-sets none]
#               [--chain-opts "--override trainer.max_epochs=5"]
# --corpus-dir: the extracted speechocean762/ folder (train/ test/ WAVE/ resource/lexicon.txt);
# empty downloads the OpenSLR tarball into downloads/ (resumable, size-checked).
# Dev and test: the 125 official test speakers sorted by id, alternately dev (1st, 3rd, ...) and
# test (2nd, 4th, ...). Every setting (LMWT/WIP included) is chosen on dev; test is scored at the
# dev-chosen setting (dev_set=dev below; Kaldi's score.sh picks on the scored set itself).
# Sizes follow Kaldi's mini_librispeech s5 (5 h): mono on the 1,000 shortest utterances with
# boost-silence 1.25, tri1 2000 leaves / 10k Gaussians, tri2 LDA+MLLT 2500 / 15k, tri3 SAT
# 2500 / 15k. GMM steps run in --nj jobs, the data split by speaker (Kaldi's split_data.sh).
# Stages: 0 data dirs (train, dev, test, test_full), 1 features (MFCC for the GMMs, 80-dim fbank
# for the nnets), 2 dict (the corpus lexicon, stress kept) / lang / trigram on the train
# transcripts only / G, 3 mono, 4 tri1, 5 tri2, 6 tri3 (SAT, fMLLR decoding; each decoded on
# dev and test) and its fMLLR alignments of train for the nnets, 7-8 CE BLSTM (dev and test
# through tri3's graph), 9-10 lattice sMBR from the CE BLSTM (den lattices through a unigram
# graph), 11-12 chain TDNN-F, 13 RNN-T, 14 its decodes (greedy, beam 4, + piece-LM fusion tuned
# on dev), 99 the WER table.
# Each stage leaves a .done marker in exp/ (rerun skips finished stages; --force redoes them).
set -euo pipefail
invoke_dir=$PWD   # a relative --corpus-dir is relative to where run.sh was started
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh   # PYKALDI2_CMD: where the --nj jobs run (run.pl, slurm.pl ...)

stage=0
stop_stage=100
corpus_dir=""   # the speechocean762/ folder on disk; empty => download into downloads/
nj=2
force=false
lm_order=3
dev_set=dev     # score_decode: LMWT/WIP chosen on dev, test scored at that setting
eval_sets="dev test"
mono_utts=1000  # mono trains on the N shortest training utterances
gmm_eval_sets=unset   # the sets stages 3-6 decode their GMM with (default: $eval_sets; "none": no
                      # GMM decoding, e.g. when only tri3's alignments are wanted for the nnets)
chain_opts=""   # extra train-chain options, e.g. --chain-opts "--override trainer.max_epochs=4"
recipe_opts="mono_utts eval_sets dev_set gmm_eval_sets chain_opts"

. ../stages.sh   # options, log, run_stage
. ../functions.sh   # score_decode, decode_gmm, chain_data

if [ -n "$corpus_dir" ] && [[ $corpus_dir != /* ]]; then corpus_dir=$invoke_dir/$corpus_dir; fi
[ "$gmm_eval_sets" = unset ] && gmm_eval_sets=$eval_sets
[ "$gmm_eval_sets" = none ] && gmm_eval_sets=""

prepare() {
  if [ -n "$corpus_dir" ]; then
    pykaldi2 prepare speechocean762 --corpus-dir "$corpus_dir" data
  else
    pykaldi2 prepare speechocean762 --download --corpus-dir downloads data
  fi
}
lexicon=${corpus_dir:-downloads/speechocean762}/resource/lexicon.txt

features() {
  local set
  for set in train $eval_sets; do
    pykaldi2 combine-data data/${set}_fbank data/$set   # a copy with its own feats.scp
    pykaldi2 compute-feats --config conf/fbank.yaml --nj "$nj" data/${set}_fbank fbank
    pykaldi2 compute-cmvn data/${set}_fbank fbank
    # MFCC for the GMMs as Kaldi's make_mfcc.sh writes them: uncompressed ark + scp (every GMM
    # pass reads every utterance)
    pykaldi2 compute-feats --config conf/mfcc.yaml --nj "$nj" --format ark data/$set mfcc
    pykaldi2 compute-cmvn data/$set mfcc
  done
  # mono trains on the shortest utterances, as Kaldi's recipes do (more likely well aligned)
  pykaldi2 subset-data-dir --shortest "$mono_utts" data/train data/train_mono
}

lang() {
  pykaldi2 prepare-dict lexicon "$lexicon" data/local/dict
  pykaldi2 prepare-lang data/local/dict '<UNK>' data/lang
  # the LM sees the train transcripts only (never dev/test text); every lexicon word gets a
  # probability through the vocabulary
  pykaldi2 train-lm --order $lm_order --skip-first-field --words data/lang/words.txt \
    data/train/text data/local/lm/${lm_order}gram.arpa
  pykaldi2 make-g data/lang data/local/lm/${lm_order}gram.arpa data/lang_test
}

mono() {
  pykaldi2 train-mono --nj "$nj" --config conf/mono.yaml data/train_mono data/lang exp/mono
  if [ -n "$gmm_eval_sets" ]; then decode_gmm mono $gmm_eval_sets; fi
}

# tri SRC NAME TRAIN-CMD: align all of data/train with exp/SRC, train exp/NAME from those
# alignments, decode it
tri() {
  pykaldi2 align-si --nj "$nj" data/train data/lang exp/$1 exp/$1_ali
  pykaldi2 "$3" --nj "$nj" --config conf/$2.yaml data/train data/lang exp/$1_ali exp/$2
  if [ "$3" = train-sat ]; then
    if [ -n "$gmm_eval_sets" ]; then decode_sat "$2" $gmm_eval_sets; fi
    # the nnets train on the SAT system's alignments, as Kaldi's recipes do
    pykaldi2 align-fmllr --nj "$nj" data/train data/lang exp/$2 exp/$2_ali
  elif [ -n "$gmm_eval_sets" ]; then
    decode_gmm "$2" $gmm_eval_sets
  fi
}

run_stage 0 prepare prepare
run_stage 1 features features
run_stage 2 lang lang
run_stage 3 mono mono
run_stage 4 tri1 tri mono tri1 train-deltas       # MFCC + deltas
run_stage 5 tri2 tri tri1 tri2 train-lda-mllt     # LDA + MLLT
run_stage 6 tri3 tri tri2 tri3 train-sat          # SAT (fMLLR) + exp/tri3_ali

# hybrid CE BLSTM on tri3's alignments (conf/ce_blstm.yaml: 3x320, chunks of 80 frames), decoded
# on whole utterances through tri3's graph (HCLG of stage 6, or made here when the GMM stages ran
# with --gmm-eval-sets none), dev and test, test at dev's LMWT/WIP
run_stage 7 blstm_ce pykaldi2 train-ce --config conf/ce_blstm.yaml exp/blstm_ce
# decode_nnet_sets SYS GMM [decode-nnet options]: exp/SYS/final through exp/GMM/graph (the GMM
# whose pdfs the net predicts)
decode_nnet_sets() {
  local exp=exp/$1 graph=exp/$2/graph set
  [ -f $graph/HCLG.fst ] || pykaldi2 mkgraph data/lang_test exp/$2/final.mdl $graph
  shift 2
  for set in $eval_sets; do   # $dev_set first
    pykaldi2 decode-nnet --nj "$nj" --no-score "$@" $exp/final $graph data/${set}_fbank \
      $exp/decode_$set
    score_decode $exp $set 1 20
  done
}
run_stage 8 blstm_ce_decode decode_nnet_sets blstm_ce tri3 --mode utterance

# lattice sMBR from the CE BLSTM (conf/se_blstm.yaml), den lattices generated on the fly through a
# unigram graph of the train text (Kaldi's make_denlats.sh), decoded like the CE model
blstm_smbr() {
  if [ ! -f exp/tri3/graph_ug/HCLG.fst ]; then
    pykaldi2 train-lm --order 1 --skip-first-field --words data/lang/words.txt \
      data/train/text data/local/lm/1gram.arpa
    pykaldi2 make-g data/lang data/local/lm/1gram.arpa data/lang_ug
    pykaldi2 mkgraph data/lang_ug exp/tri3/final.mdl exp/tri3/graph_ug
  fi
  pykaldi2 train-se --criterion smbr --config conf/se_blstm.yaml exp/blstm_smbr
}
run_stage 9 blstm_smbr blstm_smbr
run_stage 10 blstm_smbr_decode decode_nnet_sets blstm_smbr tri3 --mode utterance

# LF-MMI (chain) TDNN-F from scratch (conf/chain_tdnnf.yaml, Kaldi's run_tdnn_1j.sh scaled):
# speed-perturbed train (0.9/1.0/1.1) with MFCC + fbank, aligned with exp/$chain_gmm, the chain
# tree at 1/3 rate (2000 leaves), train-chain (egs on disk), decode dev and test (test at the
# dev setting). chain_gmm: the GMM whose alignments the chain system uses (tri3, SAT: the
# speed-perturbed data are aligned with align-fmllr, as Kaldi's chain recipes do with tri3b).
chain_gmm=${chain_gmm:-tri3}
chain_tdnnf() {
  chain_data $chain_gmm 2000
  pykaldi2 train-chain --config conf/chain_tdnnf.yaml \
    --override "ali_dir=[exp/${chain_gmm}_ali_sp]" $chain_opts exp/chain_tdnnf
}
run_stage 11 chain_tdnnf chain_tdnnf
decode_chain_sets() {
  local exp=exp/chain_tdnnf set
  pykaldi2 mkgraph --self-loop-scale 1.0 data/lang_test $exp/final/final.mdl $exp/graph
  for set in $eval_sets; do   # each scored over the chain LM weights 0.7..1.7
    pykaldi2 decode-chain --nj "$nj" $exp/final $exp/graph data/${set}_fbank $exp/decode_$set
  done
  for set in $eval_sets; do   # every set but dev at the setting chosen on dev
    [ "$set" = "$dev_set" ] && continue
    cp $exp/decode_$set/best_wer $exp/decode_$set/best_wer_on_$set
    pykaldi2 score --ref data/$set/text --tuned-on $exp/decode_$dev_set $exp/decode_$set
  done
}
run_stage 12 chain_tdnnf_decode decode_chain_sets

# RNN-T (conf/transducer.yaml: AN4's dev-tuned recipe scaled to 2.9 h) on the 80-dim fbank;
# stage 14 decodes dev and test greedy and with a beam of 4, then with a piece 4-gram of the
# train transcripts (LM weight and symbol bonus chosen on dev; egs/functions.sh rnnt_lm_fusion)
run_stage 13 rnnt pykaldi2 train-transducer --config conf/transducer.yaml exp/rnnt
# the shallow-fusion grid on dev: 3 LM weights x 2 symbol bonuses (6 beam-4 decodes of the 1,260
# dev utterances; egs/functions.sh's default grid is 12)
rnnt_lm_weights=${rnnt_lm_weights:-0.2 0.3 0.5}
rnnt_symbol_bonuses=${rnnt_symbol_bonuses:-0.5 1.0}
rnnt_decode() {
  local set pids=""
  for set in $eval_sets; do   # the sets side by side (one process, one thread each)
    { pykaldi2 decode-transducer exp/rnnt/final data/${set}_fbank exp/rnnt/decode_${set}_fbank_greedy
      pykaldi2 decode-transducer --beam 4 exp/rnnt/final data/${set}_fbank \
        exp/rnnt/decode_${set}_fbank_beam4; } &
    pids="$pids $!"
  done
  wait_all $pids
  rnnt_lm_fusion exp/rnnt dev_fbank test_fbank
}
run_stage 14 rnnt_decode rnnt_decode

# stage 99: dev and test WER of every decoded system (always runs); test at the dev setting
if [ "$stop_stage" -ge 99 ]; then
  printf '%-10s %-8s %s\n' system set "WER (LMWT_WIP chosen on dev)"
  for sys in mono tri1 tri2 tri3 blstm_ce blstm_smbr chain_tdnnf; do
    for set in $eval_sets; do
      f=exp/$sys/decode_$set/best_wer
      if [ -f "$f" ]; then printf '%-10s %-8s %s\n' "$sys" "$set" "$(cat "$f")"; fi
    done
  done
  for set in $eval_sets; do   # stages 13-14: the RNN-T
    for d in greedy beam4; do
      f=exp/rnnt/decode_${set}_fbank_$d/wer
      if [ -f "$f" ]; then printf '%-10s %-8s %s\n' "rnnt $d" "$set" "$(head -n 1 "$f")"; fi
    done
    f=exp/rnnt/decode_${set}_fbank_lm/wer
    if [ -f "$f" ]; then
      printf '%-10s %-8s %s (LM weight, bonus on dev: %s)\n' "rnnt +LM" "$set" \
        "$(head -n 1 "$f")" "$(cat exp/rnnt/lm/best)"
    fi
  done
fi
