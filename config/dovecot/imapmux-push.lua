-- imapmux-push.lua: Dovecot push-notification Lua driver script that tells
-- imapmux which mailboxes changed, so that imapmux can wake the IDLE clients
-- it has parked (connection multiplexing).
--
-- Tested with Dovecot 2.3.19 (Debian 12: the Lua plugins and dovecot.http
-- are in dovecot-core; no extra Lua packages are needed).
--
-- What it sends: at the end of every mailbox transaction that changed
-- something a client in IDLE would be told about (new, appended or expunged
-- messages, flag changes, a deleted or renamed mailbox), one HTTP POST to
-- imapmux's admin server:
--
--   POST /push
--   Authorization: Bearer <imapmux_push_secret>
--   Content-Type: application/json
--
--   [{"user":"alice","mailbox":"INBOX","event":"MessageNew"}, ...]
--
-- one entry per mailbox and kind of event in the transaction. User
-- names are Dovecot's (user.username), mailbox names Dovecot's UTF-8 names.
-- No message content (from, subject, snippet) is ever sent.
--
-- Dovecot configuration (conf.d/99-imapmux-push.conf or dovecot.conf):
--
--   mail_plugins = $mail_plugins notify push_notification mail_lua push_notification_lua
--   plugin {
--     push_notification_driver = lua:file=/etc/dovecot/imapmux-push.lua
--     imapmux_push_url = http://127.0.0.1:9143/push
--     imapmux_push_secret = <the value of admin.push_secret in imapmux.toml>
--   }
--
-- (Set mail_plugins where the changes happen: globally, or in protocol imap,
-- lmtp and lda blocks. With imapmux polling through doveadm, prefer the
-- protocol blocks: loaded globally, every doveadm `mailbox status` also
-- starts this driver for its user, 2.5 instead of 1.5 ms of Dovecot CPU per
-- mailbox polled; docs/multiplexing.md, mobile findings.) The request is made synchronously when the
-- transaction ends, so the Dovecot process waits for imapmux's answer: at
-- most TIMEOUT_MSECS below (2 s), once, no retries; a refused connection
-- fails at once. Failures are logged by Dovecot as errors and never fail
-- the mail operation itself.

local client
local TIMEOUT_MSECS = 2000

function script_init()
  client = dovecot.http.client({
    request_timeout_msecs = TIMEOUT_MSECS,
    max_attempts = 1,
    user_agent = "dovecot-imapmux-push",
  })
  return 0
end

-- A JSON string: quotes, backslashes and control characters escaped.
local function json_string(s)
  local escaped = string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then
      return '\\"'
    elseif c == '\\' then
      return '\\\\'
    end
    return string.format('\\u%04x', string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

function dovecot_lua_notify_begin_txn(user)
  local url = user:plugin_getenv("imapmux_push_url")
  local secret = user:plugin_getenv("imapmux_push_secret")
  local ctx = { user = user.username, seen = {}, changes = {} }
  if url == nil or url == "" or secret == nil or secret == "" then
    dovecot.i_error("imapmux-push: set imapmux_push_url and imapmux_push_secret in plugin {}")
  else
    ctx.url = url
    ctx.secret = secret
  end
  return ctx
end

local function changed(ctx, mailbox, event)
  if ctx.url == nil or mailbox == nil then
    return
  end
  local key = mailbox .. "\0" .. event
  if ctx.seen[key] then
    return
  end
  ctx.seen[key] = true
  table.insert(ctx.changes, { mailbox = mailbox, event = event })
end

local function on_event(ctx, event)
  changed(ctx, event.mailbox, event.name)
end

dovecot_lua_notify_event_message_new = on_event
dovecot_lua_notify_event_message_append = on_event
dovecot_lua_notify_event_message_expunge = on_event
dovecot_lua_notify_event_flags_set = on_event
dovecot_lua_notify_event_flags_clear = on_event
dovecot_lua_notify_event_mailbox_delete = on_event

function dovecot_lua_notify_event_mailbox_rename(ctx, event)
  changed(ctx, event.mailbox_old, event.name)
  changed(ctx, event.mailbox, event.name)
end

function dovecot_lua_notify_end_txn(ctx)
  if ctx.url == nil or #ctx.changes == 0 then
    return
  end
  local entries = {}
  for _, c in ipairs(ctx.changes) do
    table.insert(entries, '{"user":' .. json_string(ctx.user)
      .. ',"mailbox":' .. json_string(c.mailbox)
      .. ',"event":' .. json_string(c.event) .. '}')
  end
  local request = client:request({ url = ctx.url, method = "POST" })
  request:add_header("Content-Type", "application/json")
  request:add_header("Authorization", "Bearer " .. ctx.secret)
  request:set_payload("[" .. table.concat(entries, ",") .. "]")
  local response = request:submit()
  local status = response:status()
  if status < 200 or status > 299 then
    dovecot.i_error("imapmux-push: " .. ctx.url .. " answered " .. status
      .. " " .. tostring(response:reason()))
  end
end
