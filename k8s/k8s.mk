# sensorstream on Kubernetes: kind (or minikube) + Strimzi + Spark Operator + the chart.
# Included by the root Makefile, which defines VENV, PY, STATE and HELM before the include.
#
# From a machine with Docker to window rows and a report:
#   make kind-up operators image kind-load deploy    # cluster, operators, image, release
#   make logs                                        # follow the window tables (Ctrl+C to stop)
#   make report-now reports                          # run a report, copy it to data/k8s-reports/
#   make undeploy kind-down                          # clean up
# Without Docker: make chart-lint rehearse           # the same chart, run as local processes

K8S_NAMESPACE ?= sensorstream
K8S_RELEASE ?= sensorstream
KIND_CLUSTER ?= sensorstream
K8S_VALUES ?= k8s/values-kind.yaml
K8S_CHART := charts/sensorstream
K8S_TOOLS := $(STATE)/tools/bin

# Pins. kind v0.33.0 runs Kubernetes 1.37.0 (k8s/kind-config.yaml), the version the chart tests
# validate against; the operator versions are the ones whose CRDs the tests read. The Spark
# Operator's mutating webhook (on) is what mounts the checkpoint claim and applies the security
# contexts of driver and executors; the chart brings its own driver service account and Role.
HELM_VERSION := v3.19.0
KIND_VERSION := v0.33.0
KIND := $(K8S_TOOLS)/kind
STRIMZI_VERSION := 1.2.0
STRIMZI_CHART := oci://quay.io/strimzi-helm/strimzi-kafka-operator
STRIMZI_NAMESPACE ?= strimzi
SPARK_OPERATOR_VERSION := 2.5.2
SPARK_OPERATOR_REPO := https://kubeflow.github.io/spark-operator
SPARK_OPERATOR_NAMESPACE ?= spark-operator
# The control plane that `make test-k8s` runs as local processes (make k8s-tools builds it): the
# Kubernetes release the chart tests validate against, the etcd it supports, and the Spark Operator
# above. The pins are passed to k8s/k8s-tools.sh, which rebuilds a binary only when its pin changes.
KUBERNETES_VERSION := v1.37.2
ETCD_VERSION := v3.6.8
# The node that `make node-tools` builds (kubelet, kube-scheduler and kube-proxy at
# KUBERNETES_VERSION, from the same module). containerd 2.x, not Debian's 1.6: containerd's release
# support table pairs Kubernetes 1.37 with containerd 2.3/2.4, and 1.6 is out of support. CoreDNS
# is built with only the plugins listed (package names under its plugin/ folder): the cluster DNS
# listens on the node's bridge address only (bind), serves cluster.local and forwards nothing, there
# being no upstream (so no forward plugin).
CONTAINERD_VERSION := v2.4.2
COREDNS_VERSION := v1.15.0
COREDNS_PLUGINS := kubernetes bind errors health ready cache log loop
# The image tag is the chart's appVersion, which a test keeps equal to the package version.
K8S_IMAGE := sensorstream:$(shell sed -n 's/^appVersion: *"*\([^"]*\)"*/\1/p' $(K8S_CHART)/Chart.yaml)

KUBECTL := kubectl -n $(K8S_NAMESPACE)
K8S_DRIVER_POD := $(K8S_RELEASE)-stream-driver

.PHONY: helm kind promtool k8s-tools test-k8s kind-up operators image kind-load deploy logs report-now reports undeploy kind-down \
        chart-lint rehearse e2e

# --- prerequisite checks: say what is missing and how to get it ------------------------------
define need_go
	@command -v go >/dev/null 2>&1 || { echo "missing: go (needed to build $(1)). Install Go 1.22+ (Debian/Ubuntu: apt-get install golang-go, or https://go.dev/doc/install)"; exit 1; }
