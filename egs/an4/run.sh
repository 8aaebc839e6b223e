#!/usr/bin/env bash
# AN4 recipe: from the raw corpus to a WER table (mono -> tri1 -> tri2 -> tri3 SAT -> hybrid CE BLSTM).
#   bash run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--nj N] [--force] [--rnnt-best NAME] [--rnnt-max-sym N]
# Stages: 0 prepare, 1 features (MFCC + 80-dim fbank), 2 dict/lang/LM/G, 3 mono, 4 tri1 (deltas),
# 5 tri2 (LDA+MLLT), 6 tri3 (SAT: LDA+MLLT+fMLLR, two-pass decode) and its fMLLR alignments for the
# nnets (exp/tri3_ali), 7 CE BLSTM (train-ce on the tri3 pdfs),
# 8 its decode + scoring + the model dir for pykaldi2.load_model (exp/blstm_ce/export),
# 9 RNN-T (train-transducer), 10 its greedy/beam decode + ONNX export and onnxruntime decode,
# 11 speed-perturbed data + chain tree, 12 LF-MMI TDNN-F from scratch (train + decode), 13-14 lattice sMBR from the CE BLSTM, 15-16 LF-MMI BLSTM
# from the CE BLSTM (chunked), 17 a simulated-noisy copy of the test set (conf/sim_test.yaml),
# 18 the CE BLSTM trained with on-the-fly simulation (conf/sim.yaml), 19 clean-trained and
# simulation-trained CE BLSTMs decoded on the noisy test set (and the latter on the clean one),
# 20-21 LF-MMI from the CE BLSTM on tri3's own HMMs at the full frame rate, 22 the CE and sMBR
# BLSTMs with priors from their average posteriors (adjust-priors), decoded on both test sets,
# 23 the RNN-T dev split (+ GMMs on train_nodev alone, for the RNN-T's alignment loss), 24 the
# RNN-T tuning queue, 25 its LM shallow fusion (rnnt_best).
# Each stage leaves a .done marker in exp/ (rerun skips finished stages; --force redoes them).
# Settings live in conf/*.yaml.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh   # PYKALDI2_CMD: where the --nj jobs run (run.pl, slurm.pl ...)

stage=0
stop_stage=100
corpus_dir=../../../shared/data/an4   # an AN4 already on disk; empty => download
nj=2
force=false
lm_order=3
rnnt_best=rnnt_v10  # the line of conf/rnnt_queue.txt chosen on dev (stage 25; RESULTS.md)
rnnt_max_sym=2      # stage 25's beam search: symbols per encoder frame (chosen on dev for v10)
recipe_opts="rnnt_best rnnt_max_sym"

. ../stages.sh   # options, log, run_stage
. ../functions.sh   # decode_gmm, decode_nnet_export, decode_chain, decode_chain_dev, chain_data

prepare() {
  if [ -n "$corpus_dir" ]; then
    pykaldi2 prepare an4 --corpus-dir "$corpus_dir" data
  else
    pykaldi2 prepare an4 --download --corpus-dir downloads data
  fi
}
an4_dir=${corpus_dir:-downloads/an4}   # where etc/an4.dic is, for the dictionary

features() {
  for set in train test; do
    # fbank data dirs are copies with their own feats.scp / cmvn.scp (HDF5 for the nnets)
    pykaldi2 combine-data data/${set}_fbank data/$set
    pykaldi2 compute-feats --config conf/fbank.yaml --nj "$nj" data/${set}_fbank fbank
    pykaldi2 compute-cmvn data/${set}_fbank fbank
    # MFCC for the GMMs as Kaldi's make_mfcc.sh writes them: uncompressed ark + scp (each GMM
    # pass reads every utterance; a gzip'ed HDF5 dataset costs 10x an ark read)
    pykaldi2 compute-feats --config conf/mfcc.yaml --nj "$nj" --format ark data/$set mfcc
    pykaldi2 compute-cmvn data/$set mfcc
  done
}

