# pykaldi2 — `make install | test | demo | bench`
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# pytest workers: CI has 2 cores.
JOBS   ?= 2

.PHONY: install deps demo-deps test lint demo demo-an4 bench horovod clean-venv

install: $(STAMP)

# Debian packages used by audio tooling (flac/sox for wav.scp pipes). Best effort: skipped
# where apt-get is missing or we are not root; the Python side needs none of them.
deps:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in flac sox; do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "warning: could not install$$missing (only needed for wav.scp pipes)"; fi; \
	fi

# setup.py and the C++ sources: `pip install -e .` rebuilds the extensions (pykaldi2/hmm/csrc, the
# decoder; pykaldi2/losses/csrc, the LF-MMI denominator kernel).
$(STAMP): pyproject.toml setup.py $(wildcard pykaldi2/hmm/csrc/*.cc pykaldi2/hmm/csrc/*.h pykaldi2/losses/csrc/*.cc)
	@$(MAKE) --no-print-directory deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: on a CPU machine pip takes the local CPU wheel, never a CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	$(PY) -c "import pykaldi2, pykaldi2.kaldi as k; k.check_versions()"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -n $(JOBS) --durations=15 tests

lint: install
	$(PY) -m ruff check pykaldi2 tests bench bin

# The demo corpus: Asterisk's English prompts (wav) and their transcripts, from Debian.
demo-deps:
	@if dpkg -s asterisk-core-sounds-en-wav asterisk-core-sounds-en >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    asterisk-core-sounds-en-wav asterisk-core-sounds-en >/dev/null; \
	else echo "make demo needs: apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en (as root)"; exit 1; fi

# The main job, on a fresh machine with no corpus download: the Asterisk recipe (egs/asterisk:
# Debian's English prompts, 8 kHz, about 25 minutes) -- grapheme lexicon, mono -> tri1 -> tri2,
# CE BLSTM, RNN-T and LF-MMI TDNN-F, each decoded -- then its WER table (egs/asterisk/RESULTS.md).
# A rerun skips finished stages (exp/.*.done); `bash egs/asterisk/run.sh --help` for options.
demo: install demo-deps
	bash egs/asterisk/run.sh

# The AN4 recipe's GMM part (prepare -> features -> lang/LM -> mono -> tri1 -> tri2, each
# decoded), then its WER table. AN4 is read from ../shared/data/an4 (CORPUS_DIR= for another copy).
CORPUS_DIR ?= ../../../shared/data/an4
demo-an4: install
	bash egs/an4/run.sh --stop-stage 5 --corpus-dir $(CORPUS_DIR)
	bash egs/an4/run.sh --stage 99 --corpus-dir $(CORPUS_DIR)

bench: install
	@for b in bench/*.py; do [ "$$b" = bench/common.py ] && continue; \
	  args=; [ "$$b" = bench/scale.py ] && args=--quick; \
	  echo "== $$b $$args"; $(PY) $$b $$args || exit 1; done

# Horovod 0.28.1 patched for C++17 and built against the venv's torch (about 5 min on 2 cores);
# the wheel is cached in ~/.cache/pykaldi2/wheels.
horovod: install
	PY=$(PY) bash scripts/build_horovod.sh

clean-venv:
	rm -rf $(VENV)
