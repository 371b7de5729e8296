#!/usr/bin/env python3
"""A raw POP3 client for the tests: the exact bytes of each response.

pop3_raw.py ADDR MODE USER PASS CMD...

MODE: plain | implicit (TLS from the first byte) | stls (STLS first).
Logs in with USER/PASS, sends each CMD (one at a time) and writes every
response after the login, byte for byte, to stdout. Multi-line responses
(RETR, TOP, CAPA, and LIST/UIDL without an argument) are read up to their
terminating ".\r\n" line. Certificates are not verified (self-signed test
certificates).
"""
import socket
import ssl
import sys


def tls_wrap(s):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(s)


class Conn:
    def __init__(self, addr, mode):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=120)
        if mode == "implicit":
            self.s = tls_wrap(self.s)
        self.buf = bytearray()
        self.line()  # greeting
        if mode == "stls":
            self.send(b"STLS\r\n")
            r = self.line()
            assert r.startswith(b"+OK"), r
            self.s = tls_wrap(self.s)

    def send(self, b):
        self.s.sendall(b)

    def fill(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        i = self.buf.index(b"\r\n") + 2
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def multi(self):
        first = self.line()
        if not first.startswith(b"+OK"):
            return first
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                end = 3
                break
            j = self.buf.find(b"\r\n.\r\n", start)
            if j >= 0:
                end = j + 5
                break
            start = max(0, len(self.buf) - 4)
            self.fill()
        body = bytes(self.buf[:end])
        del self.buf[:end]
        return first + body


def main():
    addr, mode, user, pw = sys.argv[1:5]
    c = Conn(addr, mode)
    c.send(b"USER " + user.encode() + b"\r\n")
    r = c.line()
    if not r.startswith(b"+OK"):
        sys.stdout.buffer.write(r)
        return 1
    c.send(b"PASS " + pw.encode() + b"\r\n")
    r = c.line()
    if not r.startswith(b"+OK"):
        sys.stdout.buffer.write(r)
        return 1
    out = sys.stdout.buffer
    for cmd in sys.argv[5:]:
        c.send(cmd.encode() + b"\r\n")
        words = cmd.upper().split()
        multi = words[0] in ("RETR", "TOP", "CAPA") or (
            words[0] in ("LIST", "UIDL") and len(words) == 1
        )
        out.write(c.multi() if multi else c.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
