{{/* Names, labels and the pieces every workload shares. */}}

{{- define "sensorstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: 63 characters at most (DNS label). */}}
{{- define "sensorstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sensorstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sensorstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sensorstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sensorstream.labels" -}}
helm.sh/chart: {{ include "sensorstream.chart" . }}
{{ include "sensorstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sensorstream
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "producer") */}}
{{- define "sensorstream.componentLabels" -}}
{{ include "sensorstream.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sensorstream.componentSelectorLabels" -}}
{{ include "sensorstream.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sensorstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "sensorstream.configMapName" -}}
{{- printf "%s-settings" (include "sensorstream.fullname" .) }}
{{- end }}

{{- define "sensorstream.checkpointClaim" -}}
{{- printf "%s-checkpoints" (include "sensorstream.fullname" .) }}
{{- end }}

{{- define "sensorstream.reportsClaim" -}}
{{- printf "%s-reports" (include "sensorstream.fullname" .) }}
{{- end }}

{{- define "sensorstream.sparkServiceAccount" -}}
{{- default (printf "%s-spark" (include "sensorstream.fullname" .)) .Values.stream.serviceAccount.name }}
{{- end }}

{{/* Whether this release creates the Strimzi cluster. */}}
{{- define "sensorstream.kafkaCreated" -}}
{{- if and .Values.kafka.enabled (not .Values.kafka.bootstrapServers) }}true{{ end }}
{{- end }}

{{- define "sensorstream.kafkaClusterName" -}}
{{- default (include "sensorstream.fullname" .) .Values.kafka.clusterName | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/* Where the workloads connect: the existing cluster, or the Strimzi bootstrap service. */}}
{{- define "sensorstream.bootstrapServers" -}}
{{- if .Values.kafka.bootstrapServers }}
{{- .Values.kafka.bootstrapServers }}
{{- else }}
{{- printf "%s-kafka-bootstrap.%s.svc:9092" (include "sensorstream.kafkaClusterName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "sensorstream.tlsMountPath" -}}/etc/sensorstream/kafka-tls{{- end }}

{{/* Kafka credentials: env vars that read the referenced Secret (never values). */}}
{{- define "sensorstream.kafkaSecretEnv" -}}
{{- $secret := .Values.kafka.security.credentialsSecret }}
{{- if $secret.name }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ $secret.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ $secret.passwordKey }}
{{- end }}
{{- end }}

{{/* The TLS Secret as a volume, and its mount (only when one is referenced). */}}
{{- define "sensorstream.tlsVolume" -}}
{{- if .Values.kafka.security.tlsSecret.name }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.security.tlsSecret.name }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "sensorstream.tlsVolumeMount" -}}
{{- if .Values.kafka.security.tlsSecret.name }}
- name: kafka-tls
  mountPath: {{ include "sensorstream.tlsMountPath" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "sensorstream.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "sensorstream.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}

{{- define "sensorstream.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}
