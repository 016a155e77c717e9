"""Local test servers for notification tests: a minimal SMTP sink and an HTTP receiver
(DingTalk-robot style), each in a thread on 127.0.0.1 with an OS-assigned port."""

from __future__ import annotations

import email
import json
import socketserver
import threading
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def _send(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())

    def handle(self) -> None:
        self._send("220 sink ESMTP")
        sender, rcpts = None, []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            cmd = raw.decode("utf-8", "replace").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self._send("250-sink")
                self._send("250 8BITMIME")
            elif verb == "HELO":
                self._send("250 sink")
            elif verb == "MAIL":
                sender, rcpts = cmd.split(":", 1)[1].strip(" <>"), []
                self._send("250 OK")
            elif verb == "RCPT":
                rcpts.append(cmd.split(":", 1)[1].strip(" <>"))
                self._send("250 OK")
            elif verb == "DATA":
                self._send("354 end with .")
                lines = []
                while True:
                    line = self.rfile.readline()
                    if line in (b".\r\n", b".\n", b""):
                        break
                    lines.append(line[1:] if line.startswith(b"..") else line)
                self.server.messages.append({"from": sender, "to": rcpts, "data": b"".join(lines)})
                self._send("250 queued")
            elif verb in ("RSET", "NOOP"):
                self._send("250 OK")
            elif verb == "QUIT":
                self._send("221 bye")
                return
            else:
                self._send("502 not implemented")


class _Background:
    """A socketserver on 127.0.0.1 (a free port) served from a daemon thread for a ``with`` block."""

    def _serve(self, server) -> None:
        self.server = server
        self.port = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class SmtpSink(_Background):
    """``with SmtpSink() as s:`` ... ``s.port``, ``s.messages`` (parsed with :meth:`parsed`)."""

    def __enter__(self):
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
        server.daemon_threads = True
        server.messages = []
        self._serve(server)
        return self

    @property
    def messages(self) -> list[dict]:
        return self.server.messages

    def parsed(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(m["data"], policy=policy.default) for m in self.messages]


class _HookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlparse(self.path)
        self.server.requests.append({"path": url.path, "query": parse_qs(url.query), "body": body.decode("utf-8"),
                                     "json": json.loads(body or b"{}")})
        ok = self.server.status == 200
        payload = json.dumps({"errcode": 0 if ok else 310000, "errmsg": "ok" if ok else "keywords not in content"})
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args) -> None:  # keep test output clean
        pass


class HookReceiver(_Background):
    """``with HookReceiver() as h:`` ... ``h.url``, ``h.requests``; ``status`` to make it refuse."""

    def __init__(self, status: int = 200):
        self.status = status

    def __enter__(self):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _HookHandler)
        server.requests = []
        server.status = self.status
        self._serve(server)
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    @property
    def requests(self) -> list[dict]:
        return self.server.requests
