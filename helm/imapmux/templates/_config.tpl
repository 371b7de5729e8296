{{/*
imapmux.toml rendered from .Values.config. Keys are those of
config/imapmux.toml; strings are written as JSON strings, which are valid
TOML basic strings.
*/}}
{{- define "imapmux.configToml" -}}
{{- $c := .Values.config -}}
# imapmux configuration rendered by the Helm chart {{ include "imapmux.chart" . }}
# from the release values (`config:`). Edit the values, not this file.

[server]
allow_plaintext_auth = {{ $c.server.allow_plaintext_auth }}
max_connections = {{ int64 $c.server.max_connections }}
max_preauth_per_ip = {{ int64 $c.server.max_preauth_per_ip }}
max_sessions_per_user_ip = {{ int64 $c.server.max_sessions_per_user_ip }}
greeting = {{ $c.server.greeting | toJson }}
max_line_length = {{ int64 $c.server.max_line_length }}
max_auth_failures = {{ int64 $c.server.max_auth_failures }}
sasl_oauth = {{ $c.server.sasl_oauth }}
reload_check_interval = {{ $c.server.reload_check_interval | toJson }}

[timeouts]
preauth = {{ $c.timeouts.preauth | toJson }}
preauth_under_pressure = {{ $c.timeouts.preauth_under_pressure | toJson }}
idle = {{ $c.timeouts.idle | toJson }}
backend_connect = {{ $c.timeouts.backend_connect | toJson }}
backend_response = {{ $c.timeouts.backend_response | toJson }}
tls_handshake = {{ $c.timeouts.tls_handshake | toJson }}
drain = {{ $c.timeouts.drain | toJson }}

[tls]
{{- if include "imapmux.needsTLS" . }}
# From the Secret {{ include "imapmux.tlsSecretName" . }} (tls.crt, tls.key).
cert_file = "/etc/imapmux/tls/tls.crt"
key_file = "/etc/imapmux/tls/tls.key"
{{- end }}
self_signed = false
{{- range $mode := list "starttls" "implicit" "plaintext" }}
{{- $l := index $c.listeners $mode }}
{{- if $l.enabled }}

[[listener]]
address = {{ include "imapmux.bind" (dict "root" $ "port" $l.port) | toJson }}
mode = {{ $mode | toJson }}
{{- if hasKey $l "allow_plaintext_auth" }}
allow_plaintext_auth = {{ $l.allow_plaintext_auth }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name := list "pop3" "pop3s" "sieve" }}
{{- $l := index $c.listeners $name | default dict }}
{{- if $l.enabled }}

[[listener]]
address = {{ include "imapmux.bind" (dict "root" $ "port" $l.port) | toJson }}
mode = {{ ternary "implicit" "starttls" (eq $name "pop3s") | toJson }}
protocol = {{ ternary "sieve" "pop3" (eq $name "sieve") | toJson }}
{{- end }}
{{- end }}

[admin]
address = {{ include "imapmux.bind" (dict "root" $ "port" $c.admin.port) | toJson }}
{{- with $c.admin.pushSecret }}
{{- if .name }}
# From the Secret {{ .name }} (key {{ .key | default "secret" }}).
push_secret_file = "/etc/imapmux/admin/push-secret"
{{- end }}
{{- end }}
{{- if $c.admin.tokenSecret.name }}
# Operations API token from the Secret {{ $c.admin.tokenSecret.name }}.
token_file = "/etc/imapmux/admin/token"
{{- end }}
{{- if $c.admin.readonlyTokenSecret.name }}
readonly_token_file = "/etc/imapmux/admin/readonly-token"
{{- end }}
{{- if include "imapmux.pushFanout" $ }}
# Push fan-out: every ready pod of the release, from the headless Service.
push_peers_dns = {{ printf "%s.%s.svc:%d" (include "imapmux.peersServiceName" $) $.Release.Namespace (int $c.admin.port) | toJson }}
push_peers_refresh = {{ $c.admin.pushFanout.refresh | toJson }}
{{- end }}

[health]
interval = {{ $c.health.interval | toJson }}
timeout = {{ $c.health.timeout | toJson }}
fall = {{ int64 $c.health.fall }}
rise = {{ int64 $c.health.rise }}

[routing]
{{- with $c.routing.default_pool }}
default_pool = {{ . | toJson }}
{{- end }}
lowercase_users = {{ $c.routing.lowercase_users }}
{{- if $c.routing.stateVolume }}
state_file = "/var/lib/imapmux/routing-state.json"
{{- end }}

[routing.users]
{{- range $user, $backend := $c.routing.users }}
{{ $user | toJson }} = {{ $backend | toJson }}
{{- end }}
{{- range $i, $p := $c.pools }}

[[pool]]
name = {{ .name | toJson }}
failover = {{ .failover | default false }}
{{- with .login }}

[pool.login]
mode = {{ .mode | default "user" | toJson }}
{{- if eq (.mode | default "user") "master" }}
master_user = {{ .master_user | toJson }}
# From the Secret {{ dig "masterPasswordSecret" "name" "" . }} (key {{ dig "masterPasswordSecret" "key" "password" . }}).
master_password_file = {{ printf "/etc/imapmux/auth/pool-%d-master-password" $i | toJson }}
master_style = {{ .master_style | default "sasl" | toJson }}
{{- with .master_separator }}
master_separator = {{ . | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- range $j, $b := .backends }}

