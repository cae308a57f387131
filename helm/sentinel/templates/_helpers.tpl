{{/* Names and labels, defined once. */}}
{{- define "sentinel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sentinel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sentinel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sentinel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sentinel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sentinel.labels" -}}
helm.sh/chart: {{ include "sentinel.chart" . }}
{{ include "sentinel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sentinel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sentinel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sentinel.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "sentinel.fullname" .) -}}
{{- end -}}

{{/* The container port: the port of config.api.listen. */}}
{{- define "sentinel.port" -}}
{{- dig "api" "listen" "0.0.0.0:8080" .Values.config | splitList ":" | last -}}
{{- end -}}

{{/*
The secrets the daemon reads, as a YAML list of {value, key, env}: `value` names the key under
.Values.secrets, `key` the key in the Secret, `env` the variable the daemon reads (the names the
config's *_env keys give). With an existing Secret every entry is listed (and optional); else
only those given a value.
*/}}
{{- define "sentinel.secretItems" -}}
{{- $s := .Values.secrets -}}
{{- $all := list
  (dict "value" "apiToken" "key" "api-token" "env" (dig "api" "token_env" "SENTINEL_API_TOKEN" .Values.config))
  (dict "value" "kafkaPassword" "key" "kafka-password" "env" (dig "kafka" "sasl_password_env" "SENTINEL_KAFKA_PASSWORD" .Values.config))
  (dict "value" "webhookSecret" "key" "webhook-secret" "env" "SENTINEL_WEBHOOK_SECRET")
  (dict "value" "webhookUrl" "key" "webhook-url" "env" "SENTINEL_WEBHOOK_URL")
  (dict "value" "storeUrl" "key" "store-url" "env" "SENTINEL_STORE__URL")
  (dict "value" "sessionSecret" "key" "session-secret" "env" (dig "api" "session_secret_env" "SENTINEL_SESSION_SECRET" .Values.config)) -}}
{{- $out := list -}}
{{- range $all -}}
{{- if or $s.existingSecret (get $s .value) (and (eq .value "sessionSecret") (gt (int $.Values.replicaCount) 1)) -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
The example pair shipped in the image (pip installs the package under /opt/venv: deploy/Dockerfile).
Used only when config.pairs is empty: as a default in values.yaml Helm would merge it into the
user's own pairs instead of replacing it.
*/}}
{{- define "sentinel.examplePairs" -}}
triage:
  baseline: {path: /opt/venv/lib/python3.11/site-packages/sentinel/examples/triage/baseline.pt2, runtime: torch, threads: 1}
  candidate: {path: /opt/venv/lib/python3.11/site-packages/sentinel/examples/triage/candidate.int8.onnx, runtime: onnxruntime, threads: 1}
  classes: [malignant, benign]
  critical_classes: [malignant]
{{- end -}}

{{/* sentinel.yaml: .Values.config, the example pair when it has none, and kafka.sasl_password_env
when a Kafka password is provided. */}}
{{- define "sentinel.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if not $cfg.pairs -}}
{{- $_ := set $cfg "pairs" (include "sentinel.examplePairs" . | fromYaml) -}}
{{- end -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.kafkaPassword -}}
{{- $kafka := deepCopy (get $cfg "kafka" | default dict) -}}
{{- $_ := set $kafka "sasl_password_env" (dig "kafka" "sasl_password_env" "SENTINEL_KAFKA_PASSWORD" .Values.config) -}}
{{- $_ := set $cfg "kafka" $kafka -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
The key console sessions are signed with. Several replicas must share it (a user signed in on one
pod is signed in on all): secrets.sessionSecret, else the one this release's Secret already holds
(kept across upgrades), else a new random one.
*/}}
{{- define "sentinel.sessionSecret" -}}
{{- if .Values.secrets.sessionSecret -}}
{{- .Values.secrets.sessionSecret -}}
{{- else -}}
{{- $old := lookup "v1" "Secret" .Release.Namespace (include "sentinel.secretName" .) -}}
{{- if and $old $old.data (hasKey $old.data "session-secret") -}}
{{- index $old.data "session-secret" | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- end -}}
