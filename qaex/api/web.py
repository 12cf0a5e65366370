"""The web trading terminal: ``GET /`` (terminal), ``GET /admin`` and the files under ``/web/``.

The pages are plain ES modules shipped as package data in ``qaex/web`` (no build step, no third-party
JavaScript). They are served here, on their own blueprint so that they stay out of /openapi.json (they
are HTML and files, not API operations), with ``Cache-Control: no-cache`` and an ETag (the browser
revalidates, so a new version of qaex is picked up at the next load) and a Content-Security-Policy that
allows only the page's own scripts and styles. ``GET /api/web/config`` — an API operation, so declared
with :func:`qaex.api.http.route` and documented — tells the page where DIFF is (QAEX_PUBLIC_DIFF_URL,
else the DIFF port on the host the page was loaded from). See docs/web.md.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

import msgspec
from quart import Blueprint, request
from quart.wrappers import Response
from werkzeug.exceptions import NotFound

from qaex.api.diff_server import DIFF_PATH
from qaex.api.http import json_response, route, services

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
ASSET_PREFIX = "/web/"

pages = Blueprint("qaex_web", __name__)

# connect-src: DIFF is on another port (or, behind a proxy, another host), so any ws/wss target.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


class WebConfig(msgspec.Struct, frozen=True):
    """What the web terminal needs to know before it connects."""

    diff_url: str  # ws:// or wss:// URL of the DIFF endpoint, as the browser should open it


def default_diff_url(host_header: str, secure: bool, diff_port: int) -> str:
    """``ws(s)://<the page's host>:<diff_port>/ws/diff``; `host_header` may carry a port or be IPv6."""
    host = host_header or "127.0.0.1"
    if host.startswith("["):  # [::1]:8000
        host = host[: host.index("]") + 1] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return f"{'wss' if secure else 'ws'}://{host}:{diff_port}{DIFF_PATH}"


@route("GET", "/api/web/config", "Where the web terminal finds DIFF", answer=WebConfig)
async def web_config() -> Response:
    config = services().config
    url = config.public_diff_url or default_diff_url(
        request.host, request.scheme == "https", config.diff_port
    )
    return json_response(WebConfig(url), headers={"Cache-Control": "no-store"})


def _file(relative: str) -> Path:
    """The file `relative` under WEB_ROOT (never outside it, never the JS unit tests), else 404."""
    path = (WEB_ROOT / relative).resolve()
    if not path.is_relative_to(WEB_ROOT) or not path.is_file() or "tests" in path.relative_to(WEB_ROOT).parts:
        raise NotFound(f"no web file {relative!r}")
    return path


def _serve(path: Path) -> Response:
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith(("javascript", "+xml")):
        content_type += "; charset=utf-8"
    headers = {
        "Cache-Control": "no-cache",
        "ETag": etag,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    matches = [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]
    if etag in matches or f"W/{etag}" in matches:
        return Response(b"", status=304, headers=headers)
    return Response(body, status=200, headers=headers, content_type=content_type)


@pages.get("/")
async def terminal_page() -> Response:
    return _serve(_file("index.html"))


@pages.get("/admin")
async def admin_page() -> Response:
    return _serve(_file("admin.html"))


@pages.get(ASSET_PREFIX + "<path:relative>")
async def web_asset(relative: str) -> Response:
    return _serve(_file(relative))
