# apim: `make run` starts the whole system; `make test` runs every test tier.
SHELL := /bin/bash
GO ?= go
BIN := bin/apim

# Tiers by package: unit tests need no services; integration tests start a
# private PostgreSQL and Kafka (embedded and Apache); e2e runs real Envoy in
# front of the real binary.
UNIT_PKGS := ./internal/config/... ./internal/model/... ./internal/certs/... ./internal/app/... ./internal/ops/... \
	./internal/gwstate/... ./internal/jwks/... ./internal/runner/... ./xds/... ./envoy/... ./authz/... ./ratelimit/... \
	./internal/localenv/... ./scripts/...
INTEGRATION_PKGS := ./internal/pgcluster/... ./internal/pgtest/... ./internal/migrate/... \
	./internal/events/... ./internal/kafkatest/... ./internal/store/... ./keymgr/... ./portal/... ./trafficmgr/... \
	./internal/hydratest/...
E2E_PKGS := ./e2e/...

.PHONY: all build run test test-unit test-integration test-e2e deps envoy kafka-jars hydra lint bench bench-e2e bench-load wso2-coverage clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/apim

deps:
	@scripts/deps.sh

envoy:
	@scripts/get-envoy.sh >/dev/null

kafka-jars:
	@scripts/kafka-jars.sh >/dev/null

# Ory Hydra, the external OIDC provider of the key-manager tests, built once
# into .cache/hydra/ from the separate module internal/hydratest/tool.
hydra:
	@$(GO) run ./internal/hydratest/gethydra >/dev/null

run: deps envoy build
	@scripts/run.sh

test: test-unit test-integration test-e2e

test-unit: envoy
	$(GO) test -race -count=1 $(UNIT_PKGS)

test-integration: deps kafka-jars hydra
	$(GO) test -count=1 -p 2 $(INTEGRATION_PKGS)

test-e2e: deps envoy kafka-jars hydra
	$(GO) test -count=1 -timeout 20m $(E2E_PKGS)

bench: envoy
	$(GO) test -run '^$$' -bench . -benchmem ./authz/... ./ratelimit/... ./internal/gwstate/... ./xds/...

bench-e2e: deps envoy
	$(GO) test -run '^$$' -bench DeployToLive -benchtime 1x ./e2e/

# Throughput through Envoy with wrk (e2e/load_test.go): plain Envoy against
# apim's Envoy with OAuth2 and rate limiting, per gateway.rate_limit_mode.
# About 3.5 minutes a mode; not part of `make test`.
bench-load: deps envoy
	$(GO) test -run '^$$' -bench '^BenchmarkLoad$$' -benchtime 1x -timeout 30m -v ./e2e/

# How many of WSO2 API-M's REST operations apim serves (docs/wso2-compatibility.md).
# WSO2's definitions are not in this repository: WSO2_DEFS is a directory with
# their publisher-api.yaml, devportal-api.yaml and admin-api.yaml.
wso2-coverage:
	@test -n "$(WSO2_DEFS)" || { echo "make wso2-coverage WSO2_DEFS=DIR (WSO2's publisher-api.yaml, devportal-api.yaml, admin-api.yaml)"; exit 2; }
	$(GO) run ./scripts/wso2coverage -wso2 $(WSO2_DEFS) -missing

lint:
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0 run ./...

clean:
	rm -rf bin .cache/envoy/dl
