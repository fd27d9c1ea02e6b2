"""The dashboard's static files (``plexus/ui/``), served at ``/ui``, ``/ui/`` and ``/ui/<file>``.

Theory: the dashboard is a handful of plain files (HTML, JS modules, CSS, one vendored chart
library) that talk to the management API from the browser; the gateway only hands them out.
They are read once, at the first ``/ui`` request, into a dict ``url path -> (headers, body)``
with a strong ETag (a hash of the file's bytes) computed then; after that a request is one dict
lookup. Only the files found under ``plexus/ui/`` are ever served: a path is looked up as given,
never joined to a directory, so ``..`` or ``%2e%2e`` cannot reach anything else.

Caching: ``If-None-Match`` naming the current ETag gets 304. Files under ``vendor/`` carry their
version in their name and are ``immutable`` for a year; the app's own files are ``no-cache``
(kept by the browser, revalidated each load, answered 304 while unchanged), so an upgrade is
seen at the next page load.

Access: the files hold nothing secret (every number the page shows comes from the management
API, which needs the admin key), but the dashboard is only served when it can work: when
``ui.enabled`` (default true) and an admin key is configured. Otherwise ``/ui`` is the gateway's
ordinary 404. Only GET and HEAD are allowed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["UI_DIR", "UiFiles", "is_ui_path"]

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
PREFIX = b"/ui"

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
    ".svg": b"image/svg+xml",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
    "": b"text/plain; charset=utf-8",
}
_SERVED = {".html", ".js", ".css", ".png", ".svg", ".ico", ".json", ".txt", ""}
_NO_CACHE = b"no-cache"
_IMMUTABLE = b"public, max-age=31536000, immutable"
_SECURITY = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
]


def is_ui_path(path: bytes) -> bool:
    return path == PREFIX or path.startswith(b"/ui/")


class UiFiles:
    """The files of one ``plexus/ui/`` directory, loaded at first use."""

    def __init__(self, root: str | os.PathLike = UI_DIR) -> None:
        self.root = Path(root)
        self._files: dict[bytes, tuple[bytes, list[tuple[bytes, bytes]], bytes]] | None = None

    @property
    def loaded(self) -> bool:
        return self._files is not None

    def load(self) -> dict:
        """url path -> (etag, headers, body), read once."""
        if self._files is None:
            files = {}
            if self.root.is_dir():
                for p in sorted(self.root.rglob("*")):
                    if not p.is_file() or p.suffix.lower() not in _SERVED or p.name.startswith("."):
                        continue
                    rel = p.relative_to(self.root).as_posix()
                    if any(part.startswith(".") for part in rel.split("/")) or rel.endswith(".md"):
                        continue
                    body = p.read_bytes()
                    etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
                    cache = _IMMUTABLE if rel.startswith("vendor/") else _NO_CACHE
                    headers = [(b"content-type", _TYPES.get(p.suffix.lower(), _TYPES[""])),
                               (b"etag", etag), (b"cache-control", cache), *_SECURITY]
                    files[b"/ui/" + rel.encode("utf-8")] = (etag, headers, body)
            index = files.get(b"/ui/index.html")
            if index is not None:
                files[b"/ui"] = files[b"/ui/"] = index
            self._files = files
        return self._files

    def lookup(self, path: bytes):
        """(etag, headers, body) for a request path, or None (not a dashboard file)."""
        return self.load().get(path)

    def serve(self, req, resp) -> bool:
        """Answer ``req`` if it names a dashboard file (True), else leave it alone (False: the
        caller answers 404). A wrong method is 405 with ``allow``."""
        hit = self.lookup(req.path)
        if hit is None:
            return False
        etag, headers, body = hit
        if req.method not in (b"GET", b"HEAD"):
            resp.send(405, [(b"content-type", b"text/plain; charset=utf-8"), (b"allow", b"GET, HEAD")],
                      b"method not allowed; use GET\n")
            return True
        match = req.header(b"if-none-match")
        if match is not None and _matches(match, etag):
            resp.send(304, [(b"etag", etag), headers[2]], b"")
            return True
        resp.send(200, headers, body)
        return True


def _matches(header: bytes, etag: bytes) -> bool:
    if header.strip() == b"*":
        return True
    for tag in header.split(b","):
        tag = tag.strip()
        if tag.startswith(b"W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False
