#!/usr/bin/env bash
# Copy the latest report folder out of the reports volume (make reports).
#   k8s/fetch-report.sh [DEST]      (default DEST: data/k8s-reports)
# The CronJob's pods are gone when it finishes, so a short-lived helper pod mounts the reports
# claim, and `kubectl cp` copies the newest time-stamped folder (names sort by time).
# Settings: K8S_NAMESPACE (sensorstream), K8S_RELEASE (sensorstream), K8S_IMAGE (sensorstream:0.1.0).
set -euo pipefail

dest="${1:-data/k8s-reports}"
ns="${K8S_NAMESPACE:-sensorstream}"
release="${K8S_RELEASE:-sensorstream}"
image="${K8S_IMAGE:-sensorstream:0.1.0}"
claim="${release}-reports"
pod="${release}-fetch-report"

command -v kubectl >/dev/null || { echo "missing: kubectl (https://kubernetes.io/docs/tasks/tools/)"; exit 1; }
kubectl -n "$ns" get pvc "$claim" >/dev/null 2>&1 || {
  echo "no claim $claim in namespace $ns: is the chart installed ('make deploy')?"; exit 1; }

cleanup() { kubectl -n "$ns" delete pod "$pod" --ignore-not-found --wait=false >/dev/null; }
trap cleanup EXIT
cleanup
kubectl -n "$ns" wait pod/"$pod" --for=delete --timeout=60s >/dev/null 2>&1 || true

kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: ${pod}
  labels:
    app.kubernetes.io/name: sensorstream
    app.kubernetes.io/instance: ${release}
    app.kubernetes.io/component: fetch-report
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 185
    runAsGroup: 185
    fsGroup: 185
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: fetch
      image: ${image}
      imagePullPolicy: IfNotPresent
      command: ["sleep", "600"]
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
      volumeMounts:
        - {name: reports, mountPath: /reports, readOnly: true}
  volumes:
    - name: reports
      persistentVolumeClaim: {claimName: ${claim}, readOnly: true}
YAML
kubectl -n "$ns" wait pod/"$pod" --for=condition=Ready --timeout=180s >/dev/null

latest="$(kubectl -n "$ns" exec "$pod" -- ls -1 /reports | grep -E '^[0-9]{8}T[0-9]{6}Z$' | tail -n 1 || true)"
if [ -z "$latest" ]; then
  echo "no report in the volume yet: run one with 'make report-now' (or wait for the CronJob)"; exit 1
fi
mkdir -p "$dest"
kubectl -n "$ns" cp "$ns/$pod:/reports/$latest" "$dest/$latest" >/dev/null
echo "latest report: $dest/$latest"
ls -1 "$dest/$latest" | sed 's/^/  /'
