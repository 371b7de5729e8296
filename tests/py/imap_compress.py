#!/usr/bin/env python3
"""A raw IMAP client with COMPRESS=DEFLATE (RFC 4978), stdlib only (socket,
ssl, zlib with raw deflate, wbits=-15), as a mail client does it: after
LOGIN it sends COMPRESS DEFLATE and from the tagged OK on, compresses what
it sends (a sync flush per command) and inflates what it reads.

    imap_compress.py --host H --port P [--tls --cafile F] --user U --password P ACTION

Actions (each prints a transcript on stdout that Rust tests compare):
  session --append-size N   COMPRESS, SELECT INBOX, FETCH every body, APPEND
                            an N-byte message (synchronizing literal), fetch
                            it back by UID and compare, NOOP, LOGOUT
  idle                      COMPRESS, SELECT INBOX, IDLE; prints "IDLING",
                            waits (60 s at most) for a new EXISTS, DONE,
                            NOOP, LOGOUT

Response lines are printed as read (literals as "{N sha256=...}"), Dovecot's
timing suffix "(0.001 + 0.000 secs)" removed. Last line: "WIRE sent=A
received=B plain_sent=C plain_received=D" (bytes on the socket vs inside).
Exit status 0, or 1 with "FAIL ..." on a protocol failure.
"""

import argparse
import hashlib
import re
import socket
import ssl
import sys
import zlib

TIMING = re.compile(rb" \((\d+\.\d+ \+ )+\d+\.\d+ secs\)\.")


class Fail(Exception):
    pass


class Conn:
    def __init__(self, args):
        s = socket.create_connection((args.host, args.port), timeout=60)
        if args.tls:
            ctx = ssl.create_default_context(cafile=args.cafile)
            s = ctx.wrap_socket(s, server_hostname="localhost")
        self.s = s
        self.buf = b""
        self.z_out = None
        self.z_in = None
        self.sent = self.received = self.plain_sent = self.plain_received = 0
        self.tag = 0

    def start_compress(self):
        self.z_out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.z_in = zlib.decompressobj(-15)
        # Whatever was read past the OK is compressed already.
        raw, self.buf = self.buf, b""
        if raw:
            self.buf = self.z_in.decompress(raw)

    def send(self, data):
        self.plain_sent += len(data)
        if self.z_out:
            data = self.z_out.compress(data) + self.z_out.flush(zlib.Z_SYNC_FLUSH)
        self.sent += len(data)
        self.s.sendall(data)

    def fill(self):
        raw = self.s.recv(65536)
        if not raw:
            raise Fail("connection closed")
        self.received += len(raw)
        data = self.z_in.decompress(raw) if self.z_in else raw
        self.plain_received += len(data)
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self):
        """One response (line plus literals), as printable text, and the
        literal data."""
        text, lits = b"", []
        while True:
            line = self.line()
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                text += line
                return text, lits
            data = self.exact(int(m.group(1)))
            lits.append(data)
            text += line[: m.start()] + b"{%d sha256=%s}" % (
                len(data), hashlib.sha256(data).hexdigest()[:16].encode())

    def cmd(self, command, log, literal=None):
        self.tag += 1
        tag = b"c%d" % self.tag
        if literal is None:
            self.send(tag + b" " + command + b"\r\n")
        else:
            self.send(tag + b" " + command + b" {%d}\r\n" % len(literal))
            line = self.line()
            if not line.startswith(b"+"):
                raise Fail("literal refused: %r" % line)
            self.send(literal + b"\r\n")
        lits = []
        while True:
            text, l = self.response()
            lits += l
            shown = TIMING.sub(b".", text)
            log.append(shown.replace(tag + b" ", b"TAG ", 1) if shown.startswith(tag + b" ") else shown)
            if text.startswith(tag + b" "):
                if not text[len(tag) + 1:].startswith(b"OK"):
                    raise Fail("%s: %r" % (command[:30], text))
                return text, lits


def session(c, args, log):
    c.cmd(b"SELECT INBOX", log)
    c.cmd(b"FETCH 1:* (UID BODY.PEEK[])", log)
    # Mail-like: 76-character lines of varied printable text.
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,"
    text = bytes(alphabet[(i * i * 31 + i * 7) % len(alphabet)] for i in range(args.append_size))
    lines = [text[i:i + 76] for i in range(0, len(text), 76)]
    body = b"Subject: compressed append\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    text, _ = c.cmd(b"APPEND INBOX", log, literal=body)
    m = re.search(rb"APPENDUID \d+ (\d+)", text)
    if not m:
        raise Fail("no APPENDUID: %r" % text)
    _, lits = c.cmd(b"UID FETCH %s (BODY.PEEK[])" % m.group(1), [])
    if lits != [body]:
        raise Fail("appended message differs")
    log.append(b"APPEND byte-exact %d\r\n" % len(body))
    # Leave the mailbox as it was (the next run compares with this one).
    c.cmd(b"UID STORE %s +FLAGS.SILENT (\\Deleted)" % m.group(1), log)
    c.cmd(b"UID EXPUNGE %s" % m.group(1), log)
    c.cmd(b"NOOP", log)


def idle(c, args, log):
    sel = []
    c.cmd(b"SELECT INBOX", sel)
    log += sel
    exists = int(re.search(rb"\* (\d+) EXISTS", b"".join(sel)).group(1))
    c.tag += 1
    tag = b"c%d" % c.tag
    c.send(tag + b" IDLE\r\n")
    if not c.line().startswith(b"+"):
        raise Fail("IDLE refused")
    print("IDLING", flush=True)
    while True:
        line = c.line()
        m = re.match(rb"\* (\d+) EXISTS", line)
        if m and int(m.group(1)) > exists:
            log.append(line)
            break
    c.send(b"DONE\r\n")
    while True:
        line = c.line()
        if line.startswith(tag + b" "):
            log.append(TIMING.sub(b".", line).replace(tag, b"TAG", 1))
            break
        log.append(line)
    c.cmd(b"NOOP", log)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--cafile")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--append-size", type=int, default=100000)
    ap.add_argument("action", choices=["session", "idle"])
    args = ap.parse_args()
    log = []
    c = Conn(args)
    try:
        c.line()  # greeting
        text, _ = c.cmd(b'LOGIN "%s" "%s"' % (args.user.encode(), args.password.encode()), [])
        if b"COMPRESS=DEFLATE" not in text:
            raise Fail("COMPRESS=DEFLATE not offered: %r" % text)
        c.cmd(b"COMPRESS DEFLATE", log)
        c.start_compress()
        {"session": session, "idle": idle}[args.action](c, args, log)
        c.cmd(b"LOGOUT", log)
    except (Fail, OSError, zlib.error) as e:
        sys.stdout.write(b"".join(log).decode("utf-8", "replace"))
        print("FAIL %s" % e)
        sys.exit(1)
    sys.stdout.write(b"".join(log).decode("utf-8", "replace"))
    print("WIRE sent=%d received=%d plain_sent=%d plain_received=%d"
          % (c.sent, c.received, c.plain_sent, c.plain_received), flush=True)


if __name__ == "__main__":
    main()
