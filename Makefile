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

.PHONY: help install system-deps services-up services-down test test-fast lint demo bench evaluate race race-cache race-ensemble-cache race-diagnostics race-crossfit race-late-key race-warm-test device-kit clean

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

# The threshold race (docs/threshold-race.md): RACE_MODEL trained per channel by JOBS processes
# sharing one score cache, then every variant of RACE_GRID judged on the cached scores.
# RACE_MODEL empty (the default) is the default detector, `lstm_dt` with n_predictions 10,
# whose cache is artifacts/cache/lstm_dt_np10. RACE_FLAGS changes the recipe (it needs its
# own RACE_CACHE), e.g. telemanom's full training on a GPU machine:
# RACE_FLAGS="--epochs 35 --patience 10 --train-stride 1".
# Cost on a CPU (measured 2026-12-02 with JOBS=2, one thread per process, each shard judging
# the grid as it goes): MSL's 27 channels took 12 minutes with the default detector and 30 with
# telemanom's full budget (RACE_FLAGS above). An earlier, slower machine took 61 minutes for
# MSL and ~2.5 hours for SMAP with the default detector.
RACE_MODEL ?=
RACE_GRID ?= docs/threshold-race-lstm-dt.json
# Names the race's output folders (artifacts/eval/race-RACE_NAME): set it when RACE_FLAGS make
# another recipe of the same model, so that its report does not overwrite the default's.
RACE_NAME ?= $(or $(RACE_MODEL),default)
RACE_CACHE ?= artifacts/cache/$(or $(RACE_MODEL),lstm_dt_np10)
RACE_FLAGS ?=
JOBS ?= 2
race-cache: install ## the race's training only: RACE_MODEL per channel by JOBS processes into RACE_CACHE
	mkdir -p artifacts/eval
	pids=(); for i in $$(seq 0 $$(($(JOBS) - 1))); do \
	  SD_MODEL__TORCH_THREADS=1 $(BIN)/stream-detector evaluate $(if $(RACE_MODEL),--model $(RACE_MODEL)) --dataset both $(RACE_FLAGS) \
	    --thresholds $(RACE_GRID) --score-cache $(RACE_CACHE) --shard $$i/$(JOBS) \
	    --out artifacts/eval/race-$(RACE_NAME)-shard-$$i > artifacts/eval/race-$(RACE_NAME)-shard-$$i.log 2>&1 & pids+=($$!); \
	done; status=0; for p in "$${pids[@]}"; do wait $$p || status=1; done; \
	if [ $$status -ne 0 ]; then tail -n 20 artifacts/eval/race-$(RACE_NAME)-shard-*.log; exit 1; fi

# Each shard judges its own channels as it goes; grid-report merges the shards' results into
# the report one process over all channels would write (and its written rule's verdict).
race: race-cache ## the threshold race: race-cache, then every variant of RACE_GRID → artifacts/eval/race-RACE_MODEL (race-default without one)
	$(BIN)/stream-detector grid-report $(foreach i,$(shell seq 0 $$(($(JOBS) - 1))),artifacts/eval/race-$(RACE_NAME)-shard-$(i)) \
	  --thresholds $(RACE_GRID) --model $(or $(RACE_MODEL),lstm_dt) --out artifacts/eval/race-$(RACE_NAME)

