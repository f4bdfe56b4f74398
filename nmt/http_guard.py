"""What stands between the network and the service's routes.

- `GuardMiddleware` (ASGI): checks the `Host` header against the allowed names (a web
  page on another site cannot reach a loopback server through DNS rebinding), requires
  `Content-Type: application/json` on POST (a plain HTML form cannot post), adds
  `Content-Security-Policy` and `X-Content-Type-Options: nosniff` to every answer, and
  turns an unexpected error into a JSON 500 with one log line instead of a traceback.
- `guarded_protocol(...)`: uvicorn's h11 protocol with a deadline on request headers and
  a cap on the connections of one client address (uvicorn has neither option).
"""

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Iterable

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
SECURITY_HEADERS = (
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def error_body(status: int, message: str) -> bytes:
    """The JSON of every error answer (ASCII, so that any message can be sent)."""
    return json.dumps({"error": {"status": status, "message": message}}).encode("ascii")


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The `Host` names a server listening on `host` answers: the loopback names, `host`
    itself and `extra` (`"*"` among them: any name)."""
    return frozenset(name.lower().strip("[]") for name in (*LOOPBACK_NAMES, host, *extra))


def host_name(header: str) -> str:
    """The name in a `Host` header, without the port: `[::1]:8000` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class GuardMiddleware:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app, hosts: frozenset[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            logger.warning("%s %s from %s: %d %s", scope["method"], scope["path"],
                           _client(scope), *refusal)
            await send_error(send, *refusal)
            return
        started = False

        async def send_secured(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []),
                                                  *SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, receive, send_secured)
        except Exception as error:  # noqa: BLE001 - one JSON answer and one log line each
            logger.error("%s %s from %s: 500 %s: %s", scope["method"], scope["path"],
                         _client(scope), type(error).__name__, str(error)[:200])
            if not started:
                await send_error(send, 500, f"internal error ({type(error).__name__})")

    def _refusal(self, scope) -> tuple[int, str] | None:
        """(status, message) for a request refused before it reaches a route, else None."""
        headers = {name: value.decode("latin-1") for name, value in scope["headers"]}
        name = host_name(headers.get(b"host", ""))
        if "*" not in self.hosts and name not in self.hosts:
            return 400, (f"Host {name!r} is not served here; allowed: "
                         f"{', '.join(sorted(self.hosts))} (translate.py serve --allow-host)")
        if scope["method"] == "POST":
            media_type = headers.get(b"content-type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                return 415, (f"Content-Type must be application/json, not "
                             f"{media_type or 'missing'}")
        return None


async def send_error(send, status: int, message: str,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send a whole JSON error answer through ASGI `send`."""
    body = error_body(status, message)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *headers, *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


def _client(scope) -> str:
    client = scope.get("client")
    return client[0] if client else "?"


def guarded_protocol(header_timeout: float, max_per_client: int) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's `H11Protocol` (pass it as `uvicorn.Config(http=...)`) that
    closes a connection whose request headers are not complete `header_timeout` seconds
    after it opened or after its last answer, and answers 503 to (and closes) a connection
    beyond the first `max_per_client` of one client address."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_connections: Counter[str] = Counter()
    refusal = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
               b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n")
    body = error_body(503, f"more than {max_per_client} connections from one address")
    refusal = refusal % len(body) + body

    class GuardedProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.address = self.client[0] if self.client else "?"
            self.header_timer: asyncio.TimerHandle | None = None
            open_connections[self.address] += 1
            if open_connections[self.address] > max_per_client:
                if open_connections[self.address] == max_per_client + 1:  # once per flood
                    logger.warning("%s holds %d connections; refusing more", self.address,
                                   max_per_client)
                transport.write(refusal)
                transport.close()
                return
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            open_connections[self.address] -= 1
            if open_connections[self.address] <= 0:
                del open_connections[self.address]
            if self.header_timer is not None:
                self.header_timer.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
            self.header_timer = self.loop.call_later(header_timeout, self._headers_overdue)

        def _headers_overdue(self) -> None:
            waiting_for_headers = self.cycle is None or self.cycle.response_complete
            if waiting_for_headers and not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol
