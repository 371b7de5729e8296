#!/usr/bin/env python3
"""Generic IMAP test client on Python's imaplib (stdlib only).

Usable against Dovecot directly or against imapmux. Prints one result line
per step (`OK ...` / `FAIL ...`) that Rust tests assert on; exit status 0 on
success, 1 on an IMAP failure, 2 on usage errors.

    imap_client.py --host H --port P [--tls | --starttls] [--cafile F | --insecure]
                   --user U --password P [--auth login|plain|sasl-ir] ACTION [args]

Actions:
  capability                 print capabilities (before and after login)
  login                      authenticate, NOOP, LOGOUT
  login-fail                 expect authentication to fail (exit 0 if it does)
  login-fetch --uid N [--out FILE]
                             fetch UID N with BODY.PEEK[]; print length and
                             base64 (or write the bytes to FILE)
  fetch-all                  print "MSG uid=N len=L sha256=H" for every message
  append-verify --size N     APPEND a generated N-byte message, fetch it back
                             by its APPENDUID and compare byte-exact
  idle-wait [--timeout S]    SELECT, IDLE, print "IDLING exists=N", wait for a
                             higher EXISTS, print "EXISTS M", DONE
  sasl-ir                    AUTHENTICATE PLAIN with an initial response
  auth-plain                 AUTHENTICATE PLAIN via a continuation
  select                     print "EXISTS n"
  list                       print "MAILBOX name" lines
"""

import argparse
import base64
import hashlib
import imaplib
import re
import socket
import ssl
import sys
import time


class Fail(Exception):
    pass


def out(line):
    print(line, flush=True)


def ssl_context(args):
    if args.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=args.cafile)
    return ctx


def connect(args):
    if args.tls:
        m = imaplib.IMAP4_SSL(args.host, args.port, ssl_context=ssl_context(args),
                              timeout=args.io_timeout)
    else:
        m = imaplib.IMAP4(args.host, args.port, timeout=args.io_timeout)
        if args.starttls:
            typ, dat = m.starttls(ssl_context=ssl_context(args))
            if typ != "OK":
                raise Fail("STARTTLS %s %r" % (typ, dat))
    greeting = m.welcome.decode("utf-8", "replace")
    out("GREETING %s" % greeting)
    return m


def is_ascii(s):
    try:
        s.encode("ascii")
        return True
    except UnicodeEncodeError:
        return False


def authenticate(m, args):
    user, pw = args.user, args.password
    try:
        if args.auth == "login":
            if is_ascii(user) and is_ascii(pw):
                typ, dat = m.login(user, pw)
            else:
                # imaplib only quotes ASCII; send the password as a literal.
                m.literal = pw.encode("utf-8")
                typ, dat = m._simple_command("LOGIN", m._quote(user))
                m.state = "AUTH"
        elif args.auth == "plain":
            blob = b"\0" + user.encode("utf-8") + b"\0" + pw.encode("utf-8")
            typ, dat = m.authenticate("PLAIN", lambda _challenge: blob)
        elif args.auth == "sasl-ir":
            blob = b"\0" + user.encode("utf-8") + b"\0" + pw.encode("utf-8")
            ir = base64.b64encode(blob).decode("ascii")
            typ, dat = m._simple_command("AUTHENTICATE", "PLAIN", ir)
            if typ == "OK":
                m.state = "AUTH"
        else:
            raise Fail("unknown auth method %s" % args.auth)
    except imaplib.IMAP4.error as e:
        raise Fail("auth %s: %s" % (args.auth, e))
    if typ != "OK":
        raise Fail("auth %s: %s %r" % (args.auth, typ, dat))
    out("OK auth %s" % args.auth)


def check(resp, what):
    typ, dat = resp
    if typ != "OK":
        raise Fail("%s: %s %r" % (what, typ, dat))
    return dat


def fetch_uid(m, uid):
    dat = check(m.uid("FETCH", str(uid), "(BODY.PEEK[])"), "UID FETCH %s" % uid)
    for item in dat:
        if isinstance(item, tuple) and len(item) == 2:
            return item[1]
    raise Fail("no body for UID %s: %r" % (uid, dat))


