"""The dashboard's static files (plexus/control/ui.py): served at /ui from plexus/ui/ with
ETags and 304s, the right content types, only GET/HEAD, nothing outside the directory, and
the gateway's own 404 when the dashboard is off (ui.enabled: false) or no admin key is set."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from plexus.app import serve, shutdown
from plexus.config import load_config
from plexus.control.ui import UI_DIR, UiFiles, is_ui_path

ADMIN = "adm-ui-serving-secret-1"


def config_text(admin=True, ui=None) -> str:
    return ("" if not admin else f"admin_key: {ADMIN}\n") + (f"ui: {ui}\n" if ui is not None else "") + """\
usage: {enabled: false}
providers:
  up: {type: OpenAI, api_base_url: "http://127.0.0.1:9/v1", api_key: sk-x, models: [m]}
models:
  gpt: {targets: [{provider: up, model: m}]}
"""


@pytest.fixture
async def start(tmp_path, monkeypatch):
    monkeypatch.delenv("PLEXUS_ADMIN_KEY", raising=False)
    running = []

    async def go(text: str):
        path = tmp_path / "plexus.yaml"
        path.write_text(text)
        server, gateway = await serve(load_config(str(path)), "127.0.0.1", 0)
        running.append((server, gateway))
        port = server.sockets[0].getsockname()[1]
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5, trust_env=False)

    yield go
    for server, gateway in running:
        await shutdown(server, gateway)


async def test_index_and_files(start):
    async with await start(config_text()) as c:
        index = (UI_DIR / "index.html").read_bytes()
        for path in ("/ui", "/ui/", "/ui/index.html"):
            r = await c.get(path)  # no admin key needed for the files: the data needs it
            assert r.status_code == 200, path
            assert r.content == index
            assert r.headers["content-type"] == "text/html; charset=utf-8"
            assert r.headers["etag"] == '"' + hashlib.sha256(index).hexdigest()[:32] + '"'
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        types = {"/ui/app.js": "text/javascript; charset=utf-8", "/ui/style.css": "text/css; charset=utf-8",
                 "/ui/vendor/uPlot-1.6.32.iife.min.js": "text/javascript; charset=utf-8",
                 "/ui/vendor/uPlot-1.6.32.min.css": "text/css; charset=utf-8"}
        for path, ctype in types.items():
            r = await c.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == ctype, path
            assert r.content == (UI_DIR / path[4:]).read_bytes()
        r = await c.get("/ui/vendor/uPlot-1.6.32.iife.min.js")
        assert "immutable" in r.headers["cache-control"]
        r = await c.head("/ui/app.js")
        assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 0


async def test_etag_304(start):
    async with await start(config_text()) as c:
        r = await c.get("/ui/app.js")
        etag = r.headers["etag"]
        r2 = await c.get("/ui/app.js", headers={"if-none-match": etag})
        assert r2.status_code == 304 and r2.content == b"" and r2.headers["etag"] == etag
        r3 = await c.get("/ui/app.js", headers={"if-none-match": f'"nope", W/{etag}'})
        assert r3.status_code == 304
        r4 = await c.get("/ui/app.js", headers={"if-none-match": '"stale"'})
        assert r4.status_code == 200 and r4.content == r.content
        assert (await c.get("/ui/style.css", headers={"if-none-match": etag})).status_code == 200


@pytest.mark.parametrize("path", ["/ui/../pyproject.toml", "/ui/..%2f..%2fconfig.py", "/ui/%2e%2e/app.py",
                                  "/ui//etc/passwd", "/ui/vendor/../../config.py", "/ui/nope.js",
                                  "/ui/vendor/README.md", "/ui/vendor", "/uix", "/ui/app.js/"])
async def test_unknown_and_traversal_refused(start, path):
    async with await start(config_text()) as c:
        r = await c.get(path)
        if path == "/uix":
            assert r.status_code == 404
            return
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/json")  # the gateway's own 404


async def test_method_not_allowed(start):
    async with await start(config_text()) as c:
        r = await c.post("/ui/app.js", content=b"x")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("admin,ui", [(False, None), (True, "{enabled: false}"), (False, "{enabled: true}")])
async def test_off_is_404(start, admin, ui):
    async with await start(config_text(admin=admin, ui=ui)) as c:
        unknown = await c.get("/nope")
        for path in ("/ui", "/ui/", "/ui/app.js"):
            r = await c.get(path)
            assert r.status_code == 404, path
            assert r.headers["content-type"] == unknown.headers["content-type"]
            assert "etag" not in r.headers


def test_config_key():
    from plexus.config import validate_text

    cfg, errors = validate_text(config_text(ui="{enabled: false}"), "<t>", {})
    assert not errors and cfg.ui.enabled is False
    cfg, errors = validate_text(config_text(), "<t>", {})
    assert not errors and cfg.ui.enabled is True
    _, errors = validate_text(config_text(ui="{enabled: maybe}"), "<t>", {})
    assert [e["path"] for e in errors] == ["ui.enabled"]
    _, errors = validate_text(config_text(ui="{colour: red}"), "<t>", {})
    assert [e["path"] for e in errors] == ["ui.colour"]


def test_files_loaded_once(tmp_path):
    (tmp_path / "index.html").write_text("<p>hi</p>")
    (tmp_path / "a.js").write_text("1")
    (tmp_path / ".hidden.js").write_text("secret")
    (tmp_path / "notes.md").write_text("md")
    ui = UiFiles(tmp_path)
    assert ui.lookup(b"/ui/a.js")[2] == b"1"
    assert ui.lookup(b"/ui") is ui.lookup(b"/ui/index.html")
    assert ui.lookup(b"/ui/.hidden.js") is None and ui.lookup(b"/ui/notes.md") is None
    (tmp_path / "a.js").write_text("2")  # read once: a later change is not seen
    (tmp_path / "b.js").write_text("3")
    assert ui.lookup(b"/ui/a.js")[2] == b"1" and ui.lookup(b"/ui/b.js") is None
    assert is_ui_path(b"/ui") and is_ui_path(b"/ui/x") and not is_ui_path(b"/uix") and not is_ui_path(b"/v1/ui")


async def test_raw_dot_dot_refused(start):
    """The request target as sent (an HTTP client would normalise ``..`` away)."""
    import asyncio

    async with await start(config_text()) as c:
        port = int(str(c.base_url).rsplit(":", 1)[1].strip("/"))
        for target in (b"/ui/../pyproject.toml", b"/ui/../control/ui.py", b"/ui/./app.js", b"/ui/vendor/../app.js"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET " + target + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            head = (await reader.read()).split(b"\r\n", 1)[0]
            writer.close()
            assert head == b"HTTP/1.1 404 Not Found", (target, head)
    ui = UiFiles()
    assert ui.lookup(b"/ui/app.js") is not None and ui.lookup(b"/ui/../ui/app.js") is None
