{{- define "migration-console.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "migration-console.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Environment shared by the hook Job and the console: secrets by reference only. */}}
{{- define "migration-console.env" -}}
- name: DB_DSN
  valueFrom:
    secretKeyRef: {name: {{ .Values.existingSecret }}, key: DB_DSN}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.existingSecret }}, key: DATABASE_URL}
- name: DJANGO_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.existingSecret }}, key: DJANGO_SECRET_KEY}
{{- if .Values.migrationsConfigMap }}
- name: MIGRATIONS_PATH
  value: /migrations
{{- end }}
{{- end -}}

{{- define "migration-console.migrationsVolume" -}}
{{- if .Values.migrationsConfigMap }}
- name: migrations
  configMap:
    name: {{ .Values.migrationsConfigMap }}
{{- end }}
{{- end -}}