endef
define need_docker
	@command -v docker >/dev/null 2>&1 || { echo "missing: docker. Install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "docker is installed but its engine does not answer ('docker info' fails): start Docker (sudo systemctl start docker) and check you may use it (docker group)"; exit 1; }
endef
define need_kubectl
	@command -v kubectl >/dev/null 2>&1 || { echo "missing: kubectl. Install it: https://kubernetes.io/docs/tasks/tools/ (or: apt-get install kubectl)"; exit 1; }
endef
define need_cluster
	$(need_kubectl)
	@kubectl cluster-info >/dev/null 2>&1 || { echo "no reachable Kubernetes cluster for kubectl (context: $$(kubectl config current-context 2>/dev/null || echo none)): run 'make kind-up', or 'minikube start'"; exit 1; }
endef
define need_kind
	@test -x $(KIND) || command -v kind >/dev/null 2>&1 || { echo "missing: kind. Build it with 'make kind' (needs Go)"; exit 1; }
endef
define need_helm
	@test -x $(HELM) || { echo "missing: helm at $(HELM). Build it with 'make helm' (needs Go)"; exit 1; }
endef
KIND_BIN = $(if $(wildcard $(KIND)),$(KIND),kind)

##@ Kubernetes
# --- tools, built from the Go module proxy into a git-ignored folder ---------------------------
# A helm already on PATH is used (linked) when it is the pinned version; otherwise the pinned one is
# built, so every machine renders the chart with the same helm.
$(HELM):
	@mkdir -p $(dir $(HELM))
	@if command -v helm >/dev/null 2>&1 && helm version --short 2>/dev/null | grep -Eq '^$(HELM_VERSION)([+]|$$)'; then \
	  echo "==> using helm $(HELM_VERSION) from PATH ($$(command -v helm))"; \
	  ln -sf "$$(command -v helm)" $(HELM); \
	else \
	  command -v go >/dev/null 2>&1 || { echo "missing: go (needed to build helm $(HELM_VERSION)). Install Go 1.22+ (Debian/Ubuntu: apt-get install golang-go, or https://go.dev/doc/install), or put helm $(HELM_VERSION) on PATH"; exit 1; }; \
	  echo "==> building helm $(HELM_VERSION) into $(dir $(HELM)) (first time: a few minutes)"; \
	  GOBIN=$(abspath $(dir $(HELM))) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); \
	fi

helm: $(HELM) ## helm (pinned): linked from PATH if it is that version, else built into .sensorstream/tools/bin

$(KIND):
	$(call need_go,kind)
	@echo "==> building kind $(KIND_VERSION) into $(dir $(KIND))"
	@mkdir -p $(dir $(KIND))
	GOBIN=$(abspath $(dir $(KIND))) go install sigs.k8s.io/kind@$(KIND_VERSION)

kind: $(KIND) ## build kind (pinned) into .sensorstream/tools/bin

# Prometheus' promtool, for the tests of the chart's alerting rules (`promtool test rules`).
# Prometheus 3 publishes its Go module as v0.3MM.P: v0.316.0 is Prometheus v3.16.0.
PROMTOOL_VERSION := v0.316.0
PROMTOOL := $(K8S_TOOLS)/promtool
$(PROMTOOL):
	$(call need_go,promtool)
	@echo "==> building promtool (Prometheus $(PROMTOOL_VERSION)) into $(dir $(PROMTOOL)) (first time: a few minutes)"
	@mkdir -p $(dir $(PROMTOOL))
	GOBIN=$(abspath $(dir $(PROMTOOL))) go install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

promtool: $(PROMTOOL) ## promtool (pinned), for the alerting rules' tests, into .sensorstream/tools/bin

# kube-apiserver, kube-controller-manager, kubectl, etcd and the Spark Operator, from their Go
# modules (a cold build: 10-20 minutes on 2 cores, several GB of Go build cache; then seconds).
k8s-tools: $(HELM) ## build the local control plane for test-k8s (pinned) into .sensorstream/tools/bin
	KUBERNETES_VERSION=$(KUBERNETES_VERSION) ETCD_VERSION=$(ETCD_VERSION) \
	  SPARK_OPERATOR_VERSION=v$(SPARK_OPERATOR_VERSION) k8s/k8s-tools.sh $(STATE)/tools

# kubelet, kube-scheduler, kube-proxy, containerd (+ shim, ctr), CoreDNS and the pause image (a
# docker-archive in .sensorstream/tools/images for `ctr images import`), plus the Debian packages
# the node runs with (runc, CNI plugins, buildah, ...), installed when missing (needs root). Cold,
# about 4 minutes on 2 cores after k8s-tools (whose Go build cache it reuses); then seconds.
.PHONY: node-tools
node-tools: k8s-tools ## build a real Kubernetes node (kubelet, containerd, CoreDNS, pause; pinned) into .sensorstream/tools
	KUBERNETES_VERSION=$(KUBERNETES_VERSION) CONTAINERD_VERSION=$(CONTAINERD_VERSION) \
	  COREDNS_VERSION=$(COREDNS_VERSION) COREDNS_PLUGINS="$(COREDNS_PLUGINS)" k8s/node-tools.sh $(STATE)/tools

