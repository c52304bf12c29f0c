{{/*
One llmserve service as a Deployment. Call with (dict "ctx" $ "component" "router"
"service" "ROUTER" "binary" "llmserve-router" "name" "<object name>" "cfg" <values>
"port" N "graceMs" N "configMaps" (list ...) "apiKeys" bool "cuda" bool
"extraLabels" (dict) "ports" (list of {name, port}) "initContainers" "<yaml>"
"extraVolumes" "<yaml>" "extraMounts" "<yaml>" "startupFailures" N "gpus" N).
*/}}
{{- define "llmserve.deployment" -}}
{{- $ctx := .ctx -}}
{{- $cfg := .cfg -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels:
    {{- include "llmserve.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
    {{- with .extraLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- if not (and $cfg.autoscaling $cfg.autoscaling.enabled) }}
  replicas: {{ $cfg.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "llmserve.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
      {{- with .extraLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "llmserve.labels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
        {{- with .extraLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $ctx.Template.BasePath "/configmap.yaml") $ctx | sha256sum }}
        {{- if .configChecksum }}
        checksum/pool-config: {{ .configChecksum }}
        {{- end }}
    spec:
      {{- include "llmserve.podSecurityContext" $ctx | nindent 6 }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ include "llmserve.terminationGrace" (dict "ctx" $ctx "graceMs" .graceMs) }}
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "llmserve.scheduling" $cfg | nindent 6 }}
      {{- with .initContainers }}
      initContainers:
        {{- . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "llmserve.image" (dict "ctx" $ctx "cuda" .cuda) }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          command: ["/usr/local/bin/{{ .binary }}"]
          {{- include "llmserve.containerSecurityContext" $ctx | nindent 10 }}
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "llmserve.fullname" $ctx }}-common
            {{- range .configMaps }}
            - configMapRef:
                name: {{ . }}
            {{- end }}
          {{- $env := include "llmserve.podEnv" (dict "ctx" $ctx "service" .service) }}
          {{- if $env }}
          env:
            {{- $env | nindent 12 }}
          {{- end }}
          {{- include "llmserve.probes" (dict "ctx" $ctx "port" .port "startupFailures" .startupFailures "httpHealth" .httpHealth) | nindent 10 }}
          resources:
            {{- $res := deepCopy (default dict $cfg.resources) }}
            {{- if .gpus }}
            {{- $_ := set $res "limits" (mergeOverwrite (default dict $res.limits) (dict "nvidia.com/gpu" (int .gpus))) }}
            {{- $_ := set $res "requests" (mergeOverwrite (default dict $res.requests) (dict "nvidia.com/gpu" (int .gpus))) }}
            {{- end }}
            {{- toYaml $res | nindent 12 }}
          volumeMounts:
            {{- include "llmserve.volumeMounts" (dict "ctx" $ctx "apiKeys" .apiKeys) | nindent 12 }}
            {{- with .extraMounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "llmserve.volumes" (dict "ctx" $ctx "apiKeys" .apiKeys) | nindent 8 }}
        {{- with .extraVolumes }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end -}}

{{/* A HorizontalPodAutoscaler on CPU for a Deployment; (dict "ctx" $ "name" N "component" C "cfg" autoscaling "extraLabels" L). */}}
{{- define "llmserve.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  labels:
    {{- include "llmserve.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
    {{- with .extraLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ .cfg.minReplicas }}
  maxReplicas: {{ .cfg.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .cfg.targetCPUUtilizationPercentage }}
{{- end -}}

{{/* A PodDisruptionBudget; (dict "ctx" $ "name" N "component" C "cfg" pdb "extraLabels" L). */}}
{{- define "llmserve.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "llmserve.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
    {{- with .extraLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  maxUnavailable: {{ .cfg.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "llmserve.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
      {{- with .extraLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
{{- end -}}

{{/* A Service; (dict "ctx" $ "name" N "component" C "ports" list "extraLabels" L "type" T "annotations" A "nodePort" P). */}}
{{- define "llmserve.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  labels:
    {{- include "llmserve.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
    {{- with .extraLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ default "ClusterIP" .type }}
  {{- if .headless }}
  {{- /* No virtual IP: the name resolves to every ready pod, each one an instance of the
         router's DNS discovery. */}}
  clusterIP: None
  {{- end }}
  selector:
    {{- include "llmserve.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
    {{- with .extraLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      protocol: TCP
      {{- if .nodePort }}
      nodePort: {{ .nodePort }}
      {{- end }}
    {{- end }}
{{- end -}}
