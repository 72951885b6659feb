# sensorstream: `make demo` runs the pipeline on a local Kafka broker and Spark in local mode;
# `make test` runs the whole test suite (real broker, real Spark, chart checks). `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SENSORSTREAM := $(VENV)/bin/sensorstream
STATE := .sensorstream
HELM := $(STATE)/tools/bin/helm
JARS_STAMP := $(STATE)/jars/.resolved
CRDS_STAMP := $(STATE)/crds/.generated
# The virtualenv: the runtime (package + pyspark) for demo and the jobs; the test extra on top for
# the tests, lint and benchmarks.
RUNTIME_STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DETECTOR_JAR := $(STATE)/jars/spark/sensorstream-detector.jar
#: setup builds the fault detector where a JDK's javac is (needed for STREAM_DETECT=on); its jar also
#: carries the parse's explainer (jobs/jvm/parse), which only makes the stream faster
SETUP_DETECTOR := $(if $(shell command -v javac 2>/dev/null),$(DETECTOR_JAR))
MVN_FLAGS := -B -q -f jobs/jvm/pom.xml

.PHONY: help setup setup-test jars detector crds browser demo lint test test-fast test-faults up down status bench bench-report \
        clean distclean

##@ Run
DEMO_DIR := data/demo
DEMO_METRICS := --metrics-port 9101
demo: setup ## the whole pipeline locally: broker, producer, stream, report, status
	@echo "==> 1/5 local Kafka broker"
	$(SENSORSTREAM) local up
	@echo "==> 2/5 producing 300 readings from 10 sensors (a few malformed, a few late)"
	$(SENSORSTREAM) produce --count 300 --rate 0 --bad-ratio 0.03 --late-ratio 0.03 $(DEMO_METRICS)
	@echo "==> 3/5 streaming windows (bounded: --available-now)"
	$(SENSORSTREAM) stream --available-now --reset-checkpoint --sinks console,kafka,parquet \
	  --checkpoint-root $(DEMO_DIR)/checkpoints --parquet-dir $(DEMO_DIR)/windows $(DEMO_METRICS)
	@echo "==> 4/5 batch report (and the page to look at: sensor_report.html)"
	$(SENSORSTREAM) report --format csv,parquet,json,html --report-dir $(DEMO_DIR)/sensor_report
	@echo "==> 5/5 is the stream keeping up? (lag per partition from its checkpoint)"
	$(SENSORSTREAM) status --checkpoint-root $(DEMO_DIR)/checkpoints
	@echo
	@echo "Where everything went:"
	@echo "  Kafka (127.0.0.1:9092): input_topic (readings), output_topic (window stats),"
	@echo "                          dead_letter_topic (rejects with reasons)"
	@echo "  window Parquet files:   $(DEMO_DIR)/windows/"
	@echo "  reports:                $$(ls -d $(DEMO_DIR)/sensor_report/*/ | tail -1)"
	@echo "  the report to look at:  $$(ls -d $(DEMO_DIR)/sensor_report/*/ | tail -1)sensor_report.html"
	@echo "  stream checkpoints:     $(DEMO_DIR)/checkpoints/ ('$(SENSORSTREAM) status --checkpoint-root $(DEMO_DIR)/checkpoints')"
	@echo "  metrics (Prometheus), while produce and stream run with --metrics-port 9101:"
	@echo "                          http://127.0.0.1:9101/metrics (sensorstream_*),"
	@echo "                          http://127.0.0.1:4040/metrics/prometheus/ (Spark's own, stream only)"
	@echo "The broker keeps running: try '$(SENSORSTREAM) produce --count 0' and '$(SENSORSTREAM) stream'"
	@echo "in two terminals; 'make down' stops it."

up: setup ## start the local Kafka broker (KRaft) and create the topics
	$(SENSORSTREAM) local up

down: ## stop the local Kafka broker
	@if [ -x $(SENSORSTREAM) ]; then $(SENSORSTREAM) local down; fi

status: ## is the local broker running?
	$(SENSORSTREAM) local status

bench: setup-test detector ## every stage against Spark's or Kafka's own floor, same run (~10 min; table + data/bench/<UTC>.json)
	$(PY) tests/bench/bench.py

