# Sourced by egs/*/run_ce.sh, run_se.sh and run_chain.sh (POSIX sh, from the recipe dir):
# the project's venv first on PATH, and need(), which stops a training entry point whose
# inputs are missing with the run.sh command that makes them.
_root=$(cd ../.. && pwd)
PATH="$_root/.venv/bin:$PATH"
PYTHONUNBUFFERED=1
export PATH PYTHONUNBUFFERED

# need FILE RUN_ARGS: exit 1 with "run `bash run.sh RUN_ARGS` first" unless FILE exists
need() {
  if [ ! -e "$1" ]; then
    echo "$0: $1 not found: run \`bash run.sh $2\` first" >&2
    exit 1
  fi
}
