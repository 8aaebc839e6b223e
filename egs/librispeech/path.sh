# Sourced by run.sh from egs/librispeech: puts the project's venv first on PATH.
_root=$(cd ../.. && pwd)
PATH="$_root/.venv/bin:$PATH"
PYTHONUNBUFFERED=1
export PATH PYTHONUNBUFFERED
