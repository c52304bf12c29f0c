{{/* Names, labels, images and the pieces every Deployment shares. */}}

{{- define "llmserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "llmserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "router"). */}}
{{- define "llmserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmserve.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "llmserve.labels" -}}
{{ include "llmserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: llmserve
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "llmserve.chart" .ctx }}
{{- end -}}

{{/* The llmserve image; call with (dict "ctx" $ "cuda" bool). */}}
{{- define "llmserve.image" -}}
{{- $img := .ctx.Values.image -}}
{{- $tag := default .ctx.Chart.AppVersion $img.tag -}}
{{- if .cuda -}}{{- $tag = printf "%s%s" $tag $img.cudaSuffix -}}{{- end -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}

{{- define "llmserve.memcachedAddress" -}}
{{- if .Values.memcached.enabled -}}
{{- printf "%s-memcached:%d" (include "llmserve.fullname" .) (int .Values.memcached.port) -}}
{{- else -}}
{{- .Values.memcached.external -}}
{{- end -}}
{{- end -}}

{{- define "llmserve.tlsSecret" -}}
{{- default (printf "%s-tls" (include "llmserve.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "llmserve.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "llmserve.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{- define "llmserve.consulSecret" -}}
{{- default (printf "%s-consul" (include "llmserve.fullname" .)) .Values.consul.existingSecret -}}
{{- end -}}

{{- define "llmserve.consulHasToken" -}}
{{- if and .Values.consul.enabled (or .Values.consul.token .Values.consul.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/*
Environment every llmserve container shares besides its ConfigMaps: the pod's IP as the
address peers reach with Consul, the host agent's address when asked.
Call with (dict "ctx" $ "service" "ROUTER").
*/}}
{{- define "llmserve.podEnv" -}}
{{- $v := .ctx.Values -}}
{{- if $v.consul.enabled }}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: LLMSERVE_{{ .service }}_ADVERTISE
  value: "$(POD_IP)"
{{- if $v.consul.hostAgent }}
- name: HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
- name: CONSUL_HTTP_ADDR
  value: "$(HOST_IP):{{ $v.consul.hostAgentPort }}"
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes for TLS, API keys, the Consul token and /tmp; call with (dict "ctx" $ "apiKeys" bool). */}}
{{- define "llmserve.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .ctx.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "llmserve.tlsSecret" .ctx }}
    defaultMode: 0440
{{- end }}
{{- if and .apiKeys .ctx.Values.apiKeys.enabled }}
- name: api-keys
  secret:
    secretName: {{ include "llmserve.apiKeysSecret" .ctx }}
    defaultMode: 0440
{{- end }}
{{- if include "llmserve.consulHasToken" .ctx }}
- name: consul-token
  secret:
    secretName: {{ include "llmserve.consulSecret" .ctx }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "llmserve.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .ctx.Values.tls.enabled }}
- name: tls
  mountPath: /etc/llmserve/tls
  readOnly: true
{{- end }}
{{- if and .apiKeys .ctx.Values.apiKeys.enabled }}
- name: api-keys
  mountPath: /etc/llmserve/api-keys
  readOnly: true
{{- end }}
{{- if include "llmserve.consulHasToken" .ctx }}
- name: consul-token
  mountPath: /etc/llmserve/consul
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The three probes on grpc.health.v1 at the service's port. Kubernetes' gRPC probe speaks
plaintext only, so a listener with TLS gets tcpSocket probes (the port accepts), or, for
the collector, HTTP /healthz on its plaintext HTTP port.
Call with (dict "ctx" $ "port" 50051 "startupFailures" 30 "httpHealth" 9464).
*/}}
{{- define "llmserve.probes" -}}
{{- $p := .ctx.Values.probes -}}
{{- $check := "" -}}
{{- if and .ctx.Values.tls.enabled .httpHealth -}}
{{- $check = printf "httpGet:\n  path: /healthz\n  port: %d" (int .httpHealth) -}}
{{- else if .ctx.Values.tls.enabled -}}
{{- $check = printf "tcpSocket:\n  port: %d" (int .port) -}}
{{- else -}}
{{- $check = printf "grpc:\n  port: %d\n  service: \"\"" (int .port) -}}
{{- end -}}
startupProbe:
  {{- $check | nindent 2 }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ default $p.startup.failureThreshold .startupFailures }}
livenessProbe:
  {{- $check | nindent 2 }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  {{- $check | nindent 2 }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* Seconds Kubernetes waits after SIGTERM: the drain, Consul's deregistration (2 s) and a margin. */}}
{{- define "llmserve.terminationGrace" -}}
{{- add (div (add (int .graceMs) 999) 1000) 2 (int .ctx.Values.terminationGraceMarginSeconds) -}}
{{- end -}}

{{- define "llmserve.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "llmserve.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{/* Scheduling fields of a component (nodeSelector, tolerations, affinity), defaults from .Values. */}}
{{- define "llmserve.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* memcached servers as a libmemcached config string (--SERVER=host:port ...). */}}
{{- define "llmserve.memcachedConfig" -}}
{{- $servers := list -}}
{{- range (include "llmserve.memcachedAddress" . | splitList ",") -}}
{{- if trim . }}{{ $servers = append $servers (printf "--SERVER=%s" (trim .)) }}{{ end -}}
{{- end -}}
{{- join " " $servers -}}
{{- end -}}

{{/*
The inference pools with every version complete: a pool without versions has one, "v1";
a version takes what it does not set (replicas, model, resources, gpus, scheduling,
autoscaling) from its pool, and the pool from inference.defaults. Returns YAML {pools: [...]}.
*/}}
{{- define "llmserve.pools" -}}
{{- $d := .Values.inference.defaults -}}
{{- $out := list -}}
{{- range $pool := .Values.inference.pools -}}
{{- $p := mergeOverwrite (deepCopy $d) (deepCopy $pool) -}}
{{- $versions := list -}}
{{- range $ver := (default (list (dict "name" "v1")) $pool.versions) -}}
{{- $base := omit (deepCopy $p) "versions" "name" -}}
{{- $versions = append $versions (mergeOverwrite $base (deepCopy $ver)) -}}
{{- end -}}
{{- $_ := set $p "versions" $versions -}}
{{- $out = append $out $p -}}
{{- end -}}
{{- toYaml (dict "pools" $out) -}}
{{- end -}}
