#!/usr/bin/env python3
"""A raw ManageSieve client for the tests (RFC 5804).

sieve_raw.py ADDR TLS USER PASS AUTHFORM SCRIPTFILE NAME

TLS: none | starttls. AUTHFORM: ir-quoted (AUTHENTICATE "PLAIN" "b64"),
ir-literal (the initial response as a {N+} literal) or challenge (no
initial response: answer the server's "" with a literal). Uploads
SCRIPTFILE as NAME (PUTSCRIPT with a {N+} literal), then writes the raw
bytes of the GETSCRIPT and LISTSCRIPTS responses to stdout. On a refused
step, prints the server's line and exits 2.
"""
import base64
import socket
import ssl
import sys


class Conn:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=60)
        self.buf = bytearray()

    def fill(self):
        d = self.s.recv(1 << 16)
        if not d:
            raise EOFError("connection closed; buffered: %r" % bytes(self.buf))
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        i = self.buf.index(b"\r\n") + 2
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def response(self):
        """Everything up to and including the OK/NO/BYE line, literals
        included, raw."""
        out = b""
        while True:
            l = self.line()
            out += l
            s = l.rstrip(b"\r\n")
            if s.endswith(b"}") and b"{" in s:
                n = int(s[s.rindex(b"{") + 1 : -1].rstrip(b"+"))
                while len(self.buf) < n:
                    self.fill()
                out += bytes(self.buf[:n])
                del self.buf[:n]
                continue
            if s[:2] == b"OK" or s[:2] == b"NO" or s[:3] == b"BYE":
                return out, s

    def send(self, b):
        self.s.sendall(b)


def fail(line):
    sys.stdout.buffer.write(line + b"\n")
    sys.exit(2)


def main():
    addr, tls, user, pw, form, script_file, name = sys.argv[1:8]
    script = open(script_file, "rb").read()
    c = Conn(addr)
    _, last = c.response()
    if tls == "starttls":
        c.send(b"STARTTLS\r\n")
        _, last = c.response()
        if not last.startswith(b"OK"):
            fail(last)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.s = ctx.wrap_socket(c.s)
        _, last = c.response()  # capabilities again
    b64 = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode())
    if form == "ir-quoted":
        c.send(b'AUTHENTICATE "PLAIN" "' + b64 + b'"\r\n')
    elif form == "ir-literal":
        c.send(b'AUTHENTICATE "PLAIN" {%d+}\r\n' % len(b64) + b64 + b"\r\n")
    else:
        c.send(b'AUTHENTICATE "PLAIN"\r\n')
        challenge = c.line()
        if challenge not in (b'""\r\n', b"{0}\r\n"):
            fail(challenge)
        if challenge == b"{0}\r\n":
            c.line()
        c.send(b"{%d+}\r\n" % len(b64) + b64 + b"\r\n")
    _, last = c.response()
    if not last.startswith(b"OK"):
        fail(last)
    c.send(b'PUTSCRIPT "' + name.encode() + b'" {%d+}\r\n' % len(script) + script + b"\r\n")
    _, last = c.response()
    if not last.startswith(b"OK"):
        fail(last)
    c.send(b'GETSCRIPT "' + name.encode() + b'"\r\n')
    got, _ = c.response()
    sys.stdout.buffer.write(got)
    c.send(b"LISTSCRIPTS\r\n")
    got, _ = c.response()
    sys.stdout.buffer.write(got)
    c.send(b"LOGOUT\r\n")
    c.response()
    return 0


if __name__ == "__main__":
    sys.exit(main())
