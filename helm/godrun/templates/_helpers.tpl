{{/* Chart name (nameOverride wins). */}}
{{- define "godrun.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full object name: fullnameOverride, else <release>-<name>, else <release> when it already holds the name. */}}
{{- define "godrun.fullname" -}}
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

{{- define "godrun.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object but its component. */}}
{{- define "godrun.baseLabels" -}}
helm.sh/chart: {{ include "godrun.chart" . }}
app.kubernetes.io/name: {{ include "godrun.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: godrun
{{- end }}

{{/* Standard labels on every object (component: controller). */}}
{{- define "godrun.labels" -}}
{{ include "godrun.baseLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Release labels added to the generated CRD (it already carries app.kubernetes.io/name and part-of). */}}
{{- define "godrun.crdLabels" -}}
{{- $skip := list "app.kubernetes.io/name" "app.kubernetes.io/part-of" "app.kubernetes.io/component" }}
{{- $lines := list }}
{{- range $k, $v := (include "godrun.labels" . | fromYaml) }}
{{- if not (has $k $skip) }}
{{- $lines = append $lines (printf "    %s: %s" $k ($v | toString | quote)) }}
{{- end }}
{{- end }}
{{- join "\n" $lines }}
{{- end }}

{{/* Selector labels of the controller pods (stable across upgrades). */}}
{{- define "godrun.selectorLabels" -}}
app.kubernetes.io/name: {{ include "godrun.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "godrun.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "godrun.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Controller image: digest when given, else tag (default: appVersion). */}}
{{- define "godrun.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespace the controller watches; "" = all namespaces (cluster-wide RBAC only). */}}
{{- define "godrun.watchNamespace" -}}
{{- if .Values.watchNamespace }}
{{- .Values.watchNamespace }}
{{- else if not .Values.rbac.clusterWide }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Labels of the Prometheus Operator objects (release label for its selectors). */}}
{{- define "godrun.monitoringLabels" -}}
{{ include "godrun.labels" . }}
{{- with .Values.monitoring.release }}
release: {{ . | quote }}
{{- end }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Exactly the verbs godrun/controller calls (tests/test_deploy_manifests.py derives them from the code). */}}
{{- define "godrun.rbacRules" -}}
- apiGroups: ["godrun.io"]
  resources: ["godruns"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["godrun.io"]
  resources: ["godruns/status"]
  verbs: ["update"]
- apiGroups: ["godrun.io"]
  resources: ["godruns/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
{{- if eq .Values.controller.progressSource "proxy" }}
# --progress-source=proxy reads the trainer's metrics through the API server's pod proxy.
- apiGroups: [""]
  resources: ["pods/proxy"]
  verbs: ["get"]
{{- end }}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Security contexts come from values (restricted Pod Security by default). */}}
{{- define "godrun.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{- define "godrun.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
