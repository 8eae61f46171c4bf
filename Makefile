# pod-replace-guard. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIND ?= 127.0.0.1:8443
CERT_DIR ?= certs
K8S_VERSION ?=
CLUSTER ?= pod-replace-guard
IMAGE ?= pod-replace-guard:dev
NAMESPACE ?= pod-replace-guard

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install
install: $(VENV)/.installed ## create .venv with the package (editable) and the dev tools

.PHONY: run
run: install ## serve the webhook on https://$(BIND) with dev certificates in $(CERT_DIR)/
	$(PY) -m webhook serve --bind $(BIND) --cert-dir $(CERT_DIR)

.PHONY: certs
certs: install ## generate a dev CA and serving certificate in $(CERT_DIR)/
	$(PY) -m webhook certs --out $(CERT_DIR) --service pod-replace-guard --namespace $(NAMESPACE)

.PHONY: lint
lint: install ## ruff and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: controlplane
controlplane: ## build kube-apiserver, etcd and kubectl from Go modules (cached outside the clone)
	K8S_VERSION=$(K8S_VERSION) tests/e2e/controlplane/build.sh

.PHONY: test
test: lint ## everything: lint, unit, HTTP, real processes, and the real-apiserver suite (CI=true)
	@# Build (or find cached) kube-apiserver/etcd/kubectl first, outside pytest's
	@# per-test timeout. In CI a missing Go toolchain fails here; elsewhere the suite
	@# skips with the reason printed.
	@if [ "$${CI:-}" = "true" ] || command -v go >/dev/null; then \
	  K8S_VERSION=$(K8S_VERSION) tests/e2e/controlplane/build.sh >/dev/null; \
	fi
	$(PY) -m pytest -p no:cacheprovider

.PHONY: unit
unit: install ## the fast tests only (no processes, no API server)
	$(PY) -m pytest -p no:cacheprovider tests/unit

.PHONY: e2e
e2e: install controlplane ## the end-to-end suite on a local kube-apiserver + etcd
	E2E_TARGET=local $(PY) -m pytest -p no:cacheprovider tests/e2e

.PHONY: fuzz
fuzz: install ## property-based fuzzing with a large budget
	FUZZ_EXAMPLES=20000 $(PY) -m pytest -p no:cacheprovider tests -k fuzz

.PHONY: soak
soak: install controlplane ## long load, fault and idle-connection tests on loopback (bounded)
	SOAK=1 $(PY) -m pytest -p no:cacheprovider tests/reliability tests/e2e/test_connections.py -k soak

.PHONY: bench
bench: install ## benchmarks -> benchmarks/results.json (BENCH_QUICK=1 for a short run)
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package) for the HTTP load"; \
	  apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
	K8S_VERSION=$(K8S_VERSION) tests/e2e/controlplane/build.sh >/dev/null
	$(PY) -m benchmarks.run

# --- kind flow (needs Docker; runs in .github/workflows/kind.yml) -----------------
.PHONY: kind-up
kind-up: ## create a kind cluster named $(CLUSTER)
	kind get clusters | grep -qx $(CLUSTER) || kind create cluster --name $(CLUSTER) --wait 120s

.PHONY: kind-down
kind-down: ## delete the kind cluster
	kind delete cluster --name $(CLUSTER)

.PHONY: image
image: ## build the container image $(IMAGE)
	docker build -t $(IMAGE) .

.PHONY: kind-load
kind-load: ## load $(IMAGE) into the kind cluster
	kind load docker-image $(IMAGE) --name $(CLUSTER)

.PHONY: deploy
deploy: install ## install into the current kube context (certs generated, caBundle injected)
	PYTHON=$(PY) NAMESPACE=$(NAMESPACE) IMAGE=$(IMAGE) deploy/install.sh

.PHONY: undeploy
undeploy: ## remove the webhook from the current kube context
	kubectl delete validatingwebhookconfiguration pod-replace-guard --ignore-not-found
	kubectl delete namespace $(NAMESPACE) --ignore-not-found

.PHONY: e2e-kind
e2e-kind: install ## the end-to-end suite against the deployed webhook in the current kube context
	E2E_TARGET=cluster $(PY) -m pytest -p no:cacheprovider tests/e2e

.PHONY: clean
clean: ## remove the venv and caches (not the Go binaries cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
