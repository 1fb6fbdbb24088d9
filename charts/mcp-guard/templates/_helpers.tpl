{{/*
Chart name, truncated to the 63 characters Kubernetes allows in a label value.
*/}}
{{- define "mcp-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-mcp-guard", or just the release name when it already contains the chart name.
Truncated so that the longest derived name ("<fullname>-webhook-tls") stays within 63 characters.
*/}}
{{- define "mcp-guard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mcp-guard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcp-guard.labels" -}}
helm.sh/chart: {{ include "mcp-guard.chart" . }}
{{ include "mcp-guard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcp-guard
{{- end }}

{{- /* The webhook-check hook's objects: the chart's labels, with a component of their own (never the operator's
  selector, so that no Service or PodDisruptionBudget of the operator ever counts the hook's pod). */}}
{{- define "mcp-guard.webhookCheckLabels" -}}
helm.sh/chart: {{ include "mcp-guard.chart" . }}
app.kubernetes.io/name: {{ include "mcp-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook-check
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcp-guard
{{- end }}

{{- define "mcp-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mcp-guard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcp-guard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mcp-guard.webhookServiceName" -}}
{{- printf "%s-webhook" (include "mcp-guard.fullname" .) }}
{{- end }}

{{- define "mcp-guard.adminServiceName" -}}
{{- printf "%s-admin" (include "mcp-guard.fullname" .) }}
{{- end }}

{{- define "mcp-guard.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "mcp-guard.fullname" .) }}
{{- end }}

{{/*
"repository:tag" or "repository@digest"; the tag defaults to the chart's appVersion.
Usage: include "mcp-guard.image" (dict "image" .Values.image "context" $)
*/}}
{{- define "mcp-guard.image" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .context.Chart.AppVersion $image.tag | toString) }}
{{- end }}
{{- end }}

{{- define "mcp-guard.operatorImage" -}}
{{- include "mcp-guard.image" (dict "image" .Values.image "context" .) }}
{{- end }}

{{- define "mcp-guard.sidecarImage" -}}
{{- include "mcp-guard.image" (dict "image" .Values.policy.sidecar.image "context" .) }}
{{- end }}

{{/*
The DNS names of the webhook Service, for the serving certificate.
*/}}
{{- define "mcp-guard.webhookDNSNames" -}}
{{- $svc := include "mcp-guard.webhookServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) }}
{{- concat $names .Values.webhook.certificate.extraDNSNames | uniq | toJson }}
{{- end }}

{{/*
The mutating webhook's failure policy: its own value, or the policy's injection failure policy.
*/}}
{{- define "mcp-guard.mutatingFailurePolicy" -}}
{{- default .Values.policy.injection.failurePolicy .Values.webhook.mutating.failurePolicy }}
{{- end }}

{{/*
Namespaces the mutating webhook never sees: the configured list plus the release namespace.
*/}}
{{- define "mcp-guard.excludedNamespaces" -}}
{{- append .Values.webhook.mutating.excludeNamespaces .Release.Namespace | uniq | toJson }}
{{- end }}

{{/*
clientConfig for one webhook path. Usage: include "mcp-guard.webhookClientConfig" (dict "path" "/mutate-pods" "caBundle" $ca "context" $)
*/}}
{{- define "mcp-guard.webhookClientConfig" -}}
{{- $ctx := .context }}
{{- if $ctx.Values.webhook.externalURL }}
url: {{ printf "%s%s" (trimSuffix "/" $ctx.Values.webhook.externalURL) .path | quote }}
{{- else }}
service:
  name: {{ include "mcp-guard.webhookServiceName" $ctx }}
  namespace: {{ $ctx.Release.Namespace }}
  path: {{ .path }}
  port: {{ $ctx.Values.webhook.service.port }}
{{- end }}
{{- if .caBundle }}
caBundle: {{ .caBundle }}
{{- end }}
{{- end }}
