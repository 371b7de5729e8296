#!/usr/bin/env python3
"""A small nginx-style mail auth_http service for tests.

Usage: auth_http.py PORT USERS_JSON LOG_JSONL

USERS_JSON maps a login name to an object:
  {"password": "...",            # required; compared with the URL-decoded Auth-Pass
                                 # (null: any password is OK, the service only
                                 # routes and the backend checks the password)
   "server": "127.0.0.1", "port": 10143,   # Auth-Server / Auth-Port on success
   "user": "...", "pass": "...", # optional rewritten Auth-User / Auth-Pass
   "wait": 1,                    # Auth-Wait on failure
   "status": "text",             # Auth-Status text on failure
   "error_code": "LIMIT",        # Auth-Error-Code on failure
   "hold": "/path"}              # answer only once this file exists (holds
                                 # verifications in flight until a test says)
Every request is appended to LOG_JSONL as one JSON object: the connection
number (keep-alive shows as several requests on one connection) and all
request headers. The file is re-read on every request, so a test may
change users while the service runs.
"""

import itertools
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
USERS = sys.argv[2]
LOG = sys.argv[3]
CONNS = itertools.count(1)
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self):
        super().setup()
        self.conn_no = next(CONNS)

    def log_message(self, *args):
        pass

    def do_GET(self):
        # http.server decodes header bytes as Latin-1; they are UTF-8.
        headers = {k: v.encode("latin-1").decode("utf-8", "replace") for k, v in self.headers.items()}
        lower = {k.lower(): v for k, v in headers.items()}
        with LOCK, open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"conn": self.conn_no, "path": self.path, "headers": headers}) + "\n")
        with open(USERS, encoding="utf-8") as f:
            users = json.load(f)
        # nginx escapes space, % and control bytes as %XX; decode like an
        # auth service written for nginx does.
        user = urllib.parse.unquote(lower.get("auth-user", ""))
        password = urllib.parse.unquote(lower.get("auth-pass", ""))
        u = users.get(user)
        if u is not None and "hold" in u:
            while not os.path.exists(u["hold"]):
                time.sleep(0.01)
        out = []
        if u is not None and u["password"] in (None, password):
            out.append(("Auth-Status", "OK"))
            if "server" in u:
                out.append(("Auth-Server", u["server"]))
                out.append(("Auth-Port", str(u["port"])))
            if "user" in u:
                out.append(("Auth-User", u["user"]))
            if "pass" in u:
                out.append(("Auth-Pass", u["pass"]))
        else:
            u = u or {}
            out.append(("Auth-Status", u.get("status", "Invalid login or password")))
            if "wait" in u:
                out.append(("Auth-Wait", str(u["wait"])))
            if "error_code" in u:
                out.append(("Auth-Error-Code", u["error_code"]))
        self.send_response(200)
        for k, v in out:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
