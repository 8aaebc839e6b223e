# Sourced by egs/*/run.sh after stages.sh: the decode steps the recipes share. Each function
# reads data/lang_test and data/test (GMMs) or data/test_fbank (nnets) of the recipe's cwd and
# uses $nj decoding processes.
# A recipe with a dev set sets dev_set (e.g. dev_set=dev): score_decode then picks LMWT/WIP on
# decode_$dev_set and scores every other set at that setting (Kaldi's score.sh picks on the
# set it scores; without dev_set, so do we).

# score_decode EXP SET MIN MAX: score EXP/decode_SET against data/SET/text over LMWT MIN..MAX x
# WIP 0, 0.5, 1 -- or, for a set other than $dev_set, at the setting chosen on EXP/decode_$dev_set
score_decode() {
  local exp=$1 set=$2
  if [ -n "${dev_set:-}" ] && [ "$set" != "$dev_set" ]; then
    pykaldi2 score --ref data/$set/text --tuned-on $exp/decode_$dev_set $exp/decode_$set
  else
    pykaldi2 score --ref data/$set/text --min-lmwt $3 --max-lmwt $4 $exp/decode_$set
  fi
}

# decode_gmm SYS [SET ...]: HCLG for exp/SYS/final.mdl, decode each data/SET (default: test;
# $dev_set first when given), score over LMWT 5..20 x WIP -> exp/SYS/decode_SET/{hyp.txt,
# wer_*, best_wer}
decode_gmm() {
  local sys=$1 set
  shift
  pykaldi2 mkgraph data/lang_test exp/$sys/final.mdl exp/$sys/graph
  for set in ${@:-test}; do
    pykaldi2 decode --data data/$set --nj "$nj" exp/$sys/graph exp/$sys/final.mdl \
      exp/$sys/decode_$set
    score_decode exp/$sys $set 5 20
  done
}

