"""Which requests may reach the service at all: Host, Origin and content type.

A service bound to a loopback address is reachable by any web page its user visits: the page
can POST to it (CSRF) or rebind a DNS name of its own to 127.0.0.1 (DNS rebinding). Both fail
here: on a loopback bind the ``Host`` header must name a loopback address (with the bound port),
an ``Origin`` header, when sent, must be a loopback origin, and every body must be declared
``application/json`` (browsers send ``text/plain`` and forms without a preflight), or, on
``POST /v1/plans``, a columnar problem (:data:`mpq.service.columns.PROBLEM_COLUMNS`, also a type
that needs a preflight). Runs as plain ASGI middleware, before routing and before any body is read.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Optional
from urllib.parse import urlsplit

#: host names that always mean this machine
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
#: methods whose body the service reads
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``), bracketed or not."""
    host = host.strip().lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def split_host(value: str) -> tuple[str, Optional[int]]:
    """``host[:port]`` (IPv6 in brackets) as (host, port); a malformed port is -1."""
    try:
        parts = urlsplit(f"//{value}")
        return (parts.hostname or ""), parts.port
    except ValueError:
        return "", -1


def is_columnar_problem(content_type: str, path: str) -> bool:
    """A columnar problem (``.npz``), which only ``POST /v1/plans`` reads."""
    from .columns import PROBLEM_COLUMNS, media_type

    return path.rstrip("/") == "/v1/plans" and media_type(content_type) == PROBLEM_COLUMNS


def is_json(content_type: str) -> bool:
    """``application/json``, with or without parameters such as ``charset=utf-8``."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class RequestGuard:
    """ASGI middleware: refuses foreign ``Host``/``Origin`` on loopback binds (400/403) and non-JSON bodies (415)."""

    def __init__(self, app, *, loopback: bool, port: Optional[int]):
        self.app, self.loopback, self.port = app, loopback, port

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, detail = refusal
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope) -> Optional[tuple[int, str]]:
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", ()):
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        if self.loopback:
            host, port = split_host(headers.get("host", ""))
            ports = {self.port} | ({None} if self.port == 80 else set())
            if not is_loopback(host) or (self.port is not None and port not in ports):
                return 400, (
                    f"Host: {headers.get('host', '')!r} is not this loopback service"
                    + (f" (expected 127.0.0.1:{self.port} or localhost:{self.port})" if self.port else "")
                )
            origin = headers.get("origin")
            if origin is not None:
                o = urlsplit(origin)
                try:
                    origin_host = o.hostname or ""
                except ValueError:
                    origin_host = ""
                if o.scheme not in ("http", "https") or not is_loopback(origin_host):
                    return 403, f"Origin: {origin!r} may not call this loopback service; only loopback origins may"
        content_type = headers.get("content-type", "")
        if scope.get("method") in BODY_METHODS and not (is_json(content_type) or is_columnar_problem(content_type, scope.get("path", ""))):
            got = headers.get("content-type")
            return 415, f"Content-Type: expected application/json, got {got!r}" if got else "Content-Type: expected application/json, got none"
        return None
