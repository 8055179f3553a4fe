"""What keeps ``tagger serve`` private: the bind address and its access token, the Host header, and
the CSRF token every write carries.

* Loopback binds (127.0.0.1, ::1, localhost) need no token; any other bind needs one
  (:func:`check_bind`), given or generated. With a token, a request carries it once as ``?token=``
  (it is then kept in an HttpOnly cookie) or as ``Authorization: Bearer``; others get 401.
* Only the Host names the server answers to are accepted (a DNS-rebinding page gets 400).
* Writes (POST) need the per-process CSRF token that every page embeds in its forms; a POST from
  another origin (``Origin`` not this server) is refused as well.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from urllib.parse import quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError

__all__ = ["COOKIE", "AccessGuard", "check_bind", "is_loopback", "new_token", "same_token"]

logger = logging.getLogger(__name__)

COOKIE = "tagger_token"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def new_token() -> str:
    """A fresh random token (URL-safe)."""
    return secrets.token_urlsafe(24)


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a token from a request with the expected one."""
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name) only reaches this machine."""
    h = host.strip().strip("[]").lower()
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """ConfigError when ``host`` is not loopback and no token guards it."""
    if not is_loopback(host) and not token:
        raise ConfigError(f"binding {host} exposes the workspace beyond this machine: it needs an access token "
                          "(--token TOKEN, or --token auto to generate one)")


def _host_only(value: str) -> str:
    if value.startswith("["):  # [::1]:8000
        return value[1:].split("]", 1)[0].lower()
    return value.rsplit(":", 1)[0].lower() if value.count(":") == 1 else value.lower()


class AccessGuard:
    """ASGI middleware: Host check, access token, CSRF token on writes."""

    def __init__(self, app: ASGIApp, *, bind: str, token: str | None, csrf: str,
                 allowed_hosts: list[str] | None = None) -> None:
        self.app, self.token, self.csrf = app, token, csrf
        hosts = set(allowed_hosts or [])
        hosts |= {"127.0.0.1", "localhost", "::1"} if is_loopback(bind) else set()
        if not is_loopback(bind) and bind not in ("0.0.0.0", "::"):
            hosts.add(bind.strip("[]").lower())
        self.any_host = not is_loopback(bind) and bind in ("0.0.0.0", "::") and not allowed_hosts
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        given = request.query_params.get("token")
        if self.token and given and request.method == "GET" and same_token(given, self.token):
            # keep the token in a cookie and drop it from the address bar
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"], quote_via=quote)
            raw = scope.get("raw_path") or quote(request.url.path).encode()
            path = "/" + raw.decode("latin-1").lstrip("/")  # as sent (still encoded); never `//host`
            target = path + (f"?{query}" if query else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        host = _host_only(request.headers.get("host", ""))
        if not self.any_host and host not in self.hosts:
            return PlainTextResponse(f"error: this server does not answer for host {host!r}", status_code=400)
        if self.token and not self._authorised(request):
            return PlainTextResponse("error: an access token is needed (open the address tagger serve printed, "
                                     "with ?token=...)", status_code=401)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin and origin != "null" and _host_only(urlsplit(origin).netloc) != host:
                return PlainTextResponse("error: a write from another site was refused", status_code=403)
        return None

    def _authorised(self, request: Request) -> bool:
        assert self.token is not None
        auth = request.headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        return any(same_token(t, self.token) for t in (request.cookies.get(COOKIE), bearer,
                                                        request.query_params.get("token")))