[[pool.backend]]
name = {{ .name | toJson }}
address = {{ .address | toJson }}
tls = {{ .tls | default "none" | toJson }}
weight = {{ .weight | default 1 | int64 }}
trusted = {{ .trusted | default false }}
{{- with .ca_file }}
ca_file = {{ . | toJson }}
{{- end }}
insecure = {{ .insecure | default false }}
{{- with .server_name }}
server_name = {{ . | toJson }}
{{- end }}
{{- with .pop3_address }}
pop3_address = {{ . | toJson }}
{{- end }}
{{- with .pop3_tls }}
pop3_tls = {{ . | toJson }}
{{- end }}
{{- with .sieve_address }}
sieve_address = {{ . | toJson }}
{{- end }}
{{- with .sieve_tls }}
sieve_tls = {{ . | toJson }}
{{- end }}
{{- with .doveadm_url }}
doveadm_url = {{ . | toJson }}
# From the Secret {{ dig "doveadmApiKeySecret" "name" "" $b }} (key {{ dig "doveadmApiKeySecret" "key" "api-key" $b }}).
doveadm_api_key_file = {{ printf "/etc/imapmux/doveadm/pool-%d-backend-%d-api-key" $i $j | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{- $a := $c.auth }}

[auth]
source = {{ $a.source | toJson }}
{{- if eq $a.source "passwd-file" }}
{{- $f := $a.passwd_file }}

[auth.passwd_file]
# From the Secret {{ $f.existingSecret.name }} (key {{ $f.existingSecret.key }}).
path = "/etc/imapmux/auth/passwd-file"
allow_plain = {{ $f.allow_plain }}
reload_check_interval = {{ $f.reload_check_interval | toJson }}
{{- else if eq $a.source "http" }}
{{- $h := $a.http }}

[auth.http]
url = {{ $h.url | toJson }}
timeout = {{ $h.timeout | toJson }}
max_idle_connections = {{ int64 $h.max_idle_connections }}
max_wait = {{ $h.max_wait | toJson }}
{{- with $h.headers }}

[auth.http.headers]
{{- range $name, $value := . }}
{{ $name | toJson }} = {{ $value | toJson }}
{{- end }}
{{- end }}
{{- else if eq $a.source "ldap" }}
{{- $l := $a.ldap }}

[auth.ldap]
url = {{ $l.url | toJson }}
starttls = {{ $l.starttls }}
{{- with $l.ca_file }}
ca_file = {{ . | toJson }}
{{- end }}
{{- if $l.bind_dn }}
bind_dn = {{ $l.bind_dn | toJson }}
{{- else }}
search_base = {{ $l.search_base | toJson }}
search_filter = {{ $l.search_filter | toJson }}
{{- with $l.search_bind_dn }}
search_bind_dn = {{ . | toJson }}
# From the Secret {{ $l.searchBindPasswordSecret.name }} (key {{ $l.searchBindPasswordSecret.key }}).
search_bind_password_file = "/etc/imapmux/auth/ldap-search-bind-password"
{{- end }}
{{- end }}
{{- with $l.backend_attribute }}
backend_attribute = {{ . | toJson }}
{{- end }}
{{- with $l.backend_user_attribute }}
backend_user_attribute = {{ . | toJson }}
{{- end }}
timeout = {{ $l.timeout | toJson }}
pool_size = {{ int64 $l.pool_size }}
{{- end }}

[auth.cache]
enabled = {{ $a.cache.enabled }}
positive_ttl = {{ $a.cache.positive_ttl | toJson }}
negative_ttl = {{ $a.cache.negative_ttl | toJson }}
max_entries = {{ int64 $a.cache.max_entries }}

[auth.penalty]
enabled = {{ $a.penalty.enabled }}
base_delay = {{ $a.penalty.base_delay | toJson }}
max_delay = {{ $a.penalty.max_delay | toJson }}
max_failures_per_user = {{ int64 $a.penalty.max_failures_per_user }}
max_failures_per_ip = {{ int64 $a.penalty.max_failures_per_ip }}
window = {{ $a.penalty.window | toJson }}
known_good_ttl = {{ $a.penalty.known_good_ttl | toJson }}

{{- $m := $c.multiplex }}

[multiplex]
reuse_after_logout = {{ $m.reuse_after_logout }}
reuse_idle = {{ $m.reuse_idle | toJson }}
reuse_max_age = {{ $m.reuse_max_age | toJson }}
max_pooled_per_user = {{ int64 $m.max_pooled_per_user }}
max_pooled = {{ int64 $m.max_pooled }}
idle_offload_after = {{ $m.idle_offload_after | toJson }}
poll_interval = {{ $m.poll_interval | toJson }}
max_concurrent_resumes = {{ int64 $m.max_concurrent_resumes }}

[cache]
enabled = {{ $c.cache.enabled }}
max_bytes = {{ $c.cache.max_bytes | toJson }}
max_item_size = {{ $c.cache.max_item_size | toJson }}
ttl = {{ $c.cache.ttl | toJson }}
idle_ttl = {{ $c.cache.idle_ttl | toJson }}
{{- end }}