# decode_sat SYS [SET ...]: HCLG for the SAT system exp/SYS, two-pass decode-fmllr of each
# data/SET (SI pass with final.alimdl, fMLLR per speaker, adapted passes; $dev_set first when
# given), scored as decode_gmm's
decode_sat() {
  local sys=$1 set
  shift
  pykaldi2 mkgraph data/lang_test exp/$sys/final.mdl exp/$sys/graph
  for set in ${@:-test}; do
    pykaldi2 decode-fmllr --nj "$nj" exp/$sys/graph data/$set exp/$sys exp/$sys/decode_$set
    score_decode exp/$sys $set 5 20
  done
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

# decode_chain_dev SYS: decode_chain, then the LM weight chosen on a dev set carved from train:
# the utterances train-chain held out (EXP/egs/valid_uttlist at speed 1.0, without the sp
# copies -> data/dev_SYS), decoded to EXP/decode_dev; EXP/decode_test/best_wer becomes the test
# WER at the dev setting (best_wer_on_test: the best on test itself, for reference)
decode_chain_dev() {
  local exp=exp/$1
  grep -v '^sp[0-9.]*-' $exp/egs/valid_uttlist > $exp/dev_uttlist
  pykaldi2 subset-data-dir --utt-list $exp/dev_uttlist data/train_fbank data/dev_$1
  decode_chain "$1"
  pykaldi2 decode-chain --nj "$nj" $exp/final $exp/graph data/dev_$1 $exp/decode_dev
  cp $exp/decode_test/best_wer $exp/decode_test/best_wer_on_test
  pykaldi2 score --ref data/test_fbank/text --tuned-on $exp/decode_dev $exp/decode_test
}

# chain_data GMM LEAVES: what Kaldi's chain recipes train on (run_ivector_common.sh +
# build_tree.sh): data/train_sp (speed 0.9/1.0/1.1) with MFCC (for exp/GMM) and fbank
# (data/train_sp_fbank, the nnet's) features, its alignments exp/GMM_ali_sp (align-fmllr for a
# SAT system, which has final.alimdl, as Kaldi's chain recipes align with tri3b; else align-si),
# and the chain tree exp/chain/tree_sp at 1/3 frame rate (left biphone, LEAVES leaves; on the
# fMLLR-adapted features for SAT)
chain_data() {
  local gmm=$1 leaves=$2
  pykaldi2 perturb-data-dir-speed data/train data/train_sp
  pykaldi2 combine-data data/train_sp_fbank data/train_sp   # a copy with its own feats.scp
  pykaldi2 compute-feats --config conf/fbank.yaml --nj "$nj" data/train_sp_fbank fbank
  pykaldi2 compute-cmvn data/train_sp_fbank fbank
  pykaldi2 compute-feats --config conf/mfcc.yaml --nj "$nj" data/train_sp mfcc
  pykaldi2 compute-cmvn data/train_sp mfcc
  if [ -f exp/$gmm/final.alimdl ]; then
    pykaldi2 align-fmllr --nj "$nj" data/train_sp data/lang exp/$gmm exp/${gmm}_ali_sp
  else
    pykaldi2 align-si --nj "$nj" data/train_sp data/lang exp/$gmm exp/${gmm}_ali_sp
  fi
  pykaldi2 build-tree-chain --num-leaves "$leaves" data/train_sp data/lang exp/${gmm}_ali_sp \
    exp/chain/tree_sp
}

# wait_all PID...: wait for every background job; fails (set -e) if any of them failed
wait_all() {
  local p rc=0
  for p in "$@"; do wait "$p" || rc=$?; done
  return $rc
}

# rnnt_lm_fusion EXP DEV SETS...: shallow fusion for the RNN-T of EXP (EXP/final): an n-gram on
# the training transcripts (EXP/config.yaml's train_data, else $rnnt_lm_text), beam-4 decodes of
# data/DEV over LM weights x symbol bonuses, the best on DEV, then each data/SET decoded at it.
# rnnt_lm_unit=pieces (the default): a 4-gram over the tokenizer's pieces (EXP/lm/tokens4.arpa;
# EXP/decode_DEV_lmW_bB, EXP/decode_SET_lm, EXP/lm/best); rnnt_lm_unit=words: a word
# ${rnnt_lm_order:-3}-gram whose words are the only ones hypotheses may spell (decode-transducer
# --lm-unit words; EXP/lm/wordsN.arpa, EXP/decode_DEV_wlmW_bB, EXP/decode_SET_wlm,
# EXP/lm/best_words). The best files hold the chosen "weight bonus". The grid's decodes (one
# process each, one thread under OMP_NUM_THREADS=1) run $nj at a time, like Kaldi's recipes
# decoding sets side by side. Beam search emits up to ${rnnt_max_sym:-1} symbols per encoder
# frame (--max-sym-per-frame).
rnnt_lm_fusion() {
  local exp=$1 dev=$2 w b best f text lm tag bestf unit=${rnnt_lm_unit:-pieces} pids=""
  shift 2
  text=${rnnt_lm_text:-$(python3 -c "import yaml,sys; c=yaml.safe_load(open(sys.argv[1])); c=c.get('config', c); print(c['train_data'][0] + '/text')" "$exp/config.yaml")}
  if [ "$unit" = words ]; then
    lm=$exp/lm/words${rnnt_lm_order:-3}.arpa tag=wlm bestf=$exp/lm/best_words
    pykaldi2 train-lm --order "${rnnt_lm_order:-3}" --skip-first-field "$text" "$lm"
  else
    lm=$exp/lm/tokens4.arpa tag=lm bestf=$exp/lm/best
    pykaldi2 train-lm --order 4 --skip-first-field --tokenizer "$exp/final/tokenizer.model" \
      "$text" "$lm"
  fi
  for w in ${rnnt_lm_weights:-0.1 0.2 0.3 0.5}; do
    for b in ${rnnt_symbol_bonuses:-0.0 0.5 1.0}; do
      pykaldi2 decode-transducer --beam 4 --max-sym-per-frame "${rnnt_max_sym:-1}" \
        --lm-unit "$unit" --lm "$lm" --lm-weight "$w" --symbol-bonus "$b" \
        "$exp/final" "data/$dev" "$exp/decode_${dev}_${tag}${w}_b$b" \
        >/dev/null 2>"$exp/lm/decode_${dev}_${tag}${w}_b$b.log" &
      pids="$pids $!"
      if [ "$(wc -w <<< "$pids")" -ge "${nj:-1}" ]; then wait_all $pids; pids=""; fi
    done
  done
  wait_all $pids
  best=$(for f in "$exp"/decode_"${dev}"_"${tag}"[0-9]*_b*/wer; do
      printf '%s %s\n' "$(awk '/%WER/ {print $2; exit}' "$f")" "$f"
    done | sort -n | head -n 1 | sed -E "s|.*_${tag}([0-9.]+)_b([0-9.]+)/wer\$|\\1 \\2|")
  echo "$best" > "$bestf"
  log "$exp: $unit LM weight and symbol bonus chosen on $dev: $best"
  read -r w b <<< "$best"
  for f in "$@"; do
    pykaldi2 decode-transducer --beam 4 --max-sym-per-frame "${rnnt_max_sym:-1}" \
      --lm-unit "$unit" --lm "$lm" --lm-weight "$w" --symbol-bonus "$b" \
      "$exp/final" "data/$f" "$exp/decode_${f}_${tag}"
  done
}
