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
greeting = {{ $c.server.greeting | toJson }}
max_line_length = {{ int64 $c.server.max_line_length }}
max_auth_failures = {{ int64 $c.server.max_auth_failures }}

[timeouts]
preauth = {{ $c.timeouts.preauth | toJson }}
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
{{- end }}
{{- end }}

[admin]
address = {{ include "imapmux.bind" (dict "root" $ "port" $c.admin.port) | toJson }}

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

[routing.users]
{{- range $user, $backend := $c.routing.users }}
{{ $user | toJson }} = {{ $backend | toJson }}
{{- end }}
{{- range $c.pools }}

[[pool]]
name = {{ .name | toJson }}
failover = {{ .failover | default false }}
{{- range .backends }}

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
{{- end }}
{{- end }}

[cache]
enabled = {{ $c.cache.enabled }}
max_bytes = {{ $c.cache.max_bytes | toJson }}
max_item_size = {{ $c.cache.max_item_size | toJson }}
ttl = {{ $c.cache.ttl | toJson }}
idle_ttl = {{ $c.cache.idle_ttl | toJson }}
{{- end }}
