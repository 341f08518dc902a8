# clusterset: `make demo` runs the local clusterset walkthrough, `make test` runs the tests.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
CACHE := $(ROOT)/.cache
BIN := $(ROOT)/bin
MCS_API_DIR = $(shell go list -m -f '{{.Dir}}' sigs.k8s.io/mcs-api)
CONTROLLER_GEN := go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
GO_TEST_FLAGS ?= -race
export KUBEBUILDER_ASSETS := $(CACHE)/envtest

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: test
test: sandbox-binaries test-tools moto ## build missing test binaries, then run unit and integration tests (with -race)
	hack/go-test.sh $(GO_TEST_FLAGS) ./...

.PHONY: envtest-binaries
envtest-binaries: ## build kube-apiserver and etcd into .cache (once)
	hack/build-binaries.sh envtest

.PHONY: test-tools
test-tools: ## build promtool (checks and unit-tests config/monitoring) into .cache (once)
	hack/build-binaries.sh tools

.PHONY: moto
moto: ## install moto's server (the Cloud Map of the tests) from PyPI, once
	hack/install-moto.sh

.PHONY: sandbox-binaries
sandbox-binaries: ## build every sandbox component into .cache (once)
	hack/build-binaries.sh sandbox

.PHONY: node-binaries
node-binaries: ## build kubelet, kube-proxy and the CNI plugins of real sandbox nodes into .cache (once)
	hack/build-binaries.sh node

.PHONY: node-tools
node-tools: ## install containerd, runc, nftables and busybox-static from Debian's packages when root on Linux (real nodes)
	hack/install-node-tools.sh

.PHONY: build
build: ## build clusterset-controller and kubectl-clusterset into bin/
	go build -o $(BIN)/ ./cmd/...

# make images IMAGES="pause client" builds only those; IMAGES_DIR moves the output.
IMAGES_DIR ?= $(CACHE)/images
IMAGES ?=
.PHONY: images
images: ## build OCI image tarballs of the controller, CoreDNS, echo-server, client and pause into .cache/images (no Docker needed)
	go run ./hack/images -out $(IMAGES_DIR) $(IMAGES)

.PHONY: demo
demo: sandbox-binaries node-binaries node-tools build images ## start a 2-cluster sandbox and walk through exporting nginx-hello
	hack/demo.sh

.PHONY: e2e
e2e: sandbox-binaries node-binaries node-tools build images moto ## end-to-end suite on the sandbox (hub and Cloud Map registries)
	hack/go-test.sh -tags e2e -timeout 40m ./test/e2e/...