test-k8s: $(TEST_STAMP) crds ## the chart on a local control plane and the real Spark Operator (after k8s-tools)
	$(PY) -m pytest -m apiserver

# The chart on a real node built on this machine: kubelet, containerd, kube-proxy, CoreDNS and the
# control plane as local processes on a bridge of their own, the image imported into containerd
# (tests/node/; needs root; puts the host back as it was).
.PHONY: test-node
test-node: $(TEST_STAMP) jars image-archive ## the chart's Pods on a real node built here (after node-tools; root)
	$(PY) -m pytest -m node tests/node

# --- cluster ----------------------------------------------------------------------------------
kind-up: ## create the kind cluster (Kubernetes 1.37, one node)
	$(need_docker)
	$(need_kind)
	@if $(KIND_BIN) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	  echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
	  $(KIND_BIN) create cluster --name $(KIND_CLUSTER) --config k8s/kind-config.yaml --wait 180s; \
	fi
	@kubectl config use-context kind-$(KIND_CLUSTER) >/dev/null
	@echo "kubectl now talks to kind-$(KIND_CLUSTER)"

kind-down: ## delete the kind cluster
	$(need_kind)
	$(KIND_BIN) delete cluster --name $(KIND_CLUSTER)

operators: $(HELM) ## install Strimzi 1.2.0 and Spark Operator 2.5.2, both watching the namespace
	$(need_cluster)
	kubectl create namespace $(K8S_NAMESPACE) --dry-run=client -o yaml | kubectl apply -f -
	@echo "==> Strimzi $(STRIMZI_VERSION) in namespace $(STRIMZI_NAMESPACE), watching $(K8S_NAMESPACE)"
	$(HELM) upgrade --install strimzi $(STRIMZI_CHART) --version $(STRIMZI_VERSION) \
	  --namespace $(STRIMZI_NAMESPACE) --create-namespace \
	  --set 'watchNamespaces={$(K8S_NAMESPACE)}' --wait --timeout 10m
	@echo "==> Spark Operator $(SPARK_OPERATOR_VERSION) in namespace $(SPARK_OPERATOR_NAMESPACE), watching $(K8S_NAMESPACE)"
	$(HELM) upgrade --install spark-operator spark-operator --repo $(SPARK_OPERATOR_REPO) \
	  --version $(SPARK_OPERATOR_VERSION) --namespace $(SPARK_OPERATOR_NAMESPACE) --create-namespace \
	  --set 'spark.jobNamespaces={$(K8S_NAMESPACE)}' --set webhook.enable=true \
	  --set spark.serviceAccount.create=false --set spark.rbac.create=false \
	  --wait --timeout 10m

# --- image ------------------------------------------------------------------------------------
# The build context is the project's files as git knows them (tracked, plus new files not ignored):
# never the virtualenv, the local jars, broker data or job output, with no ignore file to maintain.
# With a Docker engine: docker build (BuildKit). Without one: Debian's buildah, chroot isolation,
# layers cached in its default storage (/var/lib/containers/storage, shared by every clone), on a
# debian:bookworm-slim that k8s/image/debian-base.sh makes with mmdebstrap when it is missing.
# CAs this machine added (Debian's place for them: /usr/local/share/ca-certificates, e.g. those of
# a TLS-inspecting proxy) reach the build's downloads as a build secret, never a layer.
K8S_IMAGE_TAG := $(lastword $(subst :, ,$(K8S_IMAGE)))
K8S_IMAGE_DIR := $(STATE)/image
K8S_IMAGE_ARCHIVE := $(K8S_IMAGE_DIR)/sensorstream-$(K8S_IMAGE_TAG).tar
IMAGE_BUILD_CAS ?= $(wildcard /usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt)
IMAGE_BUILD_SECRET = $(if $(strip $(IMAGE_BUILD_CAS)),--secret id=build-ca$(comma)src=$(abspath $(K8S_IMAGE_DIR))/build-ca.pem)
comma := ,
K8S_IMAGE_CONTEXT = git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -c -f -
docker_answers = command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1

