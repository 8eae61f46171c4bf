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
# The newest Kubernetes release the Go module proxy serves; CI runs the local suite on it too.
# The first suite runs on the default version, the oldest the chart allows (1.30.0, pinned
# in tests/e2e/controlplane/go.mod); kind runs its own (hack/kind/k8s/go.mod, 1.34.4).
K8S_NEWEST ?= 1.37.2
CLUSTER ?= pod-replace-guard
IMAGE ?= pod-replace-guard:dev
NAMESPACE ?= pod-replace-guard

# The variables the targets' descriptions name: `make help` prints their values (with
# any override), not the $(NAME) of this file. tests/hack/test_makefile.py checks that
# none is left unexpanded.
HELP_VARS := BIND CERT_DIR CLUSTER IMAGE K8S_NEWEST NAMESPACE PYTHON_IMAGE

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | \
	  env $(foreach v,$(HELP_VARS),$(v)='$($(v))') awk -F ':.*## ' '{ \
	    d = $$2; out = ""; \
	    while (match(d, /\$$\([A-Z0-9_]+\)/)) { \
	      name = substr(d, RSTART + 2, RLENGTH - 3); \
	      value = (name in ENVIRON) ? ENVIRON[name] : substr(d, RSTART, RLENGTH); \
	      out = out substr(d, 1, RSTART - 1) value; d = substr(d, RSTART + RLENGTH); \
	    } \
	    printf "  %-12s %s\n", $$1, out d }'

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
lint: install ## ruff, mypy --strict, and actionlint on the GitHub workflows
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@$(MAKE) --no-print-directory actionlint

