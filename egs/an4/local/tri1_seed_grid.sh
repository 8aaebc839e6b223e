#!/usr/bin/env bash
# tri1's spread over training draws (RESULTS.md, "#15, how far apart are single runs"):
#   bash local/tri1_seed_grid.sh DIR [MONO_SEEDS] [TRI1_SEEDS]
# DIR holds data/train, data/test, data/lang, data/lang_test (e.g. this recipe after
# --stop-stage 2, or Kaldi's data and lang). For each mono seed (default "1 2 3": the `seed`
# of conf/mono.yaml, which starts the mixing-up perturbations) train-mono + align-si, then for
# each tri1 seed (default 1-6) train-deltas, mkgraph, decode, score: DIR/exp/tri1_mM_tT/
# decode_test/best_wer. Finished runs are skipped. Options as conf/mono.yaml / conf/tri1.yaml.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/path.sh"
dir=$1 mono_seeds=${2:-1 2 3} tri1_seeds=${3:-1 2 3 4 5 6} nj=${nj:-2}
cd "$dir"
mkdir -p exp/seed_grid_conf
for m in $mono_seeds; do
  conf=exp/seed_grid_conf/mono_s$m.yaml
  { grep -v '^seed:' "$here/conf/mono.yaml"; echo "seed: $m"; } > $conf
  [ -f exp/mono_s$m/final.mdl ] ||
    pykaldi2 train-mono --nj $nj --config $conf data/train data/lang exp/mono_s$m
  [ -f exp/mono_s${m}_ali/final.mdl ] ||
    pykaldi2 align-si --nj $nj data/train data/lang exp/mono_s$m exp/mono_s${m}_ali
  for t in $tri1_seeds; do
    e=exp/tri1_m${m}_t$t
    [ -f $e/decode_test/best_wer ] && continue
    conf=exp/seed_grid_conf/tri1_s$t.yaml
    { grep -v '^seed:' "$here/conf/tri1.yaml"; echo "seed: $t"; } > $conf
    pykaldi2 train-deltas --config $conf data/train data/lang exp/mono_s${m}_ali $e
    pykaldi2 mkgraph data/lang_test $e/final.mdl $e/graph
    pykaldi2 decode --data data/test --nj $nj $e/graph $e/final.mdl $e/decode_test
    pykaldi2 score --ref data/test/text --min-lmwt 5 --max-lmwt 20 $e/decode_test
  done
done
for f in exp/tri1_m*_t*/decode_test/best_wer; do echo "$f $(cat $f)"; done
