#!/usr/bin/env bash
# The Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, ...) for the chart tests, generated
# from the operator's published Go API module with controller-gen, the way its release generates
# them: both come from the Go module proxy, so nothing is fetched from anywhere else, and only
# at build time (`make crds`, which `make test` runs). The tests read the folder like ../shared/crds.
#
#   k8s/monitoring-crds.sh OUT_DIR
set -euo pipefail
out="$(realpath -m "${1:?usage: $0 OUT_DIR}")"
PROMETHEUS_OPERATOR_VERSION=v0.87.0
CONTROLLER_TOOLS_VERSION=v0.19.0
api=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring

command -v go >/dev/null 2>&1 || { echo "missing: go (needed to generate the Prometheus Operator CRDs). Install Go 1.24+ (apt-get install golang-go, or https://go.dev/doc/install)"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > go.mod <<MOD
module sensorstream/crds

go 1.24
MOD
printf 'package crds\n\nimport _ "%s/v1"\n' "$api" > crds.go
GOFLAGS=-mod=mod go get "$api@$PROMETHEUS_OPERATOR_VERSION" 2>/dev/null
dir="$(go list -m -f '{{.Dir}}' "$api")"
mkdir -p "$work/out"
GOFLAGS=-mod=mod go run "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION" \
  crd:crdVersions=v1,allowDangerousTypes=true,maxDescLen=0 paths="$dir/v1/..." output:crd:dir="$work/out"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$work/out" "$out"
echo "Prometheus Operator $PROMETHEUS_OPERATOR_VERSION CRDs in $out"
