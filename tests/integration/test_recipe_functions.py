"""egs/functions.sh's shell functions with a stand-in for the pykaldi2 command: rnnt_lm_fusion's
dev grid runs $nj decodes at a time, picks the best on dev, decodes the other sets at it, and
fails when any decode of the grid fails (wait_all)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

EGS = Path(__file__).resolve().parents[2] / "egs"

# a pykaldi2 stand-in: train-lm touches its output; decode-transducer logs its start and end
# times and writes a wer file whose %WER is |weight - 0.3| + |bonus - 1| (best: 0.3, 1.0)
STUB = r"""
set -euo pipefail
log() { echo "LOG $*"; }
. "$EGS/functions.sh"
pykaldi2() {
  local out="${@: -1}"
  if [ "$1" = train-lm ]; then mkdir -p "$(dirname "$out")"; : > "$out"; return; fi
  mkdir -p "$out"
  local w=1 b=0 a
  local args=("$@")
  for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in --lm-weight) w=${args[i+1]} ;; --symbol-bonus) b=${args[i+1]} ;; esac
  done
  echo "start $out $(date +%s.%N)" >> calls
  sleep 0.3
  echo "end $out $(date +%s.%N)" >> calls
  [ "${FAIL:-}" = "$out" ] && return 3
  a=$(awk -v w="$w" -v b="$b" 'function abs(x) { return x < 0 ? -x : x }
    BEGIN { printf "%.2f", abs(w - 0.3) + abs(b - 1.0) }')
  printf '%%WER %s [ 1 / 10, 0 ins, 0 del, 1 sub ]\n' "$a" > "$out/wer"
}
mkdir -p exp/final
echo "train_data: [data/train]" > exp/config.yaml
nj=$NJ
rnnt_lm_weights="0.5 0.3 0.2" rnnt_symbol_bonuses="0.5 1.0" rnnt_lm_fusion exp dev test
cat exp/lm/best
"""


def _run(tmp_path: Path, nj: int, fail: str = "") -> subprocess.CompletedProcess:
    env = {"EGS": str(EGS), "NJ": str(nj), "FAIL": fail, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        ["bash", "-c", STUB], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def _calls(tmp_path: Path) -> list[tuple[str, str, float]]:
    rows = [line.split() for line in (tmp_path / "calls").read_text().splitlines()]
    return [(kind, out, float(t)) for kind, out, t in rows]


@pytest.mark.parametrize("nj", [1, 2])
def test_rnnt_lm_fusion_grid_in_groups_of_nj(tmp_path, nj):
    r = _run(tmp_path, nj)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0.3 1.0"
    calls = _calls(tmp_path)
    dev = [o for k, o, _ in calls if k == "start" and "decode_dev_" in o]
    assert len(dev) == 6  # 3 weights x 2 bonuses, each once
    assert [o for k, o, _ in calls if k == "start"][-1] == "exp/decode_test_lm"  # after the grid
    assert (tmp_path / "exp/decode_test_lm/wer").is_file()
    # at most nj decodes at a time, and with nj=2 two of them do overlap
    events = sorted((t, 1 if k == "start" else -1) for k, _, t in calls)
    running = peak = 0
    for _, d in events:
        running += d
        peak = max(peak, running)
    assert peak == nj


def test_rnnt_lm_fusion_fails_when_a_grid_decode_fails(tmp_path):
    r = _run(tmp_path, 2, fail="exp/decode_dev_lm0.3_b0.5")
    assert r.returncode != 0
    assert not (tmp_path / "exp/lm/best").exists()  # nothing chosen from an incomplete grid
