{{/* The chart's name, or nameOverride. */}}
{{- define "tickwire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: fullnameOverride, or release-chart (once). */}}
{{- define "tickwire.fullname" -}}
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

{{/* Labels on every object of the broker. */}}
{{- define "tickwire.labels" -}}
{{ include "tickwire.commonLabels" . }}
app.kubernetes.io/component: broker
{{- end }}

{{/* Labels on every object, without the component. */}}
{{- define "tickwire.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tickwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the broker pods. */}}
{{- define "tickwire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tickwire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "tickwire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tickwire.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Whether the chart makes the <fullname>-auth Secret. */}}
{{- define "tickwire.authSecret" -}}
{{- if or .Values.auth.jwt.hmacSecret .Values.auth.apiKeys.content (and .Values.cluster.enabled .Values.cluster.url) }}true{{ end }}
{{- end }}

{{/* Whether the <fullname>-auth Secret holds files to mount. */}}
{{- define "tickwire.authFiles" -}}
{{- if or .Values.auth.jwt.hmacSecret .Values.auth.apiKeys.content }}true{{ end }}
{{- end }}

{{/* The config file: the chart's own settings, then .Values.config, then
     the [[topic]] tables. Values are written as JSON, which is valid TOML
     for strings, numbers, booleans and arrays of strings. */}}
{{- define "tickwire.config" -}}
# Rendered by the tickwire Helm chart; docs/configuration.md describes every key.
listen = {{ printf "0.0.0.0:%d" (int .Values.ports.ws) | quote }}
metrics_listen = {{ printf "0.0.0.0:%d" (int .Values.ports.metrics) | quote }}
shutdown_delay = {{ printf "%ds" (int .Values.shutdown.delaySeconds) | quote }}
shutdown_grace = {{ printf "%ds" (int .Values.shutdown.graceSeconds) | quote }}
{{- if .Values.tls.enabled }}
tls_cert_file = "/etc/tickwire/tls/tls.crt"
tls_key_file = "/etc/tickwire/tls/tls.key"
{{- if .Values.tls.clientCA.existingSecret }}
tls_client_ca_file = {{ printf "/etc/tickwire/client-ca/%s" .Values.tls.clientCA.key | quote }}
{{- if .Values.tls.clientCA.grantsKey }}
tls_client_grants_file = {{ printf "/etc/tickwire/client-ca/%s" .Values.tls.clientCA.grantsKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- $hmac := list }}
{{- if .Values.auth.jwt.hmacSecret }}
{{- $hmac = append $hmac "/etc/tickwire/auth/jwt-hmac-secret" }}
{{- end }}
{{- range .Values.auth.jwt.hmacSecretKeys }}
{{- $hmac = append $hmac (printf "/etc/tickwire/jwt/%s" .) }}
{{- end }}
{{- if $hmac }}
jwt_hmac_secret_file = {{ toJson $hmac }}
{{- end }}
{{- with .Values.auth.jwt.publicKeyKeys }}
jwt_public_key_file = {{ include "tickwire.paths" (dict "dir" "/etc/tickwire/jwt" "keys" .) }}
{{- end }}
{{- with .Values.auth.jwt.jwksKeys }}
jwks_file = {{ include "tickwire.paths" (dict "dir" "/etc/tickwire/jwt" "keys" .) }}
{{- end }}
{{- if .Values.auth.apiKeys.content }}
api_key_file = "/etc/tickwire/auth/api-keys"
{{- else if .Values.auth.apiKeys.existingSecret }}
api_key_file = {{ printf "/etc/tickwire/api-keys/%s" .Values.auth.apiKeys.key | quote }}
{{- end }}
{{- with .Values.cluster.tls }}
{{- if and $.Values.cluster.enabled .existingSecret }}
{{- if .caKey }}
cluster_ca_file = {{ printf "/etc/tickwire/cluster-tls/%s" .caKey | quote }}
{{- end }}
{{- if and .certKey .keyKey }}
cluster_cert_file = {{ printf "/etc/tickwire/cluster-tls/%s" .certKey | quote }}
cluster_key_file = {{ printf "/etc/tickwire/cluster-tls/%s" .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key := keys .Values.config | sortAlpha }}
{{ $key }} = {{ toJson (get $.Values.config $key) }}
{{- end }}
{{- range .Values.topics }}

[[topic]]
{{- $topic := . }}
{{- range $key := keys $topic | sortAlpha }}
{{ $key }} = {{ toJson (get $topic $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A JSON array of dir/key paths. */}}
{{- define "tickwire.paths" -}}
{{- $paths := list }}
{{- range .keys }}
{{- $paths = append $paths (printf "%s/%s" $.dir .) }}
{{- end }}
{{- toJson $paths }}
{{- end }}
