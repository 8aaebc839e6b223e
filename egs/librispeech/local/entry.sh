# Sourced (POSIX sh) by run_ce.sh, run_se.sh and run_chain.sh from egs/librispeech: ../entry.sh
# (PATH, need), an optional leading `--subset 100|460|960` (default 960, as run.sh) taken off the
# arguments, and local/train_nnet.sh (the stage's training command).
. ../entry.sh
subset=960
if [ "${1:-}" = --subset ]; then
  subset=$2
  shift 2
fi
. local/train_nnet.sh
