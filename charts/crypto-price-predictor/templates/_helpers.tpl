{{/*
Expand the name of the chart.
*/}}
{{- define "crypto-price-predictor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A default fully qualified app name, truncated at 63 chars (some Kubernetes name fields are limited to this).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "crypto-price-predictor.fullname" -}}
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
Chart name and version as used by the chart label.
*/}}
{{- define "crypto-price-predictor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "crypto-price-predictor.labels" -}}
helm.sh/chart: {{ include "crypto-price-predictor.chart" . }}
{{ include "crypto-price-predictor.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crypto-price-predictor
{{- end }}

{{/*
Selector labels (stable across upgrades: never add to these).
*/}}
{{- define "crypto-price-predictor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crypto-price-predictor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "crypto-price-predictor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crypto-price-predictor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image reference.
*/}}
{{- define "crypto-price-predictor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Name of the metrics Service; also the `job` label a ServiceMonitor gives the operator's target.
*/}}
{{- define "crypto-price-predictor.metricsServiceName" -}}
{{- printf "%s-metrics" (include "crypto-price-predictor.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
RBAC rules for the namespaced resources the operator reads and writes (shared by the ClusterRole of
cluster-wide mode and the per-namespace Roles).
*/}}
{{- define "crypto-price-predictor.namespacedRules" -}}
# TrainingRuns: watch them, add finalizers/annotations, and kopf's handler bookkeeping; create and delete: the
# trial runs of TrainingSweeps and the runs of TrainingSchedules.
- apiGroups: ["cryptopredictor.dev"]
  resources: ["trainingruns"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Phase, conditions, progress. Holding get/patch here is also what lets the operator create each run's Role
# granting its pod `get, patch` on trainingruns/status (RBAC forbids granting what you do not hold).
- apiGroups: ["cryptopredictor.dev"]
  resources: ["trainingruns/status"]
  verbs: ["get", "patch", "update"]
# TrainingSweeps: watch them, kopf's annotations; their status holds the trials, the leaderboard and the best run.
- apiGroups: ["cryptopredictor.dev"]
  resources: ["trainingsweeps"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["cryptopredictor.dev"]
  resources: ["trainingsweeps/status"]
  verbs: ["get", "patch", "update"]
# TrainingSchedules: watch them, kopf's annotations; their status holds the last tick, the active runs and the
# current model. Their runs are TrainingRuns (create, delete: above).
- apiGroups: ["cryptopredictor.dev"]
  resources: ["trainingschedules"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["cryptopredictor.dev"]
  resources: ["trainingschedules/status"]
  verbs: ["get", "patch", "update"]
# The training Job of each run.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Pod state: Unschedulable, ImagePullBackOff, OOMKilled, exit codes. delete: a gang restart removes the pods of
# the failed attempt (and a deleted run's, where no garbage collector does).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# The headless Service through which the workers of a multi-worker run find each other.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The checkpoint PersistentVolumeClaim of each run without an S3 store (created with it, deleted with it).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "delete"]
# Kubernetes events about runs (kopf posts to the core API; the events.k8s.io API for newer clients).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Per-run pod identity: a ServiceAccount, and a Role + RoleBinding that may only patch that run's status.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}

{{/*
RBAC rules for cluster-scoped resources kopf reads.
*/}}
{{- define "crypto-price-predictor.crdRules" -}}
# kopf scans CRDs to resolve the TrainingRun resource.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}
