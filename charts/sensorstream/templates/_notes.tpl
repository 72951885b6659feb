{{/* The text of NOTES.txt, as a named template so tests can render it without a cluster. */}}
{{- define "sensorstream.notes" -}}
{{- $ns := .Release.Namespace }}
{{- $fullname := include "sensorstream.fullname" . }}
sensorstream {{ .Chart.AppVersion }} is installed in namespace {{ $ns }}.

Kafka: {{ include "sensorstream.bootstrapServers" . }}
{{- if include "sensorstream.kafkaCreated" . }}
  Strimzi creates the cluster "{{ include "sensorstream.kafkaClusterName" . }}" (a few minutes); wait for it:
    kubectl -n {{ $ns }} wait kafka/{{ include "sensorstream.kafkaClusterName" . }} --for=condition=Ready --timeout=600s
{{- end }}
  Topics: {{ .Values.topics.input.name }} (readings), {{ .Values.topics.output.name }} (window stats), {{ .Values.topics.deadLetter.name }} (rejects), {{ .Values.topics.alerts.name }} (the detector's alerts)
{{- if .Values.kafka.manageTopics }}
    kubectl -n {{ $ns }} get kafkatopics -l app.kubernetes.io/instance={{ .Release.Name }}
{{- end }}
{{- if .Values.stream.enabled }}

Follow the streaming windows (the console table in the Spark driver's log):
  kubectl -n {{ $ns }} get sparkapplication {{ $fullname }}-stream      # wait for RUNNING
  kubectl -n {{ $ns }} logs -f {{ $fullname }}-stream-driver
The first table appears after the first micro-batch with readings ({{ .Values.stream.trigger }} trigger);
a window's row is updated until the watermark ({{ .Values.stream.watermark }}) closes it.
{{- if .Values.stream.detect.enabled }}
The detector's alerts (which sensor, what is wrong): that log's lines starting with "alert:", and
every alert on the topic {{ .Values.topics.alerts.name }}.
{{- end }}
{{- end }}
{{- if .Values.producer.enabled }}

Producer:
  kubectl -n {{ $ns }} logs -f deployment/{{ $fullname }}-producer
{{- end }}
{{- if .Values.report.enabled }}

Reports: the CronJob runs "{{ .Values.report.schedule }}". Run one now and wait for it:
  kubectl -n {{ $ns }} create job --from=cronjob/{{ $fullname }}-report {{ $fullname }}-report-manual
  kubectl -n {{ $ns }} wait job/{{ $fullname }}-report-manual --for=condition=complete --timeout=900s
  kubectl -n {{ $ns }} logs job/{{ $fullname }}-report-manual        # the report table
Fetch the latest report folder from the reports volume to ./data/k8s-reports/:
  make reports                                    (from the repository; or by hand:)
  kubectl -n {{ $ns }} run {{ $fullname }}-fetch --image={{ include "sensorstream.image" . }} --restart=Never \
    --overrides='{{ include "sensorstream.fetchPodOverrides" . }}'
  kubectl -n {{ $ns }} wait pod/{{ $fullname }}-fetch --for=condition=Ready
  latest=$(kubectl -n {{ $ns }} exec {{ $fullname }}-fetch -- ls -1 /reports | grep -E '^[0-9]{8}T[0-9]{6}Z$' | tail -n 1)
  mkdir -p data/k8s-reports && kubectl -n {{ $ns }} cp {{ $ns }}/{{ $fullname }}-fetch:/reports/$latest ./data/k8s-reports/$latest
  kubectl -n {{ $ns }} delete pod {{ $fullname }}-fetch
{{- end }}
{{- if .Values.tests.enabled }}

Check the connection and the topics: helm test {{ .Release.Name }} -n {{ $ns }}
{{- end }}
{{- end }}

{{/* The spec of the report-fetching pod NOTES.txt prints (kubectl run --overrides): the workloads'
security contexts, so a namespace enforcing the `restricted` Pod Security Standard admits it. */}}
{{- define "sensorstream.fetchPodOverrides" -}}
{{- $image := include "sensorstream.image" . }}
{{- $claim := include "sensorstream.reportsClaim" . }}
{{- $container := dict "name" "fetch" "image" $image "command" (list "sleep" "600")
      "securityContext" .Values.containerSecurityContext
      "volumeMounts" (list (dict "name" "r" "mountPath" "/reports" "readOnly" true)) }}
{{- $spec := dict "automountServiceAccountToken" false "securityContext" .Values.podSecurityContext
      "volumes" (list (dict "name" "r" "persistentVolumeClaim" (dict "claimName" $claim "readOnly" true)))
      "containers" (list $container) }}
{{- toJson (dict "spec" $spec) }}
{{- end }}
