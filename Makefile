# The commands the README gives. Every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_PORT ?= 9092
REDIS_PORT ?= 6379
export SD_KAFKA__BOOTSTRAP_SERVERS ?= 127.0.0.1:$(KAFKA_PORT)
export SD_REDIS__URL ?= redis://127.0.0.1:$(REDIS_PORT)/0
export SD_DATA__ROOT ?= $(abspath ../shared/datasets/smap_msl)

.PHONY: help install system-deps services-up services-down test test-fast lint demo bench evaluate clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed system-deps ## create .venv, install the package, Redis and the Kafka jars

system-deps:
	deploy/redis/redis.sh install
	deploy/kafka/kafka.sh fetch

services-up: install ## start Kafka and Redis on loopback (KAFKA_PORT, REDIS_PORT)
	REDIS_PORT=$(REDIS_PORT) deploy/redis/redis.sh start
	KAFKA_PORT=$(KAFKA_PORT) deploy/kafka/kafka.sh start

services-down: ## stop them
	-KAFKA_PORT=$(KAFKA_PORT) deploy/kafka/kafka.sh stop
	-REDIS_PORT=$(REDIS_PORT) deploy/redis/redis.sh stop

test: install ## lint, then every test (the fixtures start their own Kafka and Redis)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: install ## unit tests only
	$(BIN)/pytest -q tests/unit

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy stream_detector producers

demo: services-up ## train on a SMAP channel, replay it through Kafka, print the alerts beside the labels
	$(BIN)/stream-detector demo

bench: services-up ## throughput and latency of the daemon against a bare consumer
	$(BIN)/python -m stream_detector.bench

EVAL_MODELS ?= lstm_ae lstm_ae_small dense_ae vae lstm_ae_chapter lstm_dt beatgan tadgan anogan madgan reggan latent_search_gan
EVAL_FLAGS ?= --window 50 --epochs 10 --patience 3 --batch-size 32 --train-stride 2 --scaling standard --no-plots
evaluate: install ## every model in EVAL_MODELS on all SMAP and MSL channels → docs/results.md (hours on a CPU)
	for m in $(EVAL_MODELS); do \
	  case $$m in \
	    lstm_ae) extra="--epochs 15 --patience 4 --hp hidden1=32 --hp hidden2=16 --hp latent=8";; \
	    latent_search_gan) extra="--hp weight_lr=0";; \
	    reggan) extra="--score-features all";; \
	    *) extra="";; \
	  esac; \
	  $(BIN)/stream-detector evaluate --model $$m --dataset both $(EVAL_FLAGS) $$extra --out artifacts/eval/$$m-both || exit 1; \
	done
	$(BIN)/python -m stream_detector.evaluation.collect --update docs/results.md $(addprefix artifacts/eval/,$(addsuffix -both,$(EVAL_MODELS)))

clean: services-down ## remove caches and run state (keeps .venv)
	rm -rf .run artifacts .pytest_cache .ruff_cache .mypy_cache
