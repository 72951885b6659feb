{{/*
Rules that span several values. values.schema.json checks each value on its own; these fail the
render with a message that names the values and the fix. Included once, from configmap.yaml.
*/}}
{{- define "sensorstream.validate" -}}
{{- $k := .Values.kafka }}
{{- $sec := $k.security }}
{{- if and $k.enabled $k.bootstrapServers }}
{{- fail (printf "kafka.bootstrapServers is set (%s), so the workloads use an existing cluster: set kafka.enabled=false too (see k8s/values-existing-kafka.yaml)" $k.bootstrapServers) }}
{{- end }}
{{- if and (not $k.enabled) (not $k.bootstrapServers) }}
{{- fail "kafka.enabled=false needs kafka.bootstrapServers (host:port of the existing cluster)" }}
{{- end }}
{{- if and $k.enabled (ne $sec.protocol "PLAINTEXT") }}
{{- fail (printf "kafka.security.protocol=%s applies to an existing cluster; the chart's own Kafka (kafka.enabled=true) has a plain listener only" $sec.protocol) }}
{{- end }}
{{- if hasPrefix "SASL" $sec.protocol }}
{{- if not $sec.saslMechanism }}
{{- fail (printf "kafka.security.protocol=%s needs kafka.security.saslMechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" $sec.protocol) }}
{{- end }}
{{- if not $sec.credentialsSecret.name }}
{{- fail (printf "kafka.security.protocol=%s needs kafka.security.credentialsSecret.name: a Secret with the SASL user name and password" $sec.protocol) }}
{{- end }}
{{- end }}
{{- if ne (empty $sec.tlsSecret.certKey) (empty $sec.tlsSecret.keyKey) }}
{{- fail "kafka.security.tlsSecret.certKey and keyKey go together (mutual TLS): set both or neither" }}
{{- end }}
{{- if and $sec.tlsSecret.name (not (hasSuffix "SSL" $sec.protocol)) }}
{{- fail (printf "kafka.security.tlsSecret.name is set but kafka.security.protocol=%s does not use TLS (use SSL or SASL_SSL)" $sec.protocol) }}
{{- end }}
{{- if include "sensorstream.kafkaCreated" . }}
{{- range $role, $topic := .Values.topics }}
{{- if gt (int $topic.replicas) (int $k.replicas) }}
{{- fail (printf "topics.%s.replicas=%d exceeds kafka.replicas=%d: a topic cannot have more replicas than brokers" $role (int $topic.replicas) (int $k.replicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- $p := .Values.producer }}
{{- if and $p.enabled (gt (float64 $p.rate) 0.0) }}
{{- if ge (divf 1 $p.rate) (float64 $p.heartbeatMaxAgeSeconds) }}
{{- fail (printf "producer.heartbeatMaxAgeSeconds=%v is not longer than the gap between readings at producer.rate=%v/s: the liveness probe would restart a healthy producer" $p.heartbeatMaxAgeSeconds $p.rate) }}
{{- end }}
{{- end }}
{{- end }}
