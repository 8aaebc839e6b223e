#!/usr/bin/env bash
# AN4 recipe: from the raw corpus to a WER table.
#   bash run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--nj N]
# Each stage leaves a .done marker in exp/ (rerun skips finished stages; --force redoes them).
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
corpus_dir=../../../shared/data/an4   # an AN4 already on disk; empty => download
nj=2
force=false

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage=$2; shift 2 ;;
    --corpus-dir|--corpus_dir) corpus_dir=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    --force) force=true; shift ;;
    -h|--help) sed -n 2,5p "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

log() { echo "$(date '+%F %T') (run.sh:${BASH_LINENO[0]}) $*" >&2; }
mkdir -p exp
# run_stage N NAME CMD...: runs CMD when N is in range and NAME is not done yet.
run_stage() {
  local n=$1 name=$2; shift 2
  if [ "$n" -lt "$stage" ] || [ "$n" -gt "$stop_stage" ]; then return 0; fi
  if [ -f "exp/.$name.done" ] && [ "$force" = false ]; then log "stage $n ($name): done already"; return 0; fi
  log "stage $n ($name)"
  local t0=$SECONDS
  "$@"
  touch "exp/.$name.done"
  log "stage $n ($name) finished in $((SECONDS - t0)) s"
}

prepare() {
  if [ -n "$corpus_dir" ]; then
    pykaldi2 prepare an4 --corpus-dir "$corpus_dir" data
  else
    pykaldi2 prepare an4 --download --corpus-dir downloads data
  fi
}
run_stage 0 prepare prepare
