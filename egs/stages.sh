# Sourced by egs/*/run.sh after setting the defaults stage, stop_stage, corpus_dir, nj, force:
# parses the shared options and defines log() and run_stage (icefall-style .done markers).
#   --stage N  --stop-stage M  --corpus-dir DIR  --nj N  --force  -h|--help
# A recipe with options of its own lists their variable names in recipe_opts before sourcing
# (recipe_opts="subset parts" accepts --subset V and --parts V, setting $subset and $parts).
# --force ignores the .done markers; a training stage still resumes from exp/SYS/checkpoints
# (and refuses a checkpoint of another model size): remove exp/SYS to train it anew.
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage=$2; shift 2 ;;
    --corpus-dir|--corpus_dir) corpus_dir=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    --force) force=true; shift ;;
    -h|--help) sed -n '2,/^set /p' "$(basename "$0")" | sed '$d'; exit 0 ;;
    --*)
      opt=${1#--}; opt=${opt//-/_}
      if [ $# -lt 2 ] || [[ " ${recipe_opts:-} " != *" $opt "* ]]; then
        echo "$0: unknown option $1" >&2; exit 2
      fi
      printf -v "$opt" '%s' "$2"; shift 2 ;;
    *) echo "$0: unknown option $1" >&2; exit 2 ;;
  esac
done

log() { echo "$(date '+%F %T') (run.sh:${BASH_LINENO[0]}) $*" >&2; }
mkdir -p exp
# run_stage N NAME CMD...: runs CMD when N is in [stage, stop_stage] and exp/.NAME.done is absent
# (or --force); then touches exp/.NAME.done.
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
