{{/*
The chart name, overridable by nameOverride.
*/}}
{{- define "fedmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A default fully qualified app name, truncated at 63 characters (DNS label limit).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "fedmesh.fullname" -}}
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

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "fedmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The recommended labels of every object.
*/}}
{{- define "fedmesh.labels" -}}
helm.sh/chart: {{ include "fedmesh.chart" . }}
{{ include "fedmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fedmesh
{{- end }}

{{/*
Selector labels of every pod of this release.
*/}}
{{- define "fedmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The full name of one component. Call with (dict "root" $ "component" "coordinator").
*/}}
{{- define "fedmesh.componentName" -}}
{{- printf "%s-%s" (include "fedmesh.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of one component's objects. Call with (dict "root" $ "component" "coordinator").
*/}}
{{- define "fedmesh.componentLabels" -}}
{{ include "fedmesh.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component's pods. Call with (dict "root" $ "component" "coordinator").
*/}}
{{- define "fedmesh.componentSelectorLabels" -}}
{{ include "fedmesh.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The ServiceAccount of one component. Call with (dict "root" $ "component" "coordinator").
*/}}
{{- define "fedmesh.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}
{{- include "fedmesh.componentName" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/*
The fedmesh image reference.
*/}}
{{- define "fedmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The gRPC services of the chart, in start order.
*/}}
{{- define "fedmesh.services" -}}
{{- list "registry" "alerting" "aggregator" "coordinator" | toJson }}
{{- end }}

{{/*
host:port of one component's Service. Call with (dict "root" $ "component" "coordinator").
*/}}
{{- define "fedmesh.address" -}}
{{- printf "%s:%v" (include "fedmesh.componentName" .) (index .root.Values .component).port }}
{{- end }}

{{/*
The internal Redis StatefulSet's name.
*/}}
{{- define "fedmesh.redisName" -}}
{{- include "fedmesh.componentName" (dict "root" . "component" "redis") }}
{{- end }}

{{/*
Refuses contradictory Redis settings: exactly one of internal, url, existingSecret.
*/}}
{{- define "fedmesh.validateRedis" -}}
{{- $r := .Values.redis }}
{{- if and $r.internal.enabled (or $r.url $r.existingSecret) }}
{{- fail "redis: set redis.internal.enabled=false to use redis.url or redis.existingSecret" }}
{{- end }}
{{- if and (not $r.internal.enabled) (not (or $r.url $r.existingSecret)) }}
{{- fail "redis: with redis.internal.enabled=false, set redis.url or redis.existingSecret" }}
{{- end }}
{{- if and $r.url $r.existingSecret }}
{{- fail "redis: set redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- end }}

{{/*
The FEDMESH_REDIS_URL entry of a container's env.
*/}}
{{- define "fedmesh.redisEnv" -}}
{{- include "fedmesh.validateRedis" . }}
- name: FEDMESH_REDIS_URL
{{- if .Values.redis.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.url }}
  value: {{ .Values.redis.url | quote }}
{{- else }}
  value: {{ printf "redis://%s:6379/0" (include "fedmesh.redisName" .) | quote }}
{{- end }}
{{- end }}

{{/*
The env every fedmesh container gets: peers, telemetry, logging, TLS files.
*/}}
{{- define "fedmesh.commonEnv" -}}
{{- $root := . }}
{{- range $component := include "fedmesh.services" $root | fromJsonArray }}
- name: {{ printf "FEDMESH_%s_ADDRESS" (upper $component) }}
  value: {{ include "fedmesh.address" (dict "root" $root "component" $component) | quote }}
{{- end }}
{{- with .Values.config.otlpEndpoint }}
- name: FEDMESH_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: FEDMESH_METRICS_PORT
  value: {{ .Values.config.metricsPort | quote }}
- name: FEDMESH_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
{{- if ne .Values.tls.mode "none" }}
- name: FEDMESH_TLS_CERT
  value: {{ printf "%s/tls.crt" .Values.tls.mountPath | quote }}
- name: FEDMESH_TLS_KEY
  value: {{ printf "%s/tls.key" .Values.tls.mountPath | quote }}
- name: FEDMESH_TLS_CA
  value: {{ printf "%s/ca.crt" .Values.tls.mountPath | quote }}
- name: FEDMESH_TRUST_DOMAIN
  value: {{ .Values.tls.trustDomain | quote }}
{{- end }}
{{- end }}

{{/*
The SPIFFE ID of one component: spiffe://<trust domain>/service/<component>, the identity
the services' per-RPC authorization expects of it (docs/security.md).
Call with (dict "root" $ "component" "coordinator").
*/}}
{{- define "fedmesh.spiffeId" -}}
{{- printf "spiffe://%s/service/%s" .root.Values.tls.trustDomain .component }}
{{- end }}

{{/*
One gRPC health probe. Call with (dict "root" $ "component" "coordinator" "probe" <timings> "service" "").
Native gRPC without TLS; with TLS an exec of the image's health check with the pod's certificate.
*/}}
{{- define "fedmesh.grpcProbe" -}}
{{- $port := (index .root.Values .component).port }}
{{- if eq .root.Values.tls.mode "none" }}
grpc:
  port: {{ $port }}
  service: {{ .service | quote }}
{{- else }}
exec:
  command:
    - python
    - /opt/fedmesh/grpc_health_check.py
    - --address
    - {{ printf "127.0.0.1:%v" $port | quote }}
    - --server-name
    - {{ include "fedmesh.componentName" . | quote }}
    - --service
    - {{ .service | quote }}
{{- end }}
{{ toYaml .probe }}
{{- end }}
