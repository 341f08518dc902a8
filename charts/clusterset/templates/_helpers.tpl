{{/*
Names are fixed, the same as config/ installs, so that a cluster can move
between `kubectl apply -k config/overlays/...` and this chart, and so that the
controller's leader election Lease (clusterset-controller) and the Secret
written by `kubectl clusterset join` keep their names.
*/}}
{{- define "clusterset.name" -}}clusterset-controller{{- end -}}

{{- define "clusterset.selectorLabels" -}}
app.kubernetes.io/name: clusterset-controller
{{- end -}}

{{- define "clusterset.labels" -}}
{{ include "clusterset.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: clusterset
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "clusterset.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