lang() {
  pykaldi2 prepare-dict an4 "$an4_dir" data/local/dict --lm-text data/local/lm_train.txt
  pykaldi2 prepare-lang data/local/dict '<UNK>' data/lang
  pykaldi2 train-lm --order $lm_order --words data/lang/words.txt \
    data/local/lm_train.txt data/local/lm/${lm_order}gram.arpa
  pykaldi2 make-g data/lang data/local/lm/${lm_order}gram.arpa data/lang_test
}

mono() {
  pykaldi2 train-mono --nj "$nj" --config conf/mono.yaml data/train data/lang exp/mono
  decode_gmm mono
}

tri1() {
  pykaldi2 align-si --nj "$nj" data/train data/lang exp/mono exp/mono_ali
  pykaldi2 train-deltas --config conf/tri1.yaml data/train data/lang exp/mono_ali exp/tri1
  decode_gmm tri1
}

tri2() {
  pykaldi2 align-si --nj "$nj" data/train data/lang exp/tri1 exp/tri1_ali
  pykaldi2 train-lda-mllt --config conf/tri2.yaml data/train data/lang exp/tri1_ali exp/tri2
  decode_gmm tri2
}

# tri3: steps/train_sat.sh on the tri2 alignments, decode_fmllr.sh (SI first pass with
# final.alimdl, fMLLR per test speaker, adapted passes), align_fmllr.sh for the nnets' targets
tri3() {
  pykaldi2 align-si --nj "$nj" data/train data/lang exp/tri2 exp/tri2_ali
  pykaldi2 train-sat --config conf/tri3.yaml data/train data/lang exp/tri2_ali exp/tri3
  pykaldi2 mkgraph data/lang_test exp/tri3/final.mdl exp/tri3/graph
  pykaldi2 decode-fmllr --nj "$nj" exp/tri3/graph data/test exp/tri3 exp/tri3/decode_test
  pykaldi2 score --ref data/test/text --min-lmwt 5 --max-lmwt 20 exp/tri3/decode_test
  pykaldi2 align-fmllr --nj "$nj" data/train data/lang exp/tri3 exp/tri3_ali
}

run_stage 0 prepare prepare
run_stage 1 features features
run_stage 2 lang lang
run_stage 3 mono mono
run_stage 4 tri1 tri1
run_stage 5 tri2 tri2
# the SAT system and its alignments (transition-ids) of the training data for the hybrid nnets
run_stage 6 tri3 tri3

# hybrid CE BLSTM on the tri3 alignments (conf/ce_blstm.yaml: 3x320, chunks of 80 frames)
run_stage 7 blstm_ce pykaldi2 train-ce --config conf/ce_blstm.yaml exp/blstm_ce

# its decode through the tri3 graph + the model dir for load_model (exp/blstm_ce/export); the
# BLSTMs here are decoded on whole utterances (--mode utterance): the 80-frame training chunks
# without context cost 5.82% vs 4.40% WER on this model (RESULTS.md)
run_stage 8 blstm_ce_decode decode_nnet_export blstm_ce exp/tri3/graph --mode utterance

# RNN-Transducer (conf/transducer.yaml: 4M LSTM RNN-T + 0.3 CTC, 32 BPE symbols, SpecAugment,
# EMA) on the 80-dim fbank of stage 1; stage 10 decodes data/test_fbank greedy and with a beam of
# 4, exports ONNX and decodes again with onnxruntime, counting the transcripts equal to PyTorch's.
run_stage 9 rnnt pykaldi2 train-transducer --config conf/transducer.yaml exp/rnnt

decode_transducer_system() {
  local exp=exp/$1
  pykaldi2 decode-transducer $exp/final data/test_fbank $exp/decode_test_greedy
  pykaldi2 decode-transducer --beam 4 $exp/final data/test_fbank $exp/decode_test_beam4
  pykaldi2 export-onnx $exp/final $exp/onnx
  pykaldi2 decode-onnx --compare $exp/decode_test_greedy/hyp.txt $exp/onnx data/test_fbank \
    $exp/decode_test_onnx
}
run_stage 10 rnnt_decode decode_transducer_system rnnt

