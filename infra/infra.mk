# infra/infra.mk — the CDK app's tests, as a make fragment.
#   From the root Makefile:  include infra/infra.mk   (then `make infra-test`)
#   Alone, from the repo root:  make -f infra/infra.mk infra-test
# Everything runs offline: Lambda code is a placeholder (no Rust build), no AWS account is needed.

INFRA := $(CURDIR)/infra
VENV ?= $(CURDIR)/.tasuki/venv
INFRA_NODE_STAMP := $(INFRA)/node_modules/.tasuki-package.sha256
# The CDK CLI must not reach out for notices or telemetry.
INFRA_CDK := cd $(INFRA) && CDK_DISABLE_CLI_TELEMETRY=true npx --no-install cdk

.PHONY: infra-deps infra-test infra-synth

# npm ci only when package.json / package-lock.json changed since the last install.
infra-deps:
	@command -v npm >/dev/null || { echo "npm not found: install Node.js >= 20"; exit 1; }
	@want="$$(cat $(INFRA)/package.json $(INFRA)/package-lock.json | sha256sum | cut -d' ' -f1)"; \
	if [ -d $(INFRA)/node_modules ] && [ "$$(cat $(INFRA_NODE_STAMP) 2>/dev/null)" = "$$want" ]; then \
	  echo "infra: node_modules up to date"; \
	else \
	  echo "infra: npm ci"; \
	  (cd $(INFRA) && npm ci --no-audit --no-fund --loglevel=error) && printf '%s\n' "$$want" > $(INFRA_NODE_STAMP); \
	fi
	@test -x $(VENV)/bin/cfn-lint || $(CURDIR)/scripts/bootstrap.sh

# The deployable template, as `npx cdk synth` makes it (placeholder Lambda code), in infra/cdk.out.
infra-synth: infra-deps
	$(INFRA_CDK) synth --quiet --no-notices -c lambdaCode=placeholder -c config=tasuki.config.example.json

# Type check, the template tests (synth, assertions, cdk-nag, bad configs), cfn-lint on infra/cdk.out.
infra-test: infra-synth
	cd $(INFRA) && npx --no-install tsc --noEmit
	cd $(INFRA) && node --import tsx --test --test-concurrency=2 test/*.test.ts
	$(VENV)/bin/cfn-lint --config-file $(INFRA)/.cfnlintrc.yaml -- $(INFRA)/cdk.out/Tasuki.template.json
	@echo "infra: cfn-lint clean"