.PHONY: image-archive

image: ## build the image (Dockerfile) as sensorstream:<appVersion> (docker, or buildah without Docker)
	@set -euo pipefail; mkdir -p $(K8S_IMAGE_DIR); \
	$(if $(strip $(IMAGE_BUILD_CAS)),cat $(IMAGE_BUILD_CAS) > $(K8S_IMAGE_DIR)/build-ca.pem;) \
	if $(docker_answers); then \
	  echo "==> docker build $(K8S_IMAGE)"; \
	  $(K8S_IMAGE_CONTEXT) | docker build $(IMAGE_BUILD_SECRET) -t $(K8S_IMAGE) -f Dockerfile -; \
	else \
	  command -v buildah >/dev/null 2>&1 || { echo "no Docker engine answers and buildah is missing: start Docker, or apt-get install buildah mmdebstrap"; exit 1; }; \
	  k8s/image/debian-base.sh; \
	  ctx=$$(mktemp -d "$${TMPDIR:-/tmp}/sensorstream-context.XXXXXX"); trap 'rm -rf "$$ctx"' EXIT; \
	  $(K8S_IMAGE_CONTEXT) | tar -x -f - -C "$$ctx"; \
	  echo "==> buildah build $(K8S_IMAGE) (no Docker engine; first build: pyspark from PyPI, several minutes)"; \
	  buildah build --pull=never --isolation chroot --layers --force-rm $(IMAGE_BUILD_SECRET) \
	    -t $(K8S_IMAGE) -f "$$ctx/Dockerfile" "$$ctx"; \
	fi

# A docker-archive of the image for a containerd without a registry: ctr -n k8s.io images import
# FILE (pods with imagePullPolicy IfNotPresent then find it). Written again only when the image id
# changed since the last archive (the id is kept next to it).
image-archive: image ## write the built image to .sensorstream/image/sensorstream-<tag>.tar (for ctr images import)
	@set -euo pipefail; mkdir -p $(K8S_IMAGE_DIR); \
	if command -v buildah >/dev/null 2>&1 && id=$$(buildah inspect --type image --format '{{.FromImageID}}' $(K8S_IMAGE) 2>/dev/null); then \
	  tool=buildah; \
	elif $(docker_answers) && id=$$(docker image inspect --format '{{.Id}}' $(K8S_IMAGE) 2>/dev/null); then \
	  tool=docker; \
	else \
	  echo "image $(K8S_IMAGE) not built yet: run 'make image' (needs Docker, or: apt-get install buildah mmdebstrap)"; exit 1; \
	fi; \
	if [ -f $(K8S_IMAGE_ARCHIVE) ] && [ "$$(cat $(K8S_IMAGE_ARCHIVE).id 2>/dev/null)" = "$$id" ]; then \
	  echo "$(K8S_IMAGE_ARCHIVE) is up to date (image $${id:0:12})"; exit 0; \
	fi; \
	rm -f $(K8S_IMAGE_ARCHIVE) $(K8S_IMAGE_ARCHIVE).id $(K8S_IMAGE_ARCHIVE).part; \
	echo "==> writing $(K8S_IMAGE) (image $${id:0:12}) to $(K8S_IMAGE_ARCHIVE) with $$tool"; \
	if [ $$tool = buildah ]; then \
	  buildah push --quiet $(K8S_IMAGE) docker-archive:$(K8S_IMAGE_ARCHIVE).part:$(K8S_IMAGE); \
	else \
	  docker save -o $(K8S_IMAGE_ARCHIVE).part $(K8S_IMAGE); \
	fi; \
	mv $(K8S_IMAGE_ARCHIVE).part $(K8S_IMAGE_ARCHIVE); echo "$$id" > $(K8S_IMAGE_ARCHIVE).id; \
	echo "import it on a node with: ctr -n k8s.io images import $(K8S_IMAGE_ARCHIVE)"

kind-load: ## load the image into the kind node (no registry needed; needs Docker)
	$(need_docker)
	$(need_kind)
	@docker image inspect $(K8S_IMAGE) >/dev/null 2>&1 || { echo "image $(K8S_IMAGE) not built yet: run 'make image'"; exit 1; }
	$(KIND_BIN) load docker-image $(K8S_IMAGE) --name $(KIND_CLUSTER)

