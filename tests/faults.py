"""Fault injection for tests: an HTTP proxy in front of the cluster that fails, delays or drops
chosen requests, and records every request it forwards.

Rules pick requests by method, a path pattern and which occurrence (the n-th match); a rule
acts *before* forwarding (the cluster never sees the request) or *after* (the cluster applied
it, the caller never learns: the ambiguous failure a timeout produces). A clean run through the
proxy yields the list of calls a command makes (:meth:`FaultProxy.calls`), which a sweep then
fails one at a time, so a new cluster call is covered without a new test.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Rule:
    """What to do to the ``nth`` request matching ``method`` and ``path`` (a regex searched in
    the path without its query), and to the ``times - 1`` matching ones after it."""

    method: str | None
    path: str
    action: str = "fail"  # fail (answer ``status``), drop (close the connection), delay, call
    nth: int = 1
    times: int = 1
    status: int = 503
    seconds: float = 0.0
    after: bool = False  # act after the cluster has handled the request
    hook: Callable[[], None] | None = None
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if not re.search(self.path, path):
            return False
        self.seen += 1
        if self.nth <= self.seen < self.nth + self.times:
            self.fired += 1
            return True
        return False


@dataclass(frozen=True)
class Call:
    method: str
    path: str


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def _any(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(self.path).path
        rule = proxy.rule_for(self.command, path)
        if rule is not None and not rule.after and self._act(rule):
            return
        status, headers, data = proxy.forward(self.command, self.path, self.headers, body)
        proxy.record(self.command, path)
        if rule is not None and rule.after and self._act(rule):
            return
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _act(self, rule: Rule) -> bool:
        """Apply ``rule``; True when the request is answered (or dropped) by it."""
        if rule.action == "delay":
            time.sleep(rule.seconds)
            return False
        if rule.action == "call":
            if rule.hook is not None:
                rule.hook()
            return False
        if rule.action == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        data = b'{"error":{"type":"injected_fault","reason":"fault injected by the test proxy"},"status":%d}' % rule.status
        self.send_response(rule.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: "FaultProxy"


@dataclass
class FaultProxy:
    """A proxy to ``upstream``; ``url`` is where to point ELASTICSEARCH_URL."""

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    _calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.upstream)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 9200
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self._calls.clear()

    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def rule_for(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    return rule
        return None

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self._calls.append(Call(method, path))

    def forward(self, method: str, target: str, headers: object, body: bytes) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=120)
        try:
            sent = {name: value for name, value in headers.items()  # type: ignore[attr-defined]
                    if name.lower() not in ("host", "connection", "content-length")}
            sent["content-length"] = str(len(body))
            connection.request(method, target, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()
