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

{{/*
The PRG_* settings as ConfigMap data: the keys of deploy/base/settings.env (the
controller's names included), then the webhook entry's (webhook.*) and certificate
lifetimes (certificates.controller.*), then any set limit. Read by every container.
*/}}
{{- define "prg.settings" -}}
{{- $s := .Values.settings -}}
{{- $fullname := include "prg.fullname" . -}}
{{- $c := .Values.certificates -}}
PRG_MODE: {{ $s.mode | quote }}
PRG_EXEMPT_USERS: {{ join "," $s.exemptUsers | quote }}
PRG_EXEMPT_GROUPS: {{ join "," $s.exemptGroups | quote }}
PRG_EXEMPT_NAMESPACES: {{ join "," $s.exemptNamespaces | quote }}
PRG_NAMESPACE: {{ .Release.Namespace | quote }}
PRG_LOG_LEVEL: {{ $s.logLevel | quote }}
PRG_HEALTH_BIND: "0.0.0.0:8081"
PRG_WEBHOOK_CONFIGURATION: {{ $fullname | quote }}
PRG_SERVICE: {{ $fullname | quote }}
PRG_CANARY_CONFIGMAP: {{ printf "%s-canary" $fullname | quote }}
PRG_CERT_SECRET: {{ ternary (printf "%s-certificates" $fullname) "" (eq $c.source "controller") | quote }}
PRG_FAILURE_POLICY: {{ .Values.webhook.failurePolicy | quote }}
PRG_TIMEOUT_SECONDS: {{ include "prg.string" .Values.webhook.timeoutSeconds | quote }}
{{- $given := .Values.webhook.namespaceSelector | default dict }}
{{- $selector := dict }}
{{- with $given.matchLabels }}
{{- $_ := set $selector "matchLabels" . }}
{{- end }}
{{- with $given.matchExpressions }}
{{- $_ := set $selector "matchExpressions" . }}
{{- end }}
{{- with $selector }}
PRG_NAMESPACE_SELECTOR: {{ toJson . | quote }}
{{- end }}
{{- if eq $c.source "controller" }}
PRG_CA_LIFETIME: {{ $c.controller.caLifetime | quote }}
PRG_CERT_LIFETIME: {{ $c.controller.certLifetime | quote }}
{{- end }}
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

{{/* The image of every container: repository:tag (appVersion by default), or @digest. */}}
{{- define "prg.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* extraEnv as EnvVar items (every container takes them). */}}
{{- define "prg.extraEnv" -}}
{{- range .Values.extraEnv }}
- name: {{ .name | quote }}
  {{- if hasKey . "valueFrom" }}
  valueFrom:
    {{- toYaml .valueFrom | nindent 4 }}
  {{- else }}
  value: {{ include "prg.string" .value | quote }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
The controller's containers (webhook/controller.py): `certificates` (init, `controller
--once`) and `controller` (beside the webhook). Call with (list . "name" args-json).
They alone mount the service account's token; with certificates from the controller
they write the tls volume, otherwise they only read its ca.crt (or PRG_CA_FILE).
*/}}
{{- define "prg.controllerContainer" -}}
{{- $root := index . 0 -}}
{{- $source := $root.Values.certificates.source -}}
- name: {{ index . 1 }}
  image: {{ include "prg.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args: {{ index . 2 }}
  envFrom:
    - configMapRef:
        name: {{ include "prg.fullname" $root }}
  env:
    - name: PRG_CERT_DIR
      value: /etc/pod-replace-guard/tls
    {{- if eq $source "existingSecret" }}
    - name: PRG_CA_FILE
      value: /etc/pod-replace-guard/ca/ca.crt
    {{- end }}
    {{- if $root.Values.extraEnv }}
    {{- include "prg.extraEnv" $root | trim | nindent 4 }}
    {{- end }}
  resources:
    {{- toYaml $root.Values.controller.resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: tls
      mountPath: /etc/pod-replace-guard/tls
      {{- if ne $source "controller" }}
      readOnly: true
      {{- end }}
    # The service account's token, in these containers only: the webhook container,
    # which reads requests from the network, holds no credentials.
    - name: kube-api-access
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    {{- if eq $source "existingSecret" }}
    - name: ca
      mountPath: /etc/pod-replace-guard/ca
      readOnly: true
    {{- end }}
{{- end -}}

{{/* Seconds in a lifetime value (a whole number and s, m, h or d, e.g. 90d). */}}
{{- define "prg.durationSeconds" -}}
{{- $units := dict "s" 1 "m" 60 "h" 3600 "d" 86400 -}}
{{- mul (trimSuffix (substr (sub (len .) 1 | int) (len .) .) . | atoi) (index $units (substr (sub (len .) 1 | int) (len .) .)) -}}
{{- end -}}

{{/*
certificates.controller's lifetimes, as the controller checks them at start-up (a bad
one would stop its init container: the pods would never start). The schema checks the
form; this repeats it for --skip-schema-validation, and checks what a pattern cannot.
*/}}
{{- define "prg.checkLifetimes" -}}
{{- if eq .Values.certificates.source "controller" -}}
{{- $c := .Values.certificates.controller -}}
{{- range $key, $minimum := dict "caLifetime" 120 "certLifetime" 60 -}}
{{- $value := toString (index $c $key) -}}
{{- if not (regexMatch "^[0-9]{1,9}[smhd]$" $value) -}}
{{- fail (printf "certificates.controller.%s must be a whole number and a unit (s, m, h, d), e.g. 90d" $key) -}}
{{- end -}}
{{- if lt (include "prg.durationSeconds" $value | atoi) $minimum -}}
{{- fail (printf "certificates.controller.%s must be at least %d s" $key $minimum) -}}
{{- end -}}
{{- if gt (include "prg.durationSeconds" $value | atoi) (mul 36500 86400) -}}
{{- fail (printf "certificates.controller.%s must be at most 36500d" $key) -}}
{{- end -}}
{{- end -}}
{{- if gt (include "prg.durationSeconds" $c.certLifetime | atoi) (include "prg.durationSeconds" $c.caLifetime | atoi) -}}
{{- fail "certificates.controller.certLifetime must not be longer than caLifetime" -}}
{{- end -}}
{{- end -}}
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
