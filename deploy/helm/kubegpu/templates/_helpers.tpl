{{/*
Release-scoped name prefix: the release name, or release-chart when the
release name does not already contain the chart name. A release named
"kubegpu" gives kubegpu-device-plugin, kubegpu-scheduler, kubegpu-scaler.
*/}}
{{- define "kubegpu.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubegpu.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubegpu
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (list $ "component"). */}}
{{- define "kubegpu.selectorLabels" -}}
{{- $top := index . 0 -}}
app.kubernetes.io/name: {{ $top.Chart.Name }}
app.kubernetes.io/instance: {{ $top.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component; call with (list $ "component"). */}}
{{- define "kubegpu.componentLabels" -}}
{{ include "kubegpu.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Image reference; call with (list $ .Values.component.image). */}}
{{- define "kubegpu.image" -}}
{{- $top := index . 0 -}}
{{- $img := index . 1 -}}
{{- $tag := $img.tag | default $top.Values.image.tag | default $top.Chart.AppVersion -}}
{{- printf "%s/%s:%s" $top.Values.image.registry $img.name $tag -}}
{{- end -}}

{{/*
Container security context for components that need nothing from the
host: non-root, read-only root filesystem, no capabilities, no privilege
escalation, the runtime's default seccomp profile.
*/}}
{{- define "kubegpu.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
