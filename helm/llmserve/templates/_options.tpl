{{/*
The options of one service as its environment (LLMSERVE_<SERVICE>_<FLAG>), the runtime's
scheme: every --foo-bar flag is also LLMSERVE_<SERVICE>_FOO_BAR.
Call with (dict "ctx" $ "service" "ROUTER" "options" (dict "listen" "0.0.0.0:50051" ...)).
*/}}
{{- define "llmserve.optionsEnv" -}}
{{- $svc := .service -}}
{{- range $flag, $value := .options }}
{{- if not (kindIs "invalid" $value) }}
LLMSERVE_{{ $svc }}_{{ $flag | upper | replace "-" "_" }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Options every service shares: TLS, reporting to the collector, Consul registration. */}}
{{- define "llmserve.commonOptions" -}}
{{- $v := .ctx.Values -}}
{{- $o := dict -}}
{{- if $v.tls.enabled -}}
{{- $_ := set $o "tls-cert" "/etc/llmserve/tls/tls.crt" -}}
{{- $_ := set $o "tls-key" "/etc/llmserve/tls/tls.key" -}}
{{- $_ := set $o "upstream-tls-ca" "/etc/llmserve/tls/ca.crt" -}}
{{- if $v.tls.mutual -}}
{{- if ne .service "ROUTER" -}}
{{- $_ := set $o "tls-client-ca" "/etc/llmserve/tls/ca.crt" -}}
{{- end -}}
{{- $_ := set $o "upstream-tls-cert" "/etc/llmserve/tls/tls.crt" -}}
{{- $_ := set $o "upstream-tls-key" "/etc/llmserve/tls/tls.key" -}}
{{- end -}}
{{- with $v.tls.serverName -}}
{{- $_ := set $o "upstream-tls-server-name" . -}}
{{- $_ := set $o "consul-check-tls-server-name" . -}}
{{- end -}}
{{- end -}}
{{- if ne .service "METRICS" -}}
{{- if not $v.metrics.enabled -}}
{{- $_ := set $o "metrics" "off" -}}
{{- else if $v.consul.enabled -}}
{{- $_ := set $o "metrics" "consul" -}}
{{- else -}}
{{- $_ := set $o "metrics" (printf "%s-metrics:%d" (include "llmserve.fullname" .ctx) (int $v.metrics.port)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $o "consul" (ternary "on" "off" (and $v.consul.enabled true)) -}}
{{- if and $v.consul.enabled $v.consul.tags -}}
{{- $_ := set $o "consul-tags" (join "," $v.consul.tags) -}}
{{- end -}}
{{- toYaml $o -}}
{{- end -}}