# Every Fuzz target of the module, FUZZTIME each (go test -fuzz takes one
# target of one package at a time), found in the test files git tracks or
# would track (new ones too) anywhere in the module: not in the ignored
# .cache, nor in testdata or vendor trees, which go test does not build.
# Inputs that fail are saved under the package's testdata/fuzz/, where go
# test then replays them as seeds.
# FUZZTIME counts executions (Nx) by default: a duration makes Go 1.26's fuzz
# coordinator fail now and then with "context deadline exceeded" when the
# time ends while a worker is busy, without any failing input
# (go.dev/issue/75804, fixed in Go 1.27). 20,000 executions take 2 to 15 s
# per target on 2 cores.
FUZZTIME ?= 20000x
.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 20000x executions; CI runs this)
	@for pkg in $$(git ls-files --cached --others --exclude-standard '*_test.go' | grep -v -e '\(^\|/\)testdata/' -e '\(^\|/\)vendor/' \
	    | xargs -r grep -l '^func Fuzz' | xargs -r -n1 dirname | sort -u); do \
	  for target in $$(grep -h '^func Fuzz' $$pkg/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz ./$$pkg $$target ($(FUZZTIME))"; \
	    go test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) ./$$pkg > /tmp/clusterset-fuzz.log 2>&1 || { cat /tmp/clusterset-fuzz.log; exit 1; }; \
	  done; \
	done

# Each run's output is also saved in Go's benchmark format under BENCH_OUT.
# The burst file is named after its size, so that runs with several
# BENCH_BURST values add up to a plot against size. .SHELLFLAGS has
# pipefail: a failing go test still fails the target through tee.
BENCH_OUT ?= bench-results
.PHONY: bench
bench: sandbox-binaries moto ## propagation latency and registry calls, hub vs Cloud Map, and Cloud Map's cost per change by namespace size and by members (docs/benchmarks.md); results also in BENCH_OUT (bench-results/)
	mkdir -p $(BENCH_OUT)
	go test -tags bench -run '^$$' -bench BenchmarkClusterset -benchtime 30x -count 1 -timeout 20m ./test/bench/ | tee $(BENCH_OUT)/clusterset.txt
	go test -tags bench -run '^$$' -bench BenchmarkBurst -benchtime 1x -count 1 -timeout 30m ./test/bench/ | tee $(BENCH_OUT)/burst-$${BENCH_BURST:-200}.txt
	go test -tags bench -run '^$$' -bench BenchmarkChangeCost -benchtime 30x -count 1 -timeout 20m ./pkg/registry/cloudmap/ | tee $(BENCH_OUT)/changecost.txt
	go test -tags bench -run '^$$' -bench BenchmarkChurn -benchtime 10x -count 1 -timeout 20m ./test/bench/ | tee $(BENCH_OUT)/churn-$${BENCH_CHURN:-100}.txt

.PHONY: bench-scale
bench-scale: sandbox-binaries moto ## at scale: clusterset-controller processes with BENCH_SCALE services (default 5,000; convergence, memory, a restart), and the hub's load with 2, 5 and 10 members, bare and in sandbox up --clusters N (docs/benchmarks.md); about 25 minutes for the hub
	mkdir -p $(BENCH_OUT)
	go test -tags bench -run '^$$' -bench BenchmarkScale -benchtime 1x -count 1 -timeout 90m ./test/bench/ | tee $(BENCH_OUT)/scale-$${BENCH_SCALE:-5000}.txt
	go test -tags bench -run '^$$' -bench BenchmarkMembers -benchtime 1x -count 1 -timeout 60m ./test/bench/ | tee $(BENCH_OUT)/members.txt
	go test -tags bench -run '^$$' -bench BenchmarkSandboxMembers -benchtime 1x -count 1 -timeout 30m ./test/bench/ | tee $(BENCH_OUT)/sandbox-members.txt

.PHONY: bench-plot
bench-plot: ## draw BENCH_OUT's results (make bench) against size as SVG into docs/benchmarks/ (hack/benchplot)
	@ls $(BENCH_OUT)/*.txt > /dev/null 2>&1 || { echo "no results in $(BENCH_OUT)/: run make bench first"; exit 1; }
	go run ./hack/benchplot -out docs/benchmarks $(BENCH_OUT)/*.txt

.PHONY: crds
# Helm installs CRDs only from a chart's own crds/, so the chart gets a copy.
crds: ## regenerate config/crd (pinned mcs-api module, ClusterProperty type), its copy in charts/clusterset/crds, and config/hub/crd (hub registry API)
	cp $(MCS_API_DIR)/config/crd/multicluster.x-k8s.io_serviceexports.yaml config/crd/
	cp $(MCS_API_DIR)/config/crd/multicluster.x-k8s.io_serviceimports.yaml config/crd/
	chmod 644 config/crd/*.yaml
	$(CONTROLLER_GEN) object paths=./pkg/apis/... crd:crdVersions=v1 output:crd:artifacts:config=config/crd
	$(CONTROLLER_GEN) object paths=./pkg/registry/hub/api/... crd:crdVersions=v1 output:crd:artifacts:config=config/hub/crd
	rm -rf charts/clusterset/crds && mkdir -p charts/clusterset/crds
	cp $$(sed -n 's/^  - \(.*\.yaml\)$$/config\/crd\/\1/p' config/crd/kustomization.yaml) charts/clusterset/crds/

.PHONY: monitoring
monitoring: ## copy config/monitoring's alert rules and dashboard into the chart (charts/clusterset/files)
	mkdir -p charts/clusterset/files
	cp config/monitoring/prometheus-rules.yaml config/monitoring/grafana-dashboard.json charts/clusterset/files/

.PHONY: verify
verify: ## gofmt, go vet, generated files up to date, no hand-written file over 600 lines
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run gofmt -w"; exit 1; }
	go vet ./...
	go vet -tags e2e ./test/...
	go vet -tags bench ./test/bench/
	$(MAKE) --no-print-directory crds
	@test -z "$$(git status --porcelain -- charts/clusterset/crds)" || { git status --short -- charts/clusterset/crds; echo "charts/clusterset/crds differs from config/crd: run make crds and commit"; exit 1; }
	@git diff --exit-code -- config/crd charts/clusterset/crds pkg/apis config/hub/crd pkg/registry/hub/api || { echo "generated CRDs or deepcopy files are stale: run make crds and commit"; exit 1; }
	@for f in prometheus-rules.yaml grafana-dashboard.json; do cmp -s config/monitoring/$$f charts/clusterset/files/$$f || { echo "charts/clusterset/files/$$f differs from config/monitoring: run make monitoring and commit"; exit 1; }; done
	@long=$$(git ls-files '*.go' ':!:*_test.go' ':!:**/zz_generated*' | xargs wc -l | awk '$$2 != "total" && $$1 > 600'); test -z "$$long" || { echo "$$long"; echo "files over 600 lines: split them along their seams (docs/architecture.md)"; exit 1; }

.PHONY: clean
clean: ## remove built binaries (keeps the component cache)
	rm -rf $(BIN)
