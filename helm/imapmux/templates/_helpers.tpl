{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "imapmux.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name if it holds the chart name. */}}
{{- define "imapmux.fullname" -}}
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

{{- define "imapmux.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "imapmux.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imapmux.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "imapmux.labels" -}}
helm.sh/chart: {{ include "imapmux.chart" . }}
{{ include "imapmux.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: imapmux
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "imapmux.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imapmux.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "imapmux.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "imapmux.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{- define "imapmux.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
True ("true") when pushes are forwarded between the pods: /push is on
(config.admin.pushSecret), config.admin.pushFanout.enabled, and there can
be more than one pod (replicaCount > 1 or autoscaling).
*/}}
{{- define "imapmux.pushFanout" -}}
{{- $a := .Values.config.admin }}
{{- if and $a.pushSecret.name $a.pushFanout.enabled (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}true{{ end }}
{{- end }}

{{/*
True ("true") when the headless Service of the pods' admin ports exists:
push fan-out, or the operations API with more than one pod (imapmux ctl
--all).
*/}}
{{- define "imapmux.peersService" -}}
{{- $a := .Values.config.admin }}
{{- if or (include "imapmux.pushFanout" .) (and $a.tokenSecret.name (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1))) }}true{{ end }}
{{- end }}

{{/* The headless Service of the pods' admin ports (push fan-out peers). */}}
{{- define "imapmux.peersServiceName" -}}
{{- printf "%s-peers" (include "imapmux.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/* True ("true") when a listener needs the TLS certificate. */}}
{{- define "imapmux.needsTLS" -}}
{{- $l := .Values.config.listeners }}
{{- $pop3 := or (dig "pop3" "enabled" false $l) (dig "pop3s" "enabled" false $l) }}
{{- if or $l.starttls.enabled $l.implicit.enabled $pop3 (dig "sieve" "enabled" false $l) }}true{{ end }}
{{- end }}

{{/*
Files of Secrets the config names (auth sources, the push secret, master
passwords), as a YAML list of {secret, key, path}; path is relative to
/etc/imapmux, where the deployment's projected volume puts them. The paths
here must match the ones _config.tpl writes (scripts/check-chart checks that
they do).
*/}}
{{- define "imapmux.secretFiles" -}}
{{- $files := list }}
{{- $a := .Values.config.auth }}
{{- if eq $a.source "passwd-file" }}
{{- $files = append $files (dict "secret" $a.passwd_file.existingSecret.name "key" $a.passwd_file.existingSecret.key "path" "auth/passwd-file") }}
{{- end }}
{{- if and (eq $a.source "ldap") (not $a.ldap.bind_dn) $a.ldap.search_bind_dn }}
{{- $files = append $files (dict "secret" $a.ldap.searchBindPasswordSecret.name "key" $a.ldap.searchBindPasswordSecret.key "path" "auth/ldap-search-bind-password") }}
{{- end }}
{{- with .Values.config.admin.pushSecret }}
{{- if .name }}
{{- $files = append $files (dict "secret" .name "key" (.key | default "secret") "path" "admin/push-secret") }}
{{- end }}
{{- end }}
{{- with .Values.config.admin.tokenSecret }}
{{- if .name }}
{{- $files = append $files (dict "secret" .name "key" (.key | default "token") "path" "admin/token") }}
{{- end }}
{{- end }}
{{- with .Values.config.admin.readonlyTokenSecret }}
{{- if .name }}
{{- $files = append $files (dict "secret" .name "key" (.key | default "token") "path" "admin/readonly-token") }}
{{- end }}
{{- end }}
{{- range $i, $p := .Values.config.pools }}
{{- if and $p.login (eq ($p.login.mode | default "user") "master") }}
{{- $files = append $files (dict "secret" (dig "masterPasswordSecret" "name" "" $p.login) "key" (dig "masterPasswordSecret" "key" "password" $p.login) "path" (printf "auth/pool-%d-master-password" $i)) }}
{{- end }}
{{- range $j, $b := $p.backends }}
{{- if $b.doveadm_url }}
{{- $files = append $files (dict "secret" (dig "doveadmApiKeySecret" "name" "" $b) "key" (dig "doveadmApiKeySecret" "key" "api-key" $b) "path" (printf "doveadm/pool-%d-backend-%d-api-key" $i $j)) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $files }}
{{- end }}

{{/* HOST:PORT on the bind address; IPv6 addresses get brackets. */}}
{{- define "imapmux.bind" -}}
{{- $host := .root.Values.config.bindAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int .port) }}
{{- else }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}
{{- end }}

{{/*
Seconds of a simple duration ("90s", "5m", "1h"); -1 when the form is more
complex (then the grace-period check below is skipped).
*/}}
{{- define "imapmux.durationSeconds" -}}
{{- $d := toString . }}
{{- if regexMatch "^[0-9]+s$" $d }}{{ trimSuffix "s" $d | int }}
{{- else if regexMatch "^[0-9]+m$" $d }}{{ mul (trimSuffix "m" $d | int) 60 }}
{{- else if regexMatch "^[0-9]+h$" $d }}{{ mul (trimSuffix "h" $d | int) 3600 }}
{{- else }}-1
{{- end }}
{{- end }}

{{/* Fail early on combinations the schema cannot express. */}}
{{- define "imapmux.validate" -}}
{{- $l := .Values.config.listeners }}
{{- $others := or (dig "pop3" "enabled" false $l) (dig "pop3s" "enabled" false $l) (dig "sieve" "enabled" false $l) }}
{{- if not (or $l.starttls.enabled $l.implicit.enabled $l.plaintext.enabled $others) }}
{{- fail "config.listeners: enable at least one of starttls, implicit, plaintext, pop3, pop3s, sieve" }}
{{- end }}
{{- $ports := list .Values.config.admin.port }}
{{- range $name, $li := $l }}
{{- if $li.enabled }}
{{- if has $li.port $ports }}
{{- fail (printf "config.listeners.%s.port %v is used twice (listeners and config.admin.port need distinct ports)" $name $li.port) }}
{{- end }}
{{- $ports = append $ports $li.port }}
{{- end }}
{{- end }}
{{- $drain := include "imapmux.durationSeconds" .Values.config.timeouts.drain | int }}
{{- if ge $drain 0 }}
{{- $need := add $drain .Values.preStopSleepSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) $need }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than preStopSleepSeconds + config.timeouts.drain (%d s), or open sessions are killed before the drain ends; e.g. set it to %d" .Values.terminationGracePeriodSeconds $need (add $need 10)) }}
{{- end }}
{{- end }}
{{- if .Values.certManager.enabled }}
{{- if not .Values.certManager.issuerRef.name }}
{{- fail "certManager.issuerRef.name is required when certManager.enabled" }}
{{- end }}
{{- if not .Values.certManager.dnsNames }}
{{- fail "certManager.dnsNames needs at least one name when certManager.enabled" }}
{{- end }}
{{- end }}
{{- $backends := list }}
{{- range .Values.config.pools }}
{{- range .backends }}
{{- if has .name $backends }}
{{- fail (printf "config.pools: backend name %q is used twice" .name) }}
{{- end }}
{{- $backends = append $backends .name }}
{{- end }}
{{- end }}
{{- range $user, $backend := .Values.config.routing.users }}
{{- if not (has $backend $backends) }}
{{- fail (printf "config.routing.users.%s: no backend is named %q" $user $backend) }}
{{- end }}
{{- end }}
{{- $m := .Values.config.multiplex }}
{{- $zero := "^(0+(ns|us|ms|s|m|h|d))+$" }}
{{- if and (not (regexMatch $zero $m.idle_offload_after)) (regexMatch $zero $m.poll_interval) }}
{{- if not .Values.config.admin.pushSecret.name }}
{{- fail "config.multiplex.poll_interval \"0s\" (push only) needs config.admin.pushSecret.name: with neither push nor polling, parked IDLE clients would not learn of new mail; keep poll_interval above 0s or set up push" }}
{{- end }}
{{- if and (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) (not .Values.config.admin.pushFanout.enabled) }}
{{- fail "config.multiplex.poll_interval \"0s\" (push only) with several replicas needs config.admin.pushFanout.enabled: the admin Service hands each push to one pod, and without fan-out parked clients on the other pods would not learn of changes; enable pushFanout or keep poll_interval above 0s" }}
{{- end }}
{{- end }}
{{- if regexMatch "^(([0-9]+(ns|us|ms))+|(0+(ns|us|ms|s|m|h|d))+)$" .Values.config.admin.pushFanout.refresh }}
{{- fail "config.admin.pushFanout.refresh must be at least 1s (e.g. \"15s\")" }}
{{- end }}
{{- $a := .Values.config.auth }}
{{- if and (eq $a.source "passwd-file") (not $a.passwd_file.existingSecret.name) }}
{{- fail "config.auth.passwd_file.existingSecret.name is required with config.auth.source passwd-file: the Secret holding the passwd-file" }}
{{- end }}
{{- if and (eq $a.source "http") (not $a.http.url) }}
{{- fail "config.auth.http.url is required with config.auth.source http" }}
{{- end }}
{{- if eq $a.source "ldap" }}
{{- $l := $a.ldap }}
{{- if not $l.url }}
{{- fail "config.auth.ldap.url is required with config.auth.source ldap" }}
{{- end }}
{{- if eq (not $l.bind_dn) (not $l.search_base) }}
{{- fail "config.auth.ldap: set exactly one of bind_dn (direct bind) and search_base (search then bind)" }}
{{- end }}
{{- if and $l.bind_dn (or $l.search_bind_dn $l.searchBindPasswordSecret.name) }}
{{- fail "config.auth.ldap: search_bind_dn and searchBindPasswordSecret are only used with search_base, not with bind_dn" }}
{{- end }}
{{- if and $l.search_bind_dn (not $l.searchBindPasswordSecret.name) }}
{{- fail "config.auth.ldap.search_bind_dn needs searchBindPasswordSecret.name: the Secret holding the service account's password" }}
{{- end }}
{{- if and $l.searchBindPasswordSecret.name (not $l.search_bind_dn) }}
{{- fail "config.auth.ldap.searchBindPasswordSecret is set without search_bind_dn (the service account it is the password of)" }}
{{- end }}
{{- end }}
{{- range $i, $p := .Values.config.pools }}
{{- if and $p.login (eq ($p.login.mode | default "user") "master") }}
{{- if eq $a.source "passthrough" }}
{{- fail (printf "config.pools[%d] (%s): login.mode master needs imapmux to verify passwords itself; set config.auth.source to passwd-file, http or ldap, or use mode user" $i $p.name) }}
{{- end }}
{{- if not $p.login.master_user }}
{{- fail (printf "config.pools[%d] (%s): login.mode master needs login.master_user" $i $p.name) }}
{{- end }}
{{- if not (dig "masterPasswordSecret" "name" "" $p.login) }}
{{- fail (printf "config.pools[%d] (%s): login.mode master needs login.masterPasswordSecret.name, the Secret holding the master password" $i $p.name) }}
{{- end }}
{{- end }}
{{- range $j, $b := $p.backends }}
{{- if and $b.doveadm_url (not (dig "doveadmApiKeySecret" "name" "" $b)) }}
{{- fail (printf "config.pools[%d].backends[%d] (%s): doveadm_url needs doveadmApiKeySecret.name, the Secret holding Dovecot's doveadm_api_key" $i $j $b.name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
