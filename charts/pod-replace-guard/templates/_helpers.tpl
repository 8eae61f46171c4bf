{{- define "prg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prg.fullname" -}}
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

{{/* Labels of every object: the two of deploy/ plus Helm's. Call with (list . "component"). */}}
{{- define "prg.labels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "prg.name" $root }}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The webhook pods' selector: the same labels as deploy/ (one install per cluster). */}}
{{- define "prg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prg.name" . }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "prg.tlsSecret" -}}
{{- if eq .Values.certificates.source "existingSecret" -}}
{{- .Values.certificates.existingSecret.name -}}
{{- else -}}
{{- printf "%s-tls" (include "prg.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The DNS names the API server may use for the Service. */}}
{{- define "prg.dnsNames" -}}
{{- $svc := include "prg.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) (printf "%s.%s" $svc $ns) $svc | toJson -}}
{{- end -}}

{{/* The PRG_* settings as ConfigMap data: the keys of deploy/base/settings.env, then any set limit. */}}
{{- define "prg.settings" -}}
{{- $s := .Values.settings -}}
PRG_MODE: {{ $s.mode | quote }}
PRG_EXEMPT_USERS: {{ join "," $s.exemptUsers | quote }}
PRG_EXEMPT_GROUPS: {{ join "," $s.exemptGroups | quote }}
PRG_EXEMPT_NAMESPACES: {{ join "," $s.exemptNamespaces | quote }}
PRG_NAMESPACE: {{ .Release.Namespace | quote }}
PRG_LOG_LEVEL: {{ $s.logLevel | quote }}
PRG_HEALTH_BIND: "0.0.0.0:8081"
{{- with $s.judgedSubresources }}
PRG_JUDGED_SUBRESOURCES: {{ join "," . | quote }}
{{- end }}
{{- range $key, $env := dict "maxBodyBytes" "PRG_MAX_BODY_BYTES" "tlsMinVersion" "PRG_TLS_MIN_VERSION" "workers" "PRG_WORKERS" "threads" "PRG_THREADS" "keepalive" "PRG_KEEPALIVE" "gracefulTimeout" "PRG_GRACEFUL_TIMEOUT" "certReloadSeconds" "PRG_CERT_RELOAD_SECONDS" "handshakeTimeout" "PRG_HANDSHAKE_TIMEOUT" "requestTimeout" "PRG_REQUEST_TIMEOUT" "maxConnections" "PRG_MAX_CONNECTIONS" "inflightBytes" "PRG_INFLIGHT_BYTES" }}
{{- $value := index $s $key }}
{{- if not (kindIs "invalid" $value) }}
{{ $env }}: {{ include "prg.string" $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
certificates.source generate: a CA kept in the Secret <fullname>-ca and reused on every
upgrade (lookup), and a new serving certificate signed by it on every install and
upgrade. The caBundle so stays the same, and replicas still serving the previous
certificate are trusted while the new one reaches them (the webhook reloads changed
files). Without a cluster (helm template) lookup finds nothing and a new CA is made.
Computed once per render (the Secret and the webhook configuration share it); JSON.
*/}}
{{- define "prg.generatedCertificates" -}}
{{- if not (hasKey .Release "prgCertificates") -}}
{{- $c := .Values.certificates.generate -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-ca" (include "prg.fullname" .)) -}}
{{- $ca := dict -}}
{{- if and $existing $existing.data (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
{{- $ca = buildCustomCert (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
{{- else -}}
{{- $ca = genCA (printf "%s CA" (include "prg.fullname" .)) (int $c.caDays) -}}
{{- end -}}
{{- $dnsNames := include "prg.dnsNames" . | fromJsonArray -}}
{{- $cert := genSignedCert (first $dnsNames) nil $dnsNames (int $c.servingDays) $ca -}}
{{- $_ := set .Release "prgCertificates" (dict "caCert" $ca.Cert "caKey" $ca.Key "cert" $cert.Cert "key" $cert.Key) -}}
{{- end -}}
{{- .Release.prgCertificates | toJson -}}
{{- end -}}

{{/*
A scalar value as the string an environment variable holds. Numbers from values files
(and --set-json) are float64: 1048576, not 1.048576e+06; tlsMinVersion 1.3, not 1.3e+00.
*/}}
{{- define "prg.string" -}}
{{- $value := . -}}
{{- if and (kindIs "float64" $value) (eq $value (floor $value)) -}}
{{- $value = int64 $value -}}
{{- end -}}
{{- $value | toString -}}
{{- end -}}

{{/*
The pod and container securityContext keys that keep the pod Pod Security "restricted".
values.schema.json refuses any other value (and a key removed with null); this repeats
the check for renders that skip the schema (--skip-schema-validation). And extraEnv
names that would override a setting or a variable of the chart (env wins over envFrom).
*/}}
{{- define "prg.checkSecurityContexts" -}}
{{- $pod := .Values.podSecurityContext | default dict -}}
{{- $container := .Values.securityContext | default dict -}}
{{- $caps := $container.capabilities | default dict -}}
{{- if ne (toString (index $pod "runAsNonRoot")) "true" -}}
{{- fail "podSecurityContext.runAsNonRoot must be true (charts/pod-replace-guard/README.md)" -}}
{{- end -}}
{{- range $key, $want := dict "runAsNonRoot" "true" "readOnlyRootFilesystem" "true" "allowPrivilegeEscalation" "false" "privileged" "false" -}}
{{- if ne (toString (index $container $key)) $want -}}
{{- fail (printf "securityContext.%s must be %s (charts/pod-replace-guard/README.md)" $key $want) -}}
{{- end -}}
{{- end -}}
{{- if not (has "ALL" ($caps.drop | default list)) -}}
{{- fail "securityContext.capabilities.drop must include ALL (charts/pod-replace-guard/README.md)" -}}
{{- end -}}
{{- range $i, $env := .Values.extraEnv -}}
{{- if or (hasPrefix "PRG_" $env.name) (eq $env.name "PROMETHEUS_MULTIPROC_DIR") -}}
{{- fail (printf "extraEnv[%d] %s: PRG_* variables are set through settings.* (or by the chart), PROMETHEUS_MULTIPROC_DIR by the chart" $i $env.name) -}}
{{- end -}}
{{- end -}}
{{- if $caps.add -}}
{{- fail "securityContext.capabilities.add must be empty (charts/pod-replace-guard/README.md)" -}}
{{- end -}}
{{- end -}}
