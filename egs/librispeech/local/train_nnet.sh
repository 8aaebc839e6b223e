# Sourced (POSIX sh) by run.sh and by the entry points run_ce.sh / run_se.sh / run_chain.sh, with
# $subset set (100, 460 or 960): the nnet training commands of run.sh stages 9, 11, 13 and 15,
# so that `sh run_ce.sh` and `bash run.sh --stage 9 --stop-stage 9` run the same command. The
# config files name the 960 h dirs; the overrides point them at the chosen subset. Extra
# arguments (e.g. --override trainer.lr=1e-4) go to the trainer.
train=train_$subset                  # data/train_960, data/train_960_fbank
gmm=tri3_$subset                     # the GMM of the full subset (stage 7)
ali=exp/${gmm}_ali_$train            # its alignments (stage 8): the nnets' targets and tree
valid_ali=exp/${gmm}_ali_dev_clean

# train_ce [ARGS]: the hybrid CE BLSTM (conf/ce_blstm.yaml) -> exp/blstm_ce_$subset
train_ce() {
  pykaldi2 train-ce --config conf/ce_blstm.yaml \
    --override "train_data=[data/${train}_fbank]" --override "ali_dir=[$ali]" \
    --override "valid_data=[data/dev_clean_fbank]" --override "valid_ali_dir=[$valid_ali]" \
    "$@" "exp/blstm_ce_$subset"
}

# train_chain [ARGS]: LF-MMI TDNN-F from scratch (conf/chain_tdnnf.yaml) -> exp/chain_tdnnf_$subset
train_chain() {
  pykaldi2 train-chain --config conf/chain_tdnnf.yaml \
    --override "train_data=[data/${train}_fbank]" --override "ali_dir=[$ali]" \
    "$@" "exp/chain_tdnnf_$subset"
}

# train_se [ARGS]: sMBR from the CE BLSTM (conf/se_blstm.yaml), denominator lattices through the
# full-subset GMM's graph -> exp/blstm_smbr_$subset
train_se() {
  pykaldi2 train-se --criterion smbr --config conf/se_blstm.yaml \
    --override "init_model=exp/blstm_ce_$subset/final" \
    --override "train_data=[data/${train}_fbank]" --override "ali_dir=[$ali]" \
    --override "den_graph=exp/$gmm/graph" \
    "$@" "exp/blstm_smbr_$subset"
}

# train_rnnt [ARGS]: the RNN-T (conf/transducer.yaml, Myrtle testing size) -> exp/rnnt_$subset
train_rnnt() {
  pykaldi2 train-transducer --config conf/transducer.yaml \
    --override "train_data=[data/${train}_fbank]" --override "valid_data=[data/dev_clean_fbank]" \
    "$@" "exp/rnnt_$subset"
}