# Every workflow file. actionlint runs shellcheck on `run:` scripts only where shellcheck
# is on PATH; it is not required.
WORKFLOWS := $(sort $(wildcard .github/workflows/*.yml .github/workflows/*.yaml))

.PHONY: actionlint
actionlint: ## actionlint on .github/workflows (built from Go modules by hack/tools/build.sh, cached)
	@# Built once (seconds), a warm run only finds the file. In CI a missing Go toolchain
	@# fails here; elsewhere, with neither Go nor a cached binary, it skips, saying so.
	@if [ "$${CI:-}" != "true" ] && ! command -v go >/dev/null \
	    && ! hack/tools/build.sh actionlint >/dev/null 2>&1; then \
	  echo "SKIPPING actionlint: not built and no Go to build it (hack/tools/build.sh actionlint)"; \
	else \
	  bin=$$(hack/tools/build.sh actionlint); \
	  echo "actionlint $(WORKFLOWS)"; \
	  "$$bin/actionlint" $(WORKFLOWS); \
	fi

.PHONY: controlplane
controlplane: ## build kube-apiserver, etcd and kubectl from Go modules (cached outside the clone)
	K8S_VERSION=$(K8S_VERSION) tests/e2e/controlplane/build.sh

.PHONY: tools
tools: ## build helm, promtool and actionlint from Go modules (cached outside the clone)
	hack/tools/build.sh

.PHONY: test
test: install ## everything: lint, unit, HTTP, real processes, the chart, the real-apiserver suite; with CI=true also v$(K8S_NEWEST) and kind
	@# Each step is a stage of .ci/run's closing table (hack/stage.sh). The Go-built
	@# kube-apiserver/etcd/kubectl, helm and promtool are built (or found cached) first,
	@# outside pytest's per-test timeout. In CI a missing Go toolchain fails here;
	@# elsewhere the tests that need them skip with the reason printed. actionlint (seconds
	@# to build) is built by the lint stage itself (make actionlint), so is warm by then.
	@hack/stage.sh lint $(MAKE) --no-print-directory lint
	@if [ "$${CI:-}" = "true" ] || command -v go >/dev/null; then \
	  hack/stage.sh "build: control plane (default version)" \
	    env K8S_VERSION=$(K8S_VERSION) tests/e2e/controlplane/build.sh >/dev/null; \
	  hack/stage.sh "build: helm, promtool" hack/tools/build.sh >/dev/null; \
	fi
	@# The later stages' Go builds (v$(K8S_NEWEST), the kind node's binaries) run in the
	@# background at nice 19 while the first suite runs (hack/prebuild.sh).
	@if [ "$${CI:-}" = "true" ] || [ -n "$(FULL)" ]; then K8S_NEWEST=$(K8S_NEWEST) hack/prebuild.sh start; fi
	@hack/stage.sh "suite: everything on the default version" $(PY) -m pytest -p no:cacheprovider
	@if [ "$${CI:-}" = "true" ] || [ -n "$(FULL)" ]; then \
	  hack/stage.sh "build: v$(K8S_NEWEST) and kind binaries (waited for)" hack/prebuild.sh wait; \
	  hack/stage.sh "build: control plane v$(K8S_NEWEST)" \
	    env K8S_VERSION=$(K8S_NEWEST) tests/e2e/controlplane/build.sh >/dev/null; \
	  hack/stage.sh "suite: e2e on local v$(K8S_NEWEST)" $(MAKE) --no-print-directory e2e-newest; \
	  hack/stage.sh "kind: the whole flow" $(MAKE) --no-print-directory kind-test; \
	else \
	  echo "SKIPPING the local control plane on v$(K8S_NEWEST) and the kind cluster suite:"; \
	  echo "  they run with CI=true or FULL=1 (they build Kubernetes $(K8S_NEWEST), and kind needs"; \
	  echo "  a Docker engine, which hack/kind/host.sh installs and starts as root)"; \
	fi

.PHONY: e2e-newest
e2e-newest: install ## the end-to-end suite on a local control plane of the newest Kubernetes ($(K8S_NEWEST))
	K8S_VERSION=$(K8S_NEWEST) tests/e2e/controlplane/build.sh >/dev/null
	K8S_VERSION=$(K8S_NEWEST) E2E_TARGET=local $(PY) -m pytest -p no:cacheprovider tests/e2e

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

# --- kind flow ---------------------------------------------------------------------
# A kind cluster (control plane + worker) with the webhook deployed from deploy/. Where a
# registry answers (a probe of REGISTRY_PROBE_TIMEOUT seconds, 5) the stock kindest/node
# image and FROM $(PYTHON_IMAGE) are used; where none does the node image is assembled
# locally and the webhook image built from a Debian base and wheelhouse/ (hack/kind/,
# docs/kind.md). Each choice is logged. Set explicitly, KIND_NODE_IMAGE (an image, or
# "offline") and IMAGE_OFFLINE (1 offline, 0 registry) decide without a probe.
KIND_NODE_IMAGE ?=
IMAGE_OFFLINE ?=
PYTHON_IMAGE ?= python:3.11-slim
# A CA file for `make deploy`: only the API server, with a client certificate it
# signed, may call (kind-up gives its API server one; make kind-test uses it).
CLIENT_CA ?=
# CIDRs the API server and the kubelets connect from: adds the NetworkPolicy.
NETWORK_POLICY_CIDRS ?=
# Non-empty: judge pods/ephemeralcontainers and pods/resize too (denies `kubectl debug`).
JUDGE_SUBRESOURCES ?=
KIND_ENV := CLUSTER=$(CLUSTER) KIND_NODE_IMAGE=$(KIND_NODE_IMAGE)
# kind and the kubectl of the node's release, from the cache hack/kind fills.
KIND_TOOLS := $$(source hack/kind/lib.sh && echo "$$PATH")

.PHONY: kind-up
kind-up: install ## create the kind cluster $(CLUSTER) (control plane + worker): stock node image, or offline where no registry answers
	PYTHON=$(PY) NAMESPACE=$(NAMESPACE) $(KIND_ENV) hack/kind/up.sh

.PHONY: kind-down
kind-down: ## delete the kind cluster $(CLUSTER)
	$(KIND_ENV) hack/kind/down.sh

.PHONY: image
image: ## build the webhook image $(IMAGE) (from $(PYTHON_IMAGE), or offline from Debian and wheelhouse/ where no registry answers)
	@base=$$(IMAGE_OFFLINE='$(IMAGE_OFFLINE)' PYTHON_IMAGE='$(PYTHON_IMAGE)' hack/kind/choose.sh python-base); \
	if [ "$$base" = offline ]; then \
	  hack/kind/host.sh; \
	  base=$$(hack/kind/rootfs.sh python); \
	  ls wheelhouse/kubernetes-*.whl >/dev/null 2>&1 || PYTHON=$(PYTHON) hack/wheelhouse.sh; \
	  set -x; DOCKER_BUILDKIT=0 docker build -q -t $(IMAGE) --build-arg PYTHON_IMAGE=$$base --build-arg PIP_NO_INDEX=1 .; \
	else \
	  set -x; docker build -t $(IMAGE) --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) .; \
	fi

.PHONY: kind-load
kind-load: ## load $(IMAGE) into the kind cluster's nodes
	PATH="$(KIND_TOOLS)" kind load docker-image $(IMAGE) --name $(CLUSTER)

.PHONY: deploy
deploy: install ## install into the current kube context (the controller makes the certificates and registers the webhook once a replica answers)
	PATH="$(KIND_TOOLS)" PYTHON=$(PY) NAMESPACE=$(NAMESPACE) IMAGE=$(IMAGE) CLIENT_CA=$(CLIENT_CA) NETWORK_POLICY_CIDRS=$(NETWORK_POLICY_CIDRS) JUDGE_SUBRESOURCES=$(JUDGE_SUBRESOURCES) deploy/install.sh

.PHONY: undeploy
undeploy: ## remove the webhook from the current kube context
	PATH="$(KIND_TOOLS)" kubectl delete validatingwebhookconfiguration pod-replace-guard --ignore-not-found
	PATH="$(KIND_TOOLS)" kubectl delete namespace $(NAMESPACE) --ignore-not-found

.PHONY: e2e-kind
e2e-kind: install ## the end-to-end suite against the deployed webhook in the current kube context
	PATH="$(KIND_TOOLS)" E2E_TARGET=cluster $(PY) -m pytest -p no:cacheprovider tests/e2e

.PHONY: helm-kind
helm-kind: install ## the Helm chart with the image $(IMAGE) in the current kube context: replaces the kustomize install; install, upgrade, break glass, uninstall
	hack/tools/build.sh helm >/dev/null
	PATH="$(KIND_TOOLS)" E2E_TARGET=cluster HELM_E2E=1 HELM_E2E_IMAGE=$(IMAGE) HELM_E2E_CLIENT_CA=$(CLIENT_CA) $(PY) -m pytest -p no:cacheprovider tests/helm

.PHONY: kind-test
kind-test: install ## the whole kind flow: kind-up image kind-load deploy e2e-kind helm-kind, then kind-down
	hack/kind/test.sh

.PHONY: conformance
conformance: install ## upstream [Conformance] specs (Pods, PodTemplates, sig-apps workloads) on kind $(CLUSTER), with the webhook and without it; counts side by side
	PYTHON=$(PY) NAMESPACE=$(NAMESPACE) IMAGE=$(IMAGE) $(KIND_ENV) hack/kind/conformance/all.sh

.PHONY: clean
clean: ## remove the venv and caches (not the Go binaries cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
