# Sourced by run.sh: puts the project's venv first on PATH.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$_root/.venv/bin:$PATH"
export PYTHONUNBUFFERED=1