# LF-MMI (chain) TDNN-F from scratch as Kaldi's chain recipes build it (conf/chain_tdnnf.yaml,
# after mini_librispeech's run_tdnn_1j.sh). Stage 11: speed-perturbed training data (0.9/1.0/1.1)
# with MFCC (for tri3) and fbank features, its tri3 (SAT) alignments (align-fmllr) and the chain
# tree at 1/3 frame rate (functions.sh chain_data: build-tree-chain on the fMLLR-adapted
# features, left biphone, 500 leaves). Stage 12:
# train-chain (the command of run_chain.sh; its egs are written once to exp/chain_tdnnf/egs by NJ
# jobs, resumable), then the decode through its graph (self-loop scale 1.0) with the LM weight
# chosen on a dev set carved from train: the utterances held out of the chain training (its
# validation set, at speed 1.0); decode_test/best_wer is the test WER at that setting
# (best_wer_on_test: the best on test itself).
run_stage 11 chain_data chain_data tri3 500
chain_tdnnf() {
  pykaldi2 train-chain --config conf/chain_tdnnf.yaml exp/chain_tdnnf
  decode_chain_dev chain_tdnnf
}
run_stage 12 chain_tdnnf chain_tdnnf

# Lattice sequence training (sMBR, conf/se_blstm.yaml) from the CE BLSTM, lattices generated on
# the fly through the tri3 graph by 2 worker processes; decoded like the CE model.
run_stage 13 blstm_smbr pykaldi2 train-se --criterion smbr --config conf/se_blstm.yaml exp/blstm_smbr
run_stage 14 blstm_smbr_decode pykaldi2 decode-nnet --nj "$nj" --mode utterance \
  exp/blstm_smbr/final exp/tri3/graph data/test_fbank exp/blstm_smbr/decode_test

# LF-MMI fine-tuning of the CE BLSTM (conf/chain_blstm.yaml: same sizes and tree, chunks of 150
# frames + 15 frames of context, frame shift), decoded through its own chain graph.
run_stage 15 chain_blstm pykaldi2 train-chain --config conf/chain_blstm.yaml exp/chain_blstm
run_stage 16 chain_blstm_decode decode_chain chain_blstm --mode utterance

# On-the-fly simulation (issue 7): a noisy, reverberant copy of the test set with a fixed seed
# (coloured noise 0-20 dB, T60 0.2-0.8 s), and the CE BLSTM of stage 7 retrained with every
# epoch simulated anew (conf/sim.yaml: babble noise, rooms, speed and volume perturbation).
noisy_test() {
  pykaldi2 simulate --config conf/sim_test.yaml data/test data/test_noisy
  pykaldi2 compute-feats --config conf/fbank.yaml --nj "$nj" data/test_noisy fbank
  pykaldi2 compute-cmvn data/test_noisy fbank
}
run_stage 17 test_noisy noisy_test
run_stage 18 blstm_ce_sim pykaldi2 train-ce --config conf/ce_blstm.yaml \
  --override simulation=conf/sim.yaml exp/blstm_ce_sim
# decode_gmm_graph SYS DATA OUT: decode DATA with exp/SYS/final through the tri3 graph into OUT
decode_gmm_graph() {
  pykaldi2 decode-nnet --nj "$nj" exp/$1/final exp/tri3/graph $2 exp/$1/$3
}
sim_decode() {
  decode_gmm_graph blstm_ce data/test_noisy decode_test_noisy
  decode_gmm_graph blstm_ce_sim data/test_noisy decode_test_noisy
  decode_gmm_graph blstm_ce_sim data/test_fbank decode_test
}
run_stage 19 sim_decode sim_decode

