# ReelForge — the two commands the README gives are `make demo` and `make test`; `make unit` is the fast tier.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
ENV := .local-stack/env.sh
export REELFORGE_ROOT := $(CURDIR)
PYTEST_ARGS ?=

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

stack:  ## install what is missing and start the local stack (Slurm, sshd, moto, Airflow home)
	bash scripts/local-stack up

status:  ## show the local stack
	bash scripts/local-stack status

down:  ## stop the local stack
	bash scripts/local-stack down

demo: stack  ## run the super-resolution DAG end to end on a sample clip (CLIP=path to choose one)
	source $(ENV) && $(PY) scripts/demo.py $(if $(CLIP),--clip "$(CLIP)")

venv:  ## only the project venv and the Debian packages the unit tests need (starts no daemon)
	bash scripts/local-stack venv

UNIT := REELFORGE_STACK=off $(PY) -m pytest -m "not stack" -n 2  # two processes (pytest-xdist)

unit: venv  ## the fast tier, no local stack: every test not marked `stack`, in 2 processes (no daemon, no network; ~3 min)
	$(UNIT) --durations=15 $(PYTEST_ARGS)

lint: venv  ## ruff (needs only the venv)
	$(VENV)/bin/ruff check .

test: stack  ## lint + the images (cached; the tests run them) + the whole suite: the unit tier, then the stack tier (what CI runs)
	$(VENV)/bin/ruff check .
	bash scripts/push-images --bases local
	rc=0; $(UNIT) $(PYTEST_ARGS) || rc=$$?; \
	source $(ENV) && $(PY) -m pytest -m stack $(PYTEST_ARGS) || rc=$$?; \
	exit $$rc

bench: stack  ## benchmarks (print figures and ratios; not tests)
	source $(ENV) && $(PY) bench/dag_parse.py && $(PY) bench/sr_throughput.py

images:  ## build every containers/<name> image here on the local bases, no registry (ECR: scripts/push-images --push)
	bash scripts/push-images $(if $(TAG),--tag $(TAG))

airflow: stack  ## Airflow UI on http://127.0.0.1:8080 (airflow standalone)
	bash scripts/local-stack airflow

.PHONY: help stack status down demo venv unit lint test bench images airflow
