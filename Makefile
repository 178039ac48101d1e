# tasuki — two commands on a fresh machine: `make demo` and `make test`.
# Everything they need (Python venv with moto and cargo-lambda, npm tools) is installed here.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := $(CURDIR)/.tasuki/venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(CURDIR)/tests/node_modules/.bin:$(PATH)
export CARGO_TERM_COLOR ?= never

.DEFAULT_GOAL := help
include infra/infra.mk
include runner-image/image.mk

.PHONY: help deps build lint test unit e2e demo local-up local-down schema clean

help:
	@echo "make demo        play one job through the whole lifecycle locally and print its timeline"
	@echo "make test        lint, unit/property/adapter tests, then end-to-end tests on the local stack"
	@echo "make infra-test  CDK app: offline synth, template tests, cdk-nag, cfn-lint"
	@echo "make image-test  runner image: hadolint on the Dockerfile, shellcheck on its scripts"
	@echo "make local-up    start the local stack in the background (writes .tasuki/local.env)"
	@echo "make local-down  stop it"

deps:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
	@scripts/bootstrap.sh

build: deps
	cargo build --workspace --bins

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	@# asl-validator takes a Resource that is an ARN or one whole $${Variable}: check the definition
	@# as CDK deploys it, with the partition substituted.
	sed 's/$${Partition}/aws/g' statemachines/runner-job.asl.json > .tasuki/runner-job.lint.asl.json
	asl-validator --json-path .tasuki/runner-job.lint.asl.json
	shellcheck scripts/*.sh .ci/run
	@# The Python harness and e2e tests (settings in tests/pyproject.toml).
	ruff check tests
	ruff format --check tests
	mypy --config-file tests/pyproject.toml tests/harness tests/e2e

unit: deps
	cargo test --workspace

e2e: build
	@trap '$(MAKE) --no-print-directory local-down' EXIT; \
	$(MAKE) --no-print-directory local-up; \
	$(PY) -m pytest -q tests/e2e tests/harness/test_harness.py tests/harness/test_template.py tests/harness/test_github_strict.py

test: lint unit infra-test image-test e2e

demo: build
	@trap '$(MAKE) --no-print-directory local-down >/dev/null' EXIT; \
	$(MAKE) --no-print-directory local-up; \
	$(PY) tests/harness/demo.py

image-test: deps

# The deployment file's JSON Schema is generated from the Rust type; a unit test checks it is current.
schema:
	cargo run -q -p tasuki-cli -- config schema > infra/tasuki.config.schema.json

# Synthesizes infra/ (npm ci there when needed) and runs the Lambdas with the template's environment.
local-up: deps
	@command -v npm >/dev/null || { echo "npm not found: install Node.js >= 20 (local-up synthesizes infra/)"; exit 1; }
	$(PY) tests/harness/local_stack.py up

local-down:
	@if [ -x "$(PY)" ]; then $(PY) tests/harness/local_stack.py down; fi

clean: local-down
	rm -rf .tasuki target tests/node_modules infra/node_modules infra/cdk.out
