{{- define "userapi.name" -}}
{{ .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* Defaults to the release name alone, not helm create's release-chart: the names this chart
always had (release userapi: userapi-config), which manifests/ and its users refer to. */}}
{{- define "userapi.fullname" -}}
{{ .Values.fullnameOverride | default .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "userapi.labels" -}}
app.kubernetes.io/name: {{ include "userapi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* A digest wins over the tag: Knative then runs exactly that image without resolving a tag
with its controller's registry credentials (which a cluster's workload identity may not give). */}}
{{- define "userapi.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "userapi.serviceAccountName" -}}
{{ .Values.serviceAccount.name | default (include "userapi.fullname" .) }}
{{- end -}}

{{/* The connection budget: every enabled endpoint at max-scale, each pod's PgBouncer at its
cap. Knative never runs more pods than max-scale, so this is the most PostgreSQL can see. */}}
{{- define "userapi.connectionsAtMaxScale" -}}
{{- $total := 0 -}}
{{- range $key, $endpoint := .Values.endpoints -}}
{{- if $endpoint.enabled -}}
{{- $merged := merge (deepCopy $endpoint) $.Values.endpointDefaults -}}
{{- if eq (int $merged.maxScale) 0 -}}
{{- fail (printf "endpoints.%s.maxScale is 0 (unlimited): set a bound, or PostgreSQL connections have none" $key) -}}
{{- end -}}
{{- $total = add $total (mul $merged.maxScale $.Values.pgbouncer.maxDbConnections) -}}
{{- end -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{- define "userapi.checkBudget" -}}
{{- $total := include "userapi.connectionsAtMaxScale" . | int -}}
{{- if gt $total (int .Values.database.connectionBudget) -}}
{{- fail (printf "PostgreSQL connection budget exceeded: the endpoints' maxScale x pgbouncer.maxDbConnections (%d) can reach %d server connections, more than database.connectionBudget (%d). Lower maxScale or pgbouncer.maxDbConnections, or raise the budget." (int .Values.pgbouncer.maxDbConnections) $total (int .Values.database.connectionBudget)) -}}
{{- end -}}
{{- end -}}

{{/* The pod knobs of one endpoint (`dict "endpoint" $merged "Values" $.Values`) as YAML: its own
value, else the global one. Label, annotation and node-selector maps add to the global map
key by key; lists and affinity replace it whole, so an endpoint can also clear one with []. */}}
{{- define "userapi.podKnobs" -}}
{{- $knobs := dict -}}
{{- range $knob := list "podAnnotations" "podLabels" "nodeSelector" -}}
{{- $_ := set $knobs $knob (merge (deepCopy (get $.endpoint $knob | default dict)) (get $.Values $knob | default dict)) -}}
{{- end -}}
{{- range $knob := list "tolerations" "affinity" "topologySpreadConstraints" "extraEnv" "extraEnvFrom" "imagePullSecrets" -}}
{{- $_ := set $knobs $knob (ternary (get $.endpoint $knob) (get $.Values $knob) (hasKey $.endpoint $knob)) -}}
{{- end -}}
{{- toYaml $knobs -}}
{{- end -}}

{{/* Dev-only switches refuse to render on a release not marked `local: true`: each one alone
would weaken a production release (a public events secret, a fake Auth0, a writable root
filesystem, a database without persistence, Auth0's secrets in cleartext). */}}
{{- define "userapi.checkLocalOnly" -}}
{{- if not .Values.local -}}
{{- $on := list -}}
{{- if .Values.devSecrets.create -}}{{- $on = append $on "devSecrets.create (Secrets with public throwaway values)" -}}{{- end -}}
{{- if .Values.localBackingServices.enabled -}}{{- $on = append $on "localBackingServices.enabled (Redis and PostgreSQL without persistence)" -}}{{- end -}}
{{- if .Values.localBackingServices.auth0Emulator -}}{{- $on = append $on "localBackingServices.auth0Emulator (a fake Auth0 that signs any token)" -}}{{- end -}}
{{- if .Values.devMode -}}{{- $on = append $on "devMode (userapi reload on a writable root filesystem)" -}}{{- end -}}
{{- if hasPrefix "http://" (lower (.Values.auth0.domain | default "")) -}}{{- $on = append $on "an http:// auth0.domain (the client secret and JWKS in cleartext)" -}}{{- end -}}
{{- if $on -}}
{{- fail (printf "local-only settings on a release without local: true: %s. They are for local clusters only (manifests/overlays/local/values.yaml sets local: true); a real release must leave them off and use an https Auth0 domain." (join "; " $on)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The PgBouncer sidecar's image: pgbouncer.digest pins it (`repo@sha256:...`, the tag dropped),
which Knative then runs as it is instead of resolving the tag on Docker Hub. */}}
{{- define "userapi.pgbouncerImage" -}}
{{- $image := .Values.pgbouncer.image -}}
{{- with .Values.pgbouncer.digest -}}
{{ regexReplaceAll ":[^:/]+$" (regexReplaceAll "@.*$" $image "") "" }}@{{ . }}
{{- else -}}
{{ $image }}
{{- end -}}
{{- end -}}

{{/* PostgreSQL's CA, mounted where PgBouncer and the migration Job read it (empty: none). */}}
{{- define "userapi.databaseCaFile" -}}
{{- $tls := .Values.database.tls -}}
{{- if and $tls.caSecret $tls.caConfigMap -}}
{{- fail "database.tls: set caSecret or caConfigMap, not both" -}}
{{- end -}}
{{- if or $tls.caSecret $tls.caConfigMap -}}
/etc/userapi/database-ca/{{ $tls.caKey }}
{{- else if hasPrefix "verify-" $tls.mode -}}
{{- fail (printf "database.tls.mode %s checks the server's certificate: give its CA in database.tls.caSecret or database.tls.caConfigMap" $tls.mode) -}}
{{- end -}}
{{- end -}}

{{- define "userapi.databaseCaVolume" -}}
{{- with .Values.database.tls -}}
{{- if .caSecret -}}
- name: database-ca
  secret:
    secretName: {{ .caSecret }}
    items: [{key: {{ .caKey }}, path: {{ .caKey }}}]
{{- else if .caConfigMap -}}
- name: database-ca
  configMap:
    name: {{ .caConfigMap }}
    items: [{key: {{ .caKey }}, path: {{ .caKey }}}]
{{- end -}}
{{- end -}}
{{- end -}}

{{/* An endpoint's traffic targets must add up to 100 percent, as Knative requires: the values
schema checks each target's shape, but JSON Schema cannot sum, so the render refuses here with
the endpoint and the total rather than leaving it to Knative's webhook at apply time. */}}
{{- define "userapi.checkTraffic" -}}
{{- range $key, $endpoint := .Values.endpoints -}}
{{- $e := merge (deepCopy $endpoint) $.Values.endpointDefaults -}}
{{- if and $e.enabled $e.traffic -}}
{{- $total := 0 -}}
{{- range $target := $e.traffic -}}
{{- $total = add $total ($target.percent | default 0) -}}
{{- end -}}
{{- if ne (int $total) 100 -}}
{{- fail (printf "endpoints.%s.traffic: the percents add up to %d, not 100. Every request goes to one of the targets: give the targets 100 in all (a tag-only target has percent 0)." $key (int $total)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