# LF-MMI fine-tuning of the CE BLSTM on its own HMMs (conf/chain_blstm_fr.yaml: tri3's 3-state
# topology and transition model at the full frame rate, so the start is exactly the CE model).
run_stage 20 chain_blstm_fr pykaldi2 train-chain --config conf/chain_blstm_fr.yaml exp/chain_blstm_fr
# Decoded through its own graph (self-loop scale 1.0) and, as its HMMs are tri3's, through the
# CE model's graph (exp/tri3/graph, self-loop scale 0.1) into decode_test_tri2graph: the same
# graph and decoder as the CE model of stage 8.
decode_chain_fr() {
  decode_chain chain_blstm_fr --mode utterance
  pykaldi2 decode-chain --nj "$nj" --mode utterance exp/chain_blstm_fr/final exp/tri3/graph \
    data/test_fbank exp/chain_blstm_fr/decode_test_tri2graph
}
run_stage 21 chain_blstm_fr_decode decode_chain_fr

# Priors from the networks' average posteriors (Kaldi's nnet3-am-adjust-priors) for the CE and
# sMBR BLSTMs, decoded on the test set and (after stage 17) on its noisy copy: RESULTS.md,
# session 4 (clean test unchanged, noisy test 3.9 points better for the CE model).
adjusted_priors() {
  local sys d
  for sys in blstm_ce blstm_smbr; do
    pykaldi2 adjust-priors --overwrite --max-utts 0 exp/$sys/final data/train_fbank \
      exp/$sys/final_adj
    for d in test_fbank test_noisy; do
      [ -f data/$d/feats.scp ] || continue
      pykaldi2 decode-nnet --nj "$nj" exp/$sys/final_adj exp/tri3/graph data/$d \
        exp/$sys/decode_${d%_fbank}_adj
    done
  done
}
run_stage 22 adjusted_priors adjusted_priors

# RNN-T tuning (issue 20) on ESPnet's dev split of train: the first 100 training utterances are
# train_dev, the other 848 train_nodev (egs2/an4/asr1/local/data.sh); stage 24 runs the tuning
# queue conf/rnnt_queue.txt (one line per step, each trained and greedy-decoded on dev and test;
# resumable: finished lines are skipped), stage 25 the shallow fusion of the chosen model with a
# piece LM and with a word LM (weight and symbol bonus chosen on dev). Results and times: RESULTS.md, "RNN-T tuning".
# Stage 23 also trains the GMM ladder (mono -> tri3, no decoding) on train_nodev alone: the
# alignments the RNN-T's auxiliary frame CE learns from (conf/transducer_v10.yaml, ali_dir
# exp/nodev/tri3_ali) then come from models that never saw the dev utterances.
rnnt_nodev_gmm() {
  local d=exp/nodev
  pykaldi2 subset-data-dir --utt-list data/train_nodev.list data/train data/train_nodev
  pykaldi2 train-mono --nj "$nj" --config conf/mono.yaml data/train_nodev data/lang $d/mono
  pykaldi2 align-si --nj "$nj" data/train_nodev data/lang $d/mono $d/mono_ali
  pykaldi2 train-deltas --config conf/tri1.yaml data/train_nodev data/lang $d/mono_ali $d/tri1
  pykaldi2 align-si --nj "$nj" data/train_nodev data/lang $d/tri1 $d/tri1_ali
  pykaldi2 train-lda-mllt --config conf/tri2.yaml data/train_nodev data/lang $d/tri1_ali $d/tri2
  pykaldi2 align-si --nj "$nj" data/train_nodev data/lang $d/tri2 $d/tri2_ali
  pykaldi2 train-sat --config conf/tri3.yaml data/train_nodev data/lang $d/tri2_ali $d/tri3
  pykaldi2 align-fmllr --nj "$nj" data/train_nodev data/lang $d/tri3 $d/tri3_ali
}