# --- release ----------------------------------------------------------------------------------
deploy: $(HELM) ## install/upgrade the chart (K8S_VALUES=k8s/values-kind.yaml) and wait for the stream
	$(need_cluster)
	@kubectl get crd kafkas.kafka.strimzi.io sparkapplications.sparkoperator.k8s.io >/dev/null 2>&1 || { echo "the operators' CRDs are missing: run 'make operators'"; exit 1; }
	$(HELM) upgrade --install $(K8S_RELEASE) $(K8S_CHART) --namespace $(K8S_NAMESPACE) --create-namespace \
	  --values $(K8S_VALUES)
	@if $(KUBECTL) get kafka/$(K8S_RELEASE) >/dev/null 2>&1; then \
	  echo "==> waiting for Kafka (Strimzi starts the node pool, then the entity operator)"; \
	  $(KUBECTL) wait kafka/$(K8S_RELEASE) --for=condition=Ready --timeout=900s; \
	fi
	@echo "==> waiting for the SparkApplication to be RUNNING"
	@for i in $$(seq 1 90); do \
	  state=$$($(KUBECTL) get sparkapplication $(K8S_RELEASE)-stream -o jsonpath='{.status.applicationState.state}' 2>/dev/null); \
	  echo "   $${state:-not submitted yet}"; \
	  case "$$state" in RUNNING) exit 0;; FAILED|SUBMISSION_FAILED) $(KUBECTL) describe sparkapplication $(K8S_RELEASE)-stream | tail -20; exit 1;; esac; \
	  sleep 10; \
	done; echo "the SparkApplication is not RUNNING after 15 minutes"; exit 1
	@echo "deployed. Follow the windows with 'make logs'; a report now: 'make report-now reports'"

logs: ## follow the stream's window tables in the Spark driver log
	$(need_cluster)
	$(KUBECTL) logs -f $(K8S_DRIVER_POD)

report-now: ## run the report CronJob once, now, and wait for it
	$(need_cluster)
	$(KUBECTL) delete job $(K8S_RELEASE)-report-now --ignore-not-found
	$(KUBECTL) create job --from=cronjob/$(K8S_RELEASE)-report $(K8S_RELEASE)-report-now
	$(KUBECTL) wait job/$(K8S_RELEASE)-report-now --for=condition=complete --timeout=900s
	$(KUBECTL) logs job/$(K8S_RELEASE)-report-now | tail -30

reports: ## copy the latest report out of the reports volume into data/k8s-reports/
	$(need_cluster)
	K8S_NAMESPACE=$(K8S_NAMESPACE) K8S_RELEASE=$(K8S_RELEASE) K8S_IMAGE=$(K8S_IMAGE) k8s/fetch-report.sh data/k8s-reports

undeploy: $(HELM) ## uninstall the chart (claims with checkpoints and reports are kept)
	$(need_cluster)
	-$(HELM) uninstall $(K8S_RELEASE) --namespace $(K8S_NAMESPACE) --wait
	@echo "kept: claims $(K8S_RELEASE)-checkpoints and $(K8S_RELEASE)-reports. Delete them with:"
	@echo "  $(KUBECTL) delete pvc $(K8S_RELEASE)-checkpoints $(K8S_RELEASE)-reports"

# --- checks without a cluster -----------------------------------------------------------------
chart-lint: $(HELM) ## helm lint --strict with the default, kind, minikube and existing-Kafka values
	$(HELM) lint --strict $(K8S_CHART)
	@for v in k8s/values-kind.yaml k8s/values-minikube.yaml k8s/values-existing-kafka.yaml; do \
	  echo "==> $$v"; $(HELM) lint --strict $(K8S_CHART) --values $$v || exit 1; \
	done

rehearse: $(TEST_STAMP) jars $(HELM) ## run the chart's workloads as local processes on the local broker
	HELM=$(HELM) $(PY) k8s/rehearse.py

e2e: $(TEST_STAMP) $(HELM) $(KIND) ## end-to-end on a kind cluster (needs Docker; builds everything)
	$(need_docker)
	HELM=$(HELM) KIND=$(KIND) $(PY) -m pytest -m kind tests/chart/test_kind_e2e.py -v