bench-report: setup-test ## the report against Spark's own floor, 200k and 2M readings (a few minutes)
	$(PY) tests/bench/bench_report.py

##@ Test
test: setup-test detector helm crds promtool ## the whole test suite: real Kafka broker, real Spark, chart checks
	$(PY) -m pytest

test-fast: setup-test detector helm crds promtool ## tests without the slow ones
	$(PY) -m pytest -m "not slow"

test-faults: setup-test detector ## fault injection on a real 3-broker cluster: kills, restarts, gaps, disk full (~15 min; needs root for a tmpfs)
	$(PY) -m pytest -m faults tests/faults

lint: $(TEST_STAMP) ## ruff (lint and format check) and mypy, as CI and pre-commit (.ci/pre-commit-config.yaml) run them
	$(VENV)/bin/ruff check jobs tests k8s
	$(VENV)/bin/ruff format --check jobs tests k8s
	$(VENV)/bin/mypy

browser: ## headless Chromium for the HTML report's browser test (Debian's package; needs root)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }

##@ Maintenance
help: ## list the targets, by group
	@awk 'BEGIN { FS = ":.*## " } /^##@ / { printf "\n%s\n", substr($$0, 5) } \
	  /^[a-zA-Z0-9_-]+:.*## / { printf "  make %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

setup: $(RUNTIME_STAMP) $(JARS_STAMP) $(SETUP_DETECTOR) ## virtualenv with the runtime + jars, and the fault detector given a JDK (done by demo)

setup-test: setup $(TEST_STAMP) ## setup, plus the test tools (done by test, lint and bench)

jars: $(JARS_STAMP) ## fetch the JVM jars from Maven Central (pom: jobs/jvm/pom.xml)

detector: $(DETECTOR_JAR) ## compile the fault detector (jobs/jvm/detector) against pyspark's jars (needs a JDK's javac)

$(DETECTOR_JAR): $(wildcard jobs/jvm/detector/src/sensorstream/detect/*.java jobs/jvm/parse/src/sensorstream/parse/*.java) jobs/jvm/detector/build.sh $(RUNTIME_STAMP) $(JARS_STAMP)
	@echo "==> compiling the fault detector into $@"
	jobs/jvm/detector/build.sh "$$($(PY) -c 'import pyspark, pathlib; print(pathlib.Path(pyspark.__file__).parent / "jars")')" $@

crds: $(CRDS_STAMP) ## the Prometheus Operator's CRDs for the chart tests (needs Go; done by test)

clean: down ## remove job output (data/) and the local broker's data
	rm -rf data $(STATE)/local spark-warehouse

distclean: clean ## also remove the virtualenv, jars and tools
	rm -rf $(VENV) $(STATE)

$(RUNTIME_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.10+ not found: install python3 and python3-venv"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "Python 3.10+ is required ($(PYTHON) is older)"; exit 1; }
	@echo "==> creating $(VENV) and installing sensorstream with pyspark (first time: a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[spark]'
	@touch $@

$(TEST_STAMP): $(RUNTIME_STAMP)
	@echo "==> installing the test tools into $(VENV) (pytest, the Kubernetes client, ruff, mypy, ...)"
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

$(JARS_STAMP): jobs/jvm/pom.xml
	@command -v java >/dev/null || { echo "Java not found: install a Java 17+ JDK (apt-get install openjdk-17-jdk-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven not found: install it (apt-get install maven) to fetch the jars"; exit 1; }
	@echo "==> resolving jars with Maven (Spark Kafka connector, Kafka broker) into $(STATE)/jars"
	rm -rf $(STATE)/jars/spark $(STATE)/jars/kafka
	mvn $(MVN_FLAGS) -P spark-connector package
	mvn $(MVN_FLAGS) -P kafka-broker package
	@touch $@

# The Prometheus Operator's CRDs, which the chart tests validate the ServiceMonitor against (the
# other operators' come from ../shared/crds): generated from its Go API module, once.
$(CRDS_STAMP): k8s/monitoring-crds.sh
	@echo "==> generating the Prometheus Operator's CRDs into $(STATE)/crds (Go modules; first time: a minute or two)"
	k8s/monitoring-crds.sh $(STATE)/crds/prometheus-operator
	@touch $@


-include k8s/k8s.mk