# The diagnostics on a race cache, after `make race`: telemanom's 2018 batch processing of its
# errors (and the same without hindsight, one batch late), the default threshold's rules
# undone one at a time, and each grid variant over the whole train split
# (docs/threshold-race.md, thirteenth, fourteenth and thirty-second looks). Minutes, not hours.
race-diagnostics: install ## telemanom_batch, streamed_ablation and train_replay on RACE_CACHE → artifacts/eval/diagnostics-RACE_NAME
	mkdir -p artifacts/eval/diagnostics-$(RACE_NAME)
	$(BIN)/python -m stream_detector.evaluation.telemanom_batch --cache $(RACE_CACHE) --causal \
	  > artifacts/eval/diagnostics-$(RACE_NAME)/telemanom-batch.md
	$(BIN)/python -m stream_detector.evaluation.streamed_ablation --cache $(RACE_CACHE) \
	  > artifacts/eval/diagnostics-$(RACE_NAME)/streamed-ablation.md
	$(BIN)/python -m stream_detector.evaluation.train_replay --cache $(RACE_CACHE) \
	  --thresholds $(RACE_GRID) > artifacts/eval/diagnostics-$(RACE_NAME)/train-replay.md
	cat artifacts/eval/diagnostics-$(RACE_NAME)/*.md

# The sixteenth look's long clean stream (docs/threshold-race.md): each channel's train split in two
# halves, RACE_CACHE's recipe trained on each half by JOBS processes (two fold models per
# channel: the default detector's 144 took 41 minutes of two processes here, about 29 s each on
# one torch thread; the thirty-eighth look), then every RACE_GRID variant replayed over
# the other halves, ranked against the test false episodes of `make race`'s report.
# FOLD_EPOCHS=N caps the fold models at N epochs (the seventeenth look's cheaper stream; its
# fold models are kept apart, in RACE_CACHE/crossfit-epochsN).
FOLD_EPOCHS ?=
CROSSFIT_FLAGS = --cache $(RACE_CACHE) --thresholds $(RACE_GRID) $(if $(FOLD_EPOCHS),--fold-epochs $(FOLD_EPOCHS))
CROSSFIT_NAME = crossfit$(if $(FOLD_EPOCHS),-epochs$(FOLD_EPOCHS))
race-crossfit: install ## after `make race`: RACE_GRID over the cross-fitted train split of RACE_CACHE → artifacts/eval/diagnostics-RACE_NAME/crossfit-replay.md
	mkdir -p artifacts/eval/diagnostics-$(RACE_NAME)
	pids=(); for i in $$(seq 0 $$(($(JOBS) - 1))); do \
	  SD_MODEL__TORCH_THREADS=1 $(BIN)/python -m stream_detector.evaluation.crossfit_replay $(CROSSFIT_FLAGS) \
	    --shard $$i/$(JOBS) > artifacts/eval/diagnostics-$(RACE_NAME)/$(CROSSFIT_NAME)-shard-$$i.log 2>&1 & pids+=($$!); \
	done; status=0; for p in "$${pids[@]}"; do wait $$p || status=1; done; \
	if [ $$status -ne 0 ]; then tail -n 20 artifacts/eval/diagnostics-$(RACE_NAME)/$(CROSSFIT_NAME)-shard-*.log; exit 1; fi
	$(BIN)/python -m stream_detector.evaluation.crossfit_replay $(CROSSFIT_FLAGS) \
	  --against artifacts/eval/race-$(RACE_NAME) --save-counts artifacts/eval/diagnostics-$(RACE_NAME)/$(CROSSFIT_NAME)-counts.json \
	  > artifacts/eval/diagnostics-$(RACE_NAME)/$(CROSSFIT_NAME)-replay.md
	cat artifacts/eval/diagnostics-$(RACE_NAME)/$(CROSSFIT_NAME)-replay.md

# The late key (docs/threshold-race.md, thirty-fourth and thirty-fifth looks): one anomaly
# injected late into each cross-fitted half, eight copies, scored by `make race-crossfit`'s fold
# models (JOBS processes), judged by every RACE_GRID variant after the channel's other half
# (LATE_FLAGS=--warm, the default; empty for the thirty-fourth look's cold key with
# LATE_RULE=v6); then the key's checks and the rule's verdict, its quiet half the counts
# `make race-crossfit` recorded.
LATE_FLAGS ?= --warm
LATE_RULE ?= v7
race-late-key: install ## after `make race-crossfit`: the late key's checks and rule v6 → artifacts/eval/diagnostics-RACE_NAME/late-key.md
	mkdir -p artifacts/eval/diagnostics-$(RACE_NAME)
	pids=(); for i in $$(seq 0 $$(($(JOBS) - 1))); do \
	  SD_MODEL__TORCH_THREADS=1 $(BIN)/python -m stream_detector.evaluation.crossfit_injection run $(LATE_FLAGS) \
	    --cache $(RACE_CACHE) --thresholds $(RACE_GRID) --shard $$i/$(JOBS) \
	    --out artifacts/eval/diagnostics-$(RACE_NAME)/late-key-shard-$$i > artifacts/eval/diagnostics-$(RACE_NAME)/late-key-shard-$$i.log 2>&1 & pids+=($$!); \
	done; status=0; for p in "$${pids[@]}"; do wait $$p || status=1; done; \
	if [ $$status -ne 0 ]; then tail -n 20 artifacts/eval/diagnostics-$(RACE_NAME)/late-key-shard-*.log; exit 1; fi
	$(BIN)/python -m stream_detector.evaluation.crossfit_injection report --rule $(LATE_RULE) \
	  $$(seq -f 'artifacts/eval/diagnostics-$(RACE_NAME)/late-key-shard-%g' 0 $$(($(JOBS) - 1))) \
	  --thresholds $(RACE_GRID) --against artifacts/eval/race-$(RACE_NAME) \
	  --counts artifacts/eval/diagnostics-$(RACE_NAME)/$(CROSSFIT_NAME)-counts.json > artifacts/eval/diagnostics-$(RACE_NAME)/late-key.md
	cat artifacts/eval/diagnostics-$(RACE_NAME)/late-key.md

# The thirty-ninth look: every test split of RACE_CACHE streamed cold, then primed as
# `stream-detector prime` primes the daemon (the threshold state its cross-fitted train leaves,
# scored by `make race-crossfit`'s fold models), both scored against the labels. Minutes.
race-warm-test: install ## after `make race-crossfit`: the test splits cold, primed, and primed at the model's scale → artifacts/eval/diagnostics-RACE_NAME/warm-test/warm-test.md
	SD_MODEL__TORCH_THREADS=1 $(BIN)/python -m stream_detector.evaluation.warm_test --cache $(RACE_CACHE) \
	  --out artifacts/eval/diagnostics-$(RACE_NAME)/warm-test

# The ensemble's members trained one by one (two race caches), then combined without
# retraining: `make race RACE_MODEL=ensemble` after this only scores. (Without this, that
# trains the ensemble per channel, the same models: docs/models.md.)
race-ensemble-cache: install ## the ensemble's race cache from its members' race caches
	$(MAKE) race-cache RACE_MODEL=lstm_dt RACE_CACHE=artifacts/cache/lstm_dt
	$(MAKE) race-cache RACE_MODEL=lstm_dt RACE_CACHE=artifacts/cache/lstm_dt_np10 RACE_FLAGS="--hp n_predictions=10"
	$(BIN)/stream-detector combine artifacts/cache/lstm_dt artifacts/cache/lstm_dt_np10 --out artifacts/cache/ensemble

# The device machine (docs/threshold-race.md, "Running the race on a device machine") has
# torch but not these, and fetches nothing: their wheels for its Python 3.12, at the versions
# installed here, and the data packed (84 MB as .npy, over what a call carries).
DEVICE_WHEELS = kafka-python crc32c pydantic pydantic-core annotated-types typing-inspection \
  pydantic-settings python-dotenv redis structlog
device-kit: install ## .whl/ and .device/ for deploy/device/race.sh on a device machine (carry both)
	rm -rf .whl && mkdir -p .whl .device
	for p in $(DEVICE_WHEELS); do \
	  v=$$($(BIN)/pip show $$p | sed -n 's/^Version: //p'); \
	  $(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    -d .whl "$$p==$$v" || exit 1; \
	done
	tar -C $(dir $(SD_DATA__ROOT)) -cJf .device/smap_msl.tar.xz $(notdir $(SD_DATA__ROOT))
	du -sh .whl .device

clean: services-down ## remove caches and run state (keeps .venv)
	rm -rf .run artifacts .pytest_cache .ruff_cache .mypy_cache
