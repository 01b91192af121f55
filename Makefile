# Everything runs from .venv; its bin/ goes first on PATH because
# `mlflow run --env-manager local` runs the entry point with the first `python` found.
VENV     := .venv
PY       := $(CURDIR)/$(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export TF_CPP_MIN_LOG_LEVEL ?= 2
# The shared MNIST beside the project, when it is there; otherwise Keras downloads it.
ifneq ($(wildcard ../shared/data/mnist.npz),)
export MNIST_PATH ?= $(abspath ../shared/data/mnist.npz)
endif

MLFLOW_RUN := $(PY) -m mlflow run . --env-manager local --experiment-name digits
QUICK_EPOCHS ?= 2

.PHONY: setup test lint format train quick-train evaluate eval-wild promote leaderboard models-serve serve stack ui bench \
  clean help test-fast attack

# nginx is the service's front (docs/front.md): a system package, installed where we can.
setup: $(VENV)/.installed
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; \
	  else echo "make setup: nginx is missing and installing it needs root and apt-get:" \
	    "install it (sudo apt-get install nginx), or serve with FRONT=none (docs/front.md)" >&2; fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The fast tier on two workers, then the slow tier alone (its tests time servers and
# trainings); each prints its 30 slowest tests. schemathesis's pytest plugin is only for
# the slow tier (importing it costs every fast-tier process about a second).
FAST_TIER := -m "not integration" -n 2 -p no:schemathesis
test: setup lint  ## every test, with those that train by `mlflow run` and start servers (about 20 min)
	$(PY) -m pytest $(FAST_TIER) --durations=30
	$(PY) -m pytest -m integration --durations=30

test-fast: setup  ## unit and in-process tests on a tiny model built by the tests (under a minute)
	$(PY) -m pytest $(FAST_TIER)

lint: setup  ## ruff, then mypy on the packages ([tool.mypy] in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

train: setup  ## full training of the default family; ARGS="-P family=pca_svm -P limit=10000"
	$(MLFLOW_RUN) -e train $(TRAIN_ARGS) $(ARGS)

# An epochs in ARGS wins over QUICK_EPOCHS (mlflow run refuses a parameter given twice).
quick-train: setup  ## a 2-epoch run (QUICK_EPOCHS=n); more parameters in ARGS="-P …"
	$(MLFLOW_RUN) -e train $(if $(findstring epochs=,$(ARGS)),,-P epochs=$(QUICK_EPOCHS)) $(ARGS)

evaluate: setup  ## the Production model (any family) on MNIST test and the real-world variants
	$(MLFLOW_RUN) -e evaluate

WILD_LIMIT ?= 2000
# SPLIT=validation scores the validation digits training holds out (choose recipes there).
eval-wild: setup  ## naive resize vs this pipeline on "real world" variants of MNIST test digits
	$(MLFLOW_RUN) -e evaluate -P wild_limit=$(WILD_LIMIT) $(if $(SPLIT),-P split=$(SPLIT)) \
	  $(if $(MODEL_URI),-P model_uri=$(MODEL_URI))

# PROMOTE_COMMAND lets a refused promotion name the command to type to override it.
promote: setup  ## gated; VERSION=n picks one (default the latest); FORCE=true skips the gate
	PROMOTE_COMMAND="make promote$(if $(VERSION), VERSION=$(VERSION))" \
	  $(MLFLOW_RUN) -e promote $(if $(VERSION),-P version=$(VERSION)) \
	  $(if $(FORCE),-P force=$(FORCE)) $(ARGS)

leaderboard: setup  ## every registered version on the same images: accuracy, latency, size
	$(MLFLOW_RUN) -e leaderboard $(ARGS)

MODELS_SERVE_PORT ?= 5001
models-serve: setup  ## `mlflow models serve` of MODEL_URI (default Production) on :5001
	$(VENV)/bin/mlflow models serve -m $(or $(MODEL_URI),models:/digits/Production) \
	  --env-manager local -p $(MODELS_SERVE_PORT)

stack: setup  ## tracking server on PostgreSQL + proxied artifacts, two replicas behind nginx on :8000
	MLFLOW_TRACKING_URI= bash deploy/stack.sh

# On an empty registry: says what it does (training.registry_status), trains a quick model
# (which times itself: training.progress), promotes it, then serves.
SERVE_URL = $$($(PY) -c 'from serving.config import Settings; s = Settings(); print(f"http://{s.host}:{s.port}")')
serve: setup  ## serve the Production model on :8000; on an empty registry, train a quick one first
	@$(PY) -m training.registry_status --first-start $(QUICK_EPOCHS) --url "$(SERVE_URL)" || { \
	  $(MLFLOW_RUN) -e train -P epochs=$(QUICK_EPOCHS) && \
	  echo "make serve: the quick model is registered; next the promotion gate scores it" && \
	  $(MLFLOW_RUN) -e promote && \
	  echo "make serve: promoted; starting the service on $(SERVE_URL)"; }
	$(PY) -m serving

# this service vs `mlflow models serve`, naive Flask + Keras, MLServer, BentoML (venvs in
# bench/.venvs) and the ceiling (the stack answering a constant) under wrk; writes bench/results/
# with the performance targets judged (docs/performance.md). service-1w (1 worker) and service-nostore (STORE_IMAGES=false)
# are this service's other rows. BENCH_ARGS="--smoke" (quick check) or "--servers service
# --concurrency 1,32";
# BENCH_SERVICE_ENV="WORKERS=2 THREADS=16 BATCHING=true" configures this service.
bench: setup
	@command -v wrk >/dev/null && command -v hey >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk hey)
	$(PY) -m bench.run $(BENCH_ARGS)

# hostile clients against a live `python -m serving` while a normal client asks (bench/attack.py);
# ATTACK_ARGS="--scenarios slow-heads,slow-bodies", "--service-env FRONT=none", "--list".
attack: setup  ## slow clients, bombs, malformed bodies … against a live server: held or not
	$(PY) -m bench.attack $(ATTACK_ARGS)

ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

help:  ## every target, with its note where it has one
	@grep -E '^[a-z][a-z-]*:([^=]|$$)' $(MAKEFILE_LIST) | sed -E 's/:[^#]*(## )?/\t/' | expand -t 16
