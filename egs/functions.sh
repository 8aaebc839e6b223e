# Sourced by egs/*/run.sh after stages.sh: the decode steps the recipes share. Each function
# reads data/lang_test and data/test (GMMs) or data/test_fbank (nnets) of the recipe's cwd and
# uses $nj decoding processes.

# decode_gmm SYS: HCLG for exp/SYS/final.mdl, decode data/test, score over LMWT 5..20 x WIP
# -> exp/SYS/decode_test/{hyp.txt, wer_*, best_wer}
decode_gmm() {
  pykaldi2 mkgraph data/lang_test exp/$1/final.mdl exp/$1/graph
  pykaldi2 decode --data data/test --nj "$nj" exp/$1/graph exp/$1/final.mdl exp/$1/decode_test
  pykaldi2 score --ref data/test/text --min-lmwt 5 --max-lmwt 20 exp/$1/decode_test
}

# decode_nnet_export SYS GRAPH [decode-nnet options]: decode data/test_fbank with exp/SYS/final
# (a train-ce or train-se model dir) through GRAPH (acoustic scale 0.1, prior scale 1), score
# over LMWT 1..20 (LMWT 10 = the decoding scale), then write the model dir exp/SYS/export with
# the acoustic scale 1/best-LMWT for `pykaldi2 transcribe` / pykaldi2.load_model.
decode_nnet_export() {
  local exp=exp/$1 graph=$2 lmwt
  shift 2
  pykaldi2 decode-nnet --nj "$nj" --no-score "$@" $exp/final $graph data/test_fbank \
    $exp/decode_test
  pykaldi2 score --ref data/test_fbank/text --min-lmwt 1 --max-lmwt 20 $exp/decode_test
  lmwt=$(sed -E 's/.*wer_([0-9.]+)_[0-9.]+$/\1/' $exp/decode_test/best_wer)
  pykaldi2 export-hybrid-model --overwrite --acoustic-scale "$(awk "BEGIN { print 1 / $lmwt }")" \
    $exp/final $graph $exp/export
}

# decode_chain SYS [decode-chain options]: the chain graph (self-loop scale 1.0) of
# exp/SYS/final/final.mdl and the decode of data/test_fbank with exp/SYS/final, scored over
# chain LM weights
decode_chain() {
  local exp=exp/$1
  shift
  pykaldi2 mkgraph --self-loop-scale 1.0 data/lang_test $exp/final/final.mdl $exp/graph
  pykaldi2 decode-chain --nj "$nj" "$@" $exp/final $exp/graph data/test_fbank $exp/decode_test
}
