# Sourced by run.sh: decoding of every test set in $test_sets (dev_clean test_clean dev_other
# test_other, those prepared) with $nj processes, and the WER table of stage 99. GMMs decode
# data/<set> (MFCC), nnets data/<set>_fbank; graphs from data/lang_test (the pruned 3-gram).
# Each decode dir is exp/<system>/decode_<set>[_<suffix>] with best_wer (or wer).

# decode_gmm SYS: exp/SYS/graph, then decode + score (LMWT 5..20) of each test set
decode_gmm() {
  local exp=exp/$1 set
  pykaldi2 mkgraph data/lang_test $exp/final.mdl $exp/graph
  for set in $test_sets; do
    pykaldi2 decode --data data/$set --nj "$nj" $exp/graph $exp/final.mdl $exp/decode_$set
    pykaldi2 score --ref data/$set/text --min-lmwt 5 --max-lmwt 20 $exp/decode_$set
  done
}

# decode_hybrid SYS GRAPH: a train-ce / train-se model dir exp/SYS/final through GRAPH
decode_hybrid() {
  local set
  for set in $test_sets; do
    pykaldi2 decode-nnet --nj "$nj" exp/$1/final $2 data/${set}_fbank exp/$1/decode_$set
  done
}

# decode_chain_sets SYS: the chain graph (self-loop scale 1.0) of exp/SYS/final, then each set
decode_chain_sets() {
  local exp=exp/$1 set
  pykaldi2 mkgraph --self-loop-scale 1.0 data/lang_test $exp/final/final.mdl $exp/graph
  for set in $test_sets; do
    pykaldi2 decode-chain --nj "$nj" $exp/final $exp/graph data/${set}_fbank $exp/decode_$set
  done
}

# decode_rnnt SYS: greedy and beam-4 search of each set with the transducer exp/SYS/final
decode_rnnt() {
  local exp=exp/$1 set
  for set in $test_sets; do
    pykaldi2 decode-transducer $exp/final data/${set}_fbank $exp/decode_${set}_greedy
    pykaldi2 decode-transducer --beam 4 $exp/final data/${set}_fbank $exp/decode_${set}_beam4
  done
}

# wer_table SYS[:SUFFIX]...: one row per decoded system, one %WER column per test set
wer_table() {
  local entry sys suffix set f wer row found
  printf '%-26s' system
  for set in $test_sets; do printf ' %11s' "$set"; done
  echo
  for entry in "$@"; do
    sys=${entry%%:*}; suffix=${entry#"$sys"}; suffix=${suffix#:}
    row=$(printf '%-26s' "$sys${suffix:+ ($suffix)}"); found=false
    for set in $test_sets; do
      f=exp/$sys/decode_$set${suffix:+_$suffix}
      if [ -f "$f/best_wer" ]; then f=$f/best_wer; else f=$f/wer; fi
      wer=-
      if [ -f "$f" ]; then wer=$(grep -o -m1 '%WER [0-9.]*' "$f" | cut -d' ' -f2); found=true; fi
      row+=$(printf ' %11s' "$wer")
    done
    if [ "$found" = true ]; then echo "$row"; fi
  done
}