rnnt_dev_split() {
  pykaldi2 subset-data-dir --first 100 data/train_fbank data/train_dev_fbank
  cut -d' ' -f1 data/train_fbank/utt2spk | tail -n +101 > data/train_nodev.list
  pykaldi2 subset-data-dir --utt-list data/train_nodev.list data/train_fbank data/train_nodev_fbank
  for d in train_dev_fbank train_nodev_fbank; do   # the feature config, for simulation
    mkdir -p data/$d/conf && cp data/train_fbank/conf/feats.json data/$d/conf/
  done
  rnnt_nodev_gmm
}
run_stage 23 rnnt_dev_split rnnt_dev_split
run_stage 24 rnnt_tuning pykaldi2 queue conf/rnnt_queue.txt
# stage 25: the piece 4-gram, then a word trigram of train_nodev (hypotheses spell its words
# only: decode-transducer --lm-unit words), each weight and bonus chosen on train_dev
rnnt_lm() {
  rnnt_lm_fusion exp/$rnnt_best train_dev_fbank test_fbank
  rnnt_lm_unit=words rnnt_lm_weights="0.1 0.2 0.4 0.6 0.8" rnnt_symbol_bonuses="0.0 1.0 2.0" \
    rnnt_lm_fusion exp/$rnnt_best train_dev_fbank test_fbank
}
run_stage 25 rnnt_lm rnnt_lm

# stage 99: the WER table of every decoded system (always runs; reads exp/*/decode_test/best_wer)
if [ "$stop_stage" -ge 99 ]; then
  printf '%-10s %s\n' system "best test WER (LMWT_WIP)"
  for sys in mono tri1 tri2 tri3 blstm_ce chain_tdnnf blstm_smbr chain_blstm chain_blstm_fr \
    blstm_ce_sim; do
    f=exp/$sys/decode_test/best_wer
    if [ -f "$f" ]; then printf '%-10s %s\n' "$sys" "$(cat "$f")"; fi
  done
  for sys in blstm_ce blstm_smbr; do   # stage 22: adjusted priors
    for d in test test_noisy; do
      f=exp/$sys/decode_${d}_adj/best_wer
      if [ -f "$f" ]; then printf '%-10s %s\n' "$sys (adjusted priors, $d)" "$(cat "$f")"; fi
    done
  done
  for sys in blstm_ce blstm_ce_sim; do   # stage 19: the simulated-noisy test set
    f=exp/$sys/decode_test_noisy/best_wer
    if [ -f "$f" ]; then printf '%-10s %s\n' "$sys (noisy test)" "$(cat "$f")"; fi
  done
  if [ -f conf/rnnt_queue.txt.summary ]; then   # stages 24-25: the RNN-T tuning on dev
    echo "RNN-T tuning (conf/rnnt_queue.txt, greedy):"; cat conf/rnnt_queue.txt.summary
    for set in train_dev_fbank test_fbank; do
      f=exp/$rnnt_best/decode_${set}_lm/wer
      if [ -f "$f" ]; then printf '%-10s %s\n' "$rnnt_best + LM ($set)" "$(head -n 1 "$f")"; fi
      f=exp/$rnnt_best/decode_${set}_wlm/wer
      if [ -f "$f" ]; then printf '%-10s %s\n' "$rnnt_best + word LM ($set)" "$(head -n 1 "$f")"; fi
    done
  fi
  f=exp/chain_blstm_fr/decode_test_tri2graph/best_wer   # stage 21, the CE model's graph
  if [ -f "$f" ]; then printf '%-10s %s\n' "chain_blstm_fr (tri2 graph)" "$(cat "$f")"; fi
  # sequence-trained vs CE: bootstrap intervals and P(improvement), same test utterances
  for sys in blstm_smbr chain_tdnnf chain_blstm_fr/decode_test_tri2graph; do
    d=exp/$sys; [ -d "$d" ] || continue
    [ -f "$d/best_wer" ] || d=$d/decode_test
    if [ -f exp/blstm_ce/decode_test/best_wer ] && [ -f "$d/best_wer" ]; then
      echo "blstm_ce vs $d:"
      pykaldi2 compute-wer-bootci data/test/text exp/blstm_ce/decode_test "$d"
    fi
  done
fi
