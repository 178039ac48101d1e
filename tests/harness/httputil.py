"""Small HTTP helpers shared by the gateway and the GitHub mock (stdlib only)."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
    "host",
}


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tasuki-local"
    logger = logging.getLogger("http")

    def log_message(self, fmt: str, *args: Any) -> None:  # silence the default stderr access log
        return

    # Every verb goes to one method, whatever the path; subclasses route inside it.
    def handle_request(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.handle_request()

    def do_POST(self) -> None:
        self.handle_request()

    def do_PUT(self) -> None:
        self.handle_request()

    def do_DELETE(self) -> None:
        self.handle_request()

    def do_PATCH(self) -> None:
        self.handle_request()

    def read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            for _ in range(1_000_000):  # bounded: at most that many chunks
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    for _ in range(1000):
                        if self.rfile.readline(65537) in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_bytes(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        has_ct = False
        for k, v in headers:
            if k.lower() in HOP_BY_HOP or k.lower() in ("server", "date"):
                continue
            if k.lower() == "content-type":
                has_ct = True
            self.send_header(k, v)
        if body and not has_ct:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def send_json(self, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        body = b"" if obj is None else json.dumps(obj).encode()
        hdrs = list(headers)
        if obj is not None and not any(k.lower() == "content-type" for k, _ in hdrs):
            hdrs.append(("Content-Type", "application/json; charset=utf-8"))
        self.send_bytes(status, body, hdrs)


def forward(
    port: int,
    method: str,
    path: str,
    body: bytes,
    headers: Iterable[tuple[str, str]],
    timeout: float,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send one request to 127.0.0.1:port and return (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        host_sent = False
        for k, v in headers:
            lk = k.lower()
            if lk == "host":
                conn.putheader(k, v)
                host_sent = True
                continue
            if lk in HOP_BY_HOP:
                continue
            conn.putheader(k, v)
        if not host_sent:
            conn.putheader("Host", f"127.0.0.1:{port}")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Connection", "close")
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, list(resp.getheaders()), data
    finally:
        conn.close()


def json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
