# Every target bootstraps what it needs from a fresh clone: only python3, node and make are assumed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint unit e2e infra-test synth deploy smoke bench setup clean browser-deps

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,dev,infra]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/coupons-local serve --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy layers/domain/python/coupons infra/coupons_infra infra/coupons_local functions infra/app.py

# The browser tests drive Debian's Chromium (Playwright's own browser download does not work here).
browser-deps:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: $(STAMP) lint browser-deps
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

synth: $(STAMP)
	rm -rf cdk.out
	$(BIN)/python infra/app.py
	@echo "templates written to cdk.out/"

node_modules/.bin/cdk: package.json
	npm install --no-audit --no-fund
	touch $@

deploy: $(STAMP) node_modules/.bin/cdk
	node_modules/.bin/cdk deploy --require-approval never $(CDK_ARGS)

# The token reaches pytest through the environment (make exports command-line variables), never
# through the recipe's text: neither make's echo nor `make -n` can show it.
smoke: $(STAMP)
	@test -n "$(API_URL)" -a -n "$${TOKEN:-}" || (echo "usage: make smoke API_URL=https://... TOKEN=..." && exit 2)
	COUPONS_API_URL="$(API_URL)" COUPONS_TOKEN="$$TOKEN" $(BIN)/python -m pytest -q tests/smoke

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) cdk.out node_modules .pytest_cache .mypy_cache .ruff_cache