def sized_message(size):
    head = b"From: py@imapmux.test\r\nTo: user@imapmux.test\r\nSubject: py sized %d\r\n\r\n" % size
    if size < len(head) + 2:
        raise Fail("size too small")
    body = bytearray()
    i = 0
    while len(head) + len(body) < size:
        remaining = size - len(head) - len(body)
        line = b"py line %06d " % i
        n = 78 if remaining > 156 else (remaining if remaining <= 78 else remaining // 2)
        line = (line + b"x" * n)[: n - 2] + b"\r\n"
        body += line
        i += 1
    msg = head + bytes(body)
    assert len(msg) == size, (len(msg), size)
    return msg


def act_capability(m, args):
    out("CAPS-PRE %s" % " ".join(m.capabilities))
    authenticate(m, args)
    typ, dat = m.capability()
    out("CAPS-POST %s" % dat[0].decode("utf-8", "replace"))


def act_login(m, args):
    authenticate(m, args)
    check(m.noop(), "NOOP")
    out("OK login")


def act_login_fail(m, args):
    try:
        authenticate(m, args)
    except Fail as e:
        out("OK login-fail %s" % e)
        return
    raise Fail("login unexpectedly succeeded")


def act_login_fetch(m, args):
    authenticate(m, args)
    check(m.select(args.mailbox, readonly=True), "SELECT")
    body = fetch_uid(m, args.uid)
    out("OK fetched uid=%d len=%d sha256=%s" % (args.uid, len(body), hashlib.sha256(body).hexdigest()))
    if args.out:
        with open(args.out, "wb") as f:
            f.write(body)
    else:
        out("BODY64 %s" % base64.b64encode(body).decode("ascii"))


def act_fetch_all(m, args):
    authenticate(m, args)
    check(m.select(args.mailbox, readonly=True), "SELECT")
    dat = check(m.uid("SEARCH", None, "ALL"), "UID SEARCH")
    uids = [int(u) for u in dat[0].split()]
    for uid in uids:
        body = fetch_uid(m, uid)
        out("MSG uid=%d len=%d sha256=%s" % (uid, len(body), hashlib.sha256(body).hexdigest()))
    out("OK fetch-all count=%d" % len(uids))


def act_append_verify(m, args):
    authenticate(m, args)
    msg = sized_message(args.size)
    dat = check(m.append(args.mailbox, None, None, msg), "APPEND")
    text = b" ".join(d for d in dat if isinstance(d, bytes)).decode("utf-8", "replace")
    mo = re.search(r"\[APPENDUID (\d+) (\d+)\]", text)
    check(m.select(args.mailbox), "SELECT")
    if mo:
        uid = int(mo.group(2))
    else:
        dat = check(m.uid("SEARCH", None, "ALL"), "UID SEARCH")
        uid = int(dat[0].split()[-1])
    body = fetch_uid(m, uid)
    if body != msg:
        raise Fail("append-verify mismatch: sent %d bytes, got %d" % (len(msg), len(body)))
    out("OK append-verify uid=%d size=%d" % (uid, len(body)))


def read_line(m):
    line = m.readline()
    if not line:
        raise Fail("connection closed")
    return line


def act_idle_wait(m, args):
    authenticate(m, args)
    typ, dat = m.select(args.mailbox)
    if typ != "OK":
        raise Fail("SELECT %r" % dat)
    exists = int(dat[0])
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    while True:
        line = read_line(m)
        if line.startswith(b"+"):
            break
        if line.startswith(tag):
            raise Fail("IDLE refused: %r" % line)
    out("IDLING exists=%d" % exists)
    deadline = time.time() + args.timeout
    got = None
    while got is None:
        remaining = deadline - time.time()
        if remaining <= 0:
            raise Fail("no EXISTS within %ss" % args.timeout)
        m.sock.settimeout(remaining)
        try:
            line = read_line(m)
        except (socket.timeout, TimeoutError):
            raise Fail("no EXISTS within %ss" % args.timeout)
        mo = re.match(rb"\* (\d+) EXISTS", line)
        if mo and int(mo.group(1)) > exists:
            got = int(mo.group(1))
    m.sock.settimeout(args.io_timeout)
    out("EXISTS %d" % got)
    m.send(b"DONE\r\n")
    while True:
        line = read_line(m)
        if line.startswith(tag + b" "):
            if not line[len(tag) + 1:].upper().startswith(b"OK"):
                raise Fail("IDLE ended with %r" % line)
            break
    out("OK idle-wait")


def act_sasl(m, args, method):
    args.auth = method
    authenticate(m, args)
    check(m.noop(), "NOOP")
    out("OK %s" % method)


def act_select(m, args):
    authenticate(m, args)
    dat = check(m.select(args.mailbox, readonly=True), "SELECT")
    out("EXISTS %d" % int(dat[0]))


def act_list(m, args):
    authenticate(m, args)
    for item in check(m.list(), "LIST"):
        out("MAILBOX %s" % item.decode("utf-8", "replace"))
    out("OK list")


ACTIONS = {
    "capability": act_capability,
    "login": act_login,
    "login-fail": act_login_fail,
    "login-fetch": act_login_fetch,
    "fetch-all": act_fetch_all,
    "append-verify": act_append_verify,
    "idle-wait": act_idle_wait,
    "sasl-ir": lambda m, a: act_sasl(m, a, "sasl-ir"),
    "auth-plain": lambda m, a: act_sasl(m, a, "plain"),
    "select": act_select,
    "list": act_list,
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tls", action="store_true", help="implicit TLS")
    g.add_argument("--starttls", action="store_true")
    p.add_argument("--cafile")
    p.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--auth", choices=["login", "plain", "sasl-ir"], default="login")
    p.add_argument("--mailbox", default="INBOX")
    p.add_argument("--io-timeout", type=float, default=30.0)
    p.add_argument("action", choices=sorted(ACTIONS))
    p.add_argument("--uid", type=int, default=1)
    p.add_argument("--out")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    if (args.tls or args.starttls) and not (args.cafile or args.insecure):
        p.error("--tls/--starttls need --cafile or --insecure")
    m = None
    try:
        m = connect(args)
        ACTIONS[args.action](m, args)
        try:
            m.logout()
        except Exception:
            pass
        return 0
    except (Fail, imaplib.IMAP4.error, OSError, ssl.SSLError) as e:
        out("FAIL %s: %s" % (args.action, e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
