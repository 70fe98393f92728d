"""A token-enforcing stand-in for Restate Cloud: a reverse proxy on 127.0.0.1.

Requests without `Authorization: Bearer <token>` get 401 `{"message": "unauthorized"}`;
everything else is forwarded (method, path, query, body, the headers that matter, never the
Authorization header) to a target base URL, and its status, body and content type come back.

    with serve("http://127.0.0.1:9070", token) as url:
        ...  # talk to `url` as if it were a Cloud admin API
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

# Request headers passed on to the target (lower case); Authorization never is.
FORWARDED = (
    "content-type",
    "accept",
    "idempotency-key",
    "x-restate-id",
    "user-agent",
)
UNAUTHORIZED = json.dumps({"message": "unauthorized"}).encode()


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True  # a kept-alive client connection never blocks shutdown
    allow_reuse_address = True
    request_queue_size = 128  # 20+ clients connect at once

    def __init__(self, target: str, token: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.target = target.rstrip("/")
        self.expected = f"Bearer {token}".encode()
        self.client = httpx.Client(
            base_url=self.target,
            timeout=httpx.Timeout(120.0, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=40),
        )
        self.requests = 0
        self.refused = 0
        self._lock = threading.Lock()

    def count(self, refused: bool) -> None:
        with self._lock:
            self.requests += 1
            self.refused += refused

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: ProxyServer
    protocol_version = "HTTP/1.1"  # keep-alive, always with Content-Length
    timeout = 30  # an idle kept-alive connection is dropped after this many seconds

    def _proxy(self) -> None:
        body = self._read_body()
        given = self.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self.server.expected):
            self.server.count(refused=True)
            self._answer(401, UNAUTHORIZED, "application/json")
            return
        self.server.count(refused=False)
        headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}
        try:
            resp = self.server.client.request(
                self.command, self.path, content=body or None, headers=headers
            )
        except httpx.HTTPError as exc:
            message = json.dumps({"message": f"proxy: target unreachable: {type(exc).__name__}"})
            self._answer(502, message.encode(), "application/json")
            return
        self._answer(resp.status_code, resp.content, resp.headers.get("content-type"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _proxy

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest output stays readable (and no request line is ever logged)


@contextmanager
def serve_server(target_url: str, token: str) -> Iterator[ProxyServer]:
    """The running proxy server itself (its `url`, `requests` and `refused` counters)."""
    server = ProxyServer(target_url, token)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        server.client.close()
        thread.join(timeout=5)


@contextmanager
def serve(target_url: str, token: str) -> Iterator[str]:
    """Run a token-enforcing proxy in front of `target_url`; yields the proxy's base URL."""
    with serve_server(target_url, token) as server:
        yield server.url
