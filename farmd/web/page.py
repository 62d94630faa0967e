"""The dashboard's files: one HTML page, a few ES modules and a stylesheet, served from
the package as they are (`farmd/web/static/`).

Theory of operation
-------------------
The page needs no build step and no files from anywhere else: the browser loads
`index.html` at `/` and its modules from `/static/NAME`, then talks to the JSON API and
its event stream like any client. So serving it is reading a file of the package: the
names are the files in `static/` when the app is built (`PageFiles`), nothing else is
looked up, so a path can never leave that directory, and each answer's type comes
from a fixed table of suffixes (an unknown suffix is not served at all).

Every answer carries a strict Content-Security-Policy: scripts, styles, images and
connections from this origin only, no inline script or style, no frames, no plugins,
no `<base>`. A page that can kill jobs must not run anything it did not ship. Files
are sent with `Cache-Control: no-cache` (the browser asks again, with the ETag, and a
304 costs a header): a supervisor upgraded in place serves its new page at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from typing import Final

import attrs
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

CONTENT_TYPES: Final[Mapping[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@attrs.frozen
class PageFile:
    body: bytes
    content_type: str
    etag: str


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:] if dot > 0 else ""


@attrs.frozen
class PageFiles:
    """The page's files by name, read once from the package (module docs)."""

    files: Mapping[str, PageFile]

    @classmethod
    def load(cls) -> PageFiles:
        files = {}
        for entry in (resources.files("farmd.web") / "static").iterdir():
            kind = CONTENT_TYPES.get(_suffix(entry.name))
            if kind is None or not entry.is_file():
                continue
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[entry.name] = PageFile(body, kind, etag)
        return cls(files)

    def response(self, http: HttpRequest, name: str) -> Response:
        """The file `name`, or a plain 404; 304 when the browser holds this version."""
        found = self.files.get(name)
        if found is None:
            return Response(f"no such file: {name[:100]}\n", 404, HEADERS, "text/plain")
        headers = {**HEADERS, "ETag": found.etag}
        if http.headers.get("if-none-match") == found.etag:
            return Response(b"", 304, headers)
        return Response(found.body, 200, headers, found.content_type)

    async def index(self, http: HttpRequest) -> Response:
        return self.response(http, "index.html")

    async def static(self, http: HttpRequest) -> Response:
        return self.response(http, str(http.path_params["name"]))
