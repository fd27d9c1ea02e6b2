"""The dashboard (/ui) in a real browser: Debian's Chromium (/usr/bin/chromium, nothing is
downloaded) driven headless by Playwright, against a real Plexus process and the fake upstream.

One browser and one page for the module; the tests run in file order and share the page (the
login of the first is kept in its sessionStorage). Each page's screenshot goes to a tmp dir;
``PLEXUS_UI_SCREENSHOTS=<dir>`` keeps them (the README's picture, config/screenshots/, was taken
that way)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from fake_upstream import FakeUpstream, Reply
from spawn import start_plexus, usage_record, wait_for

CHROMIUM = "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs Debian's chromium at /usr/bin/chromium")

ADMIN = "adm-ui-browser-secret-7"
UP_KEY = "sk-up-ui-browser-secret"
CLIENT = "client-key-ui-1"
ENV = {"UI_ADMIN": ADMIN, "UI_UP_KEY": UP_KEY, "PLEXUS_ADMIN_KEY": None}
CONFIG = """\
admin_key: "${{UI_ADMIN}}"
usage: {{path: usage.db}}
providers:
  up:
    type: OpenAI
    api_base_url: "{base}/v1"
    api_key: "${{UI_UP_KEY}}"
    models: [up-gpt, up-gpt-2]
models:
  gpt:
    targets:
      - provider: up
        model: {model}
"""
ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def up():
    with FakeUpstream() as f:
        yield f


@pytest.fixture(scope="module")
def gw(up, tmp_path_factory):
    with start_plexus(CONFIG.format(base=up.base_url, model="up-gpt"), tmp_path_factory.mktemp("ui"), env=ENV) as run:
        yield run


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = tmp_path_factory.mktemp("ui-shots")
    yield d
    keep = os.environ.get("PLEXUS_UI_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for f in d.iterdir():
            shutil.copy(f, Path(keep) / f.name)


@pytest.fixture(scope="module")
def page(gw):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(ARGS))
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 860})
            pg = ctx.new_page()
            pg.set_default_timeout(5000)
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.errors = errors
            yield pg
            assert not errors, errors
        finally:
            browser.close()


def api(gw, method, path, **kw):
    with httpx.Client(base_url=gw.url, timeout=5, trust_env=False, headers={"x-admin-key": ADMIN}) as c:
        return c.request(method, "/v0/management" + path, **kw)


def chat(gw, model="gpt"):
    """One chat completion through the openai SDK; (the response, the request id)."""
    import openai
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT, max_retries=0, timeout=5,
                           http_client=httpx.Client(trust_env=False))
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}])
        return raw.parse(), raw.headers["x-plexus-request-id"]
    except openai.APIStatusError as e:
        return e, e.response.headers.get("x-plexus-request-id")


def go(page, name):
    page.evaluate(f"location.hash = '#{name}'")
    page.wait_for_function(f"() => document.getElementById('page').dataset.page === '{name}'")


def test_login_and_live(page, gw, shots):
    page.goto(gw.url + "/ui")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#login-key", "wrong-key")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:text('Wrong admin key.')")
    page.fill("#login-key", ADMIN)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login", state="hidden")
    page.wait_for_selector("#live-state:text('live')")
    assert page.evaluate("sessionStorage.getItem('plexus-admin-key')") == ADMIN

    _, rid = chat(gw)
    t0 = time.monotonic()
    row = page.wait_for_selector(f'#live-rows tr[data-id="{rid}"]', timeout=1000)  # within a second
    assert time.monotonic() - t0 < 1.0
    cells = [c.inner_text() for c in row.query_selector_all("td")]
    assert cells[2] == "openai → openai" and cells[3] == "gpt → up/up-gpt"
    assert "200 success" in cells[4] and cells[5] == "12 / 6"

    # filter and pause
    page.fill("#live-filter", "nothing-matches-this")
    assert page.query_selector(f'#live-rows tr[data-id="{rid}"]') is None
    page.fill("#live-filter", "up-gpt")
    page.wait_for_selector(f'#live-rows tr[data-id="{rid}"]')
    page.click("#live-pause")
    _, rid2 = chat(gw)
    page.wait_for_selector("#live-state:text('paused (1 waiting)')")
    assert page.query_selector(f'#live-rows tr[data-id="{rid2}"]') is None
    page.click("#live-pause")
    page.wait_for_selector(f'#live-rows tr[data-id="{rid2}"]')

    # a row opens its record (no trace captured: capture is off)
    page.click(f'#live-rows tr[data-id="{rid}"]')
    page.wait_for_selector("#trace-note")
    assert rid in page.inner_text("#live-detail")
    page.screenshot(path=str(shots / "ui-live.png"), full_page=True)


def test_usage_chart_and_table_agree(page, gw, shots):
    ids = [chat(gw)[1] for _ in range(3)]
    for rid in ids:
        usage_record(gw.url, ADMIN, rid)
    go(page, "usage")
    page.wait_for_selector("#usage-groups table.grid tbody tr:not(.empty)")
    page.wait_for_selector("#usage-time .uplot")
    summary = api(gw, "GET", "/usage/summary", params={"group_by": "alias"}).json()["data"]
    assert summary and summary[0]["alias"] == "gpt"
    rows = page.eval_on_selector_all(
        "#usage-groups table.grid tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")
    assert [(r[0], int(r[1]), int(r[2])) for r in rows] == [(s["alias"], s["requests"], s["errors"]) for s in summary]
    bars = page.eval_on_selector_all(
        "#usage-groups .bar", "bs => bs.map(b => [b.dataset.label, b.dataset.series, b.dataset.value])")
    want = {(s["alias"], "requests"): s["requests"] for s in summary}
    want.update({(s["alias"], "tokens"): s["input_tokens"] + s["output_tokens"] for s in summary})
    assert {(lbl, ser): float(v) for lbl, ser, v in bars if ser != "cost"} == want
    # the time table counts the same requests
    times = page.eval_on_selector_all("#usage-time table.grid tbody tr",
                                      "trs => trs.map(tr => Number(tr.cells[1].textContent))")
    assert sum(times) == sum(s["requests"] for s in summary)
    # latency per target (provider/model): the target summary's p50
    by_model = api(gw, "GET", "/usage/summary", params={"group_by": "target"}).json()["data"]
    assert all("/" in m["target"] for m in by_model)
    lat = page.eval_on_selector_all("#usage-latency .bar[data-series=p50]", "bs => bs.map(b => Number(b.dataset.value))")
    assert lat == pytest.approx([m["duration_ms_p50"] for m in by_model])
    # CSV export of the same table
    with page.expect_download() as dl:
        page.click("#usage-groups button.csv")
    text = Path(dl.value.path()).read_text()
    assert text.splitlines()[0].startswith("alias,requests,errors")
    assert text.splitlines()[1].startswith(f"gpt,{summary[0]['requests']},")
    page.screenshot(path=str(shots / "ui-usage.png"), full_page=True)


def test_clear_cooldown(page, gw, up, shots):
    up.script(Reply(503, {"error": {"message": "overloaded", "type": "server_error"}}))
    err, _ = chat(gw)
    assert getattr(err, "status_code", None) == 503
    row = next(r for r in api(gw, "GET", "/cooldowns").json()["data"] if r["model"] == "up-gpt")
    assert row["cooling"]
    go(page, "providers")
    button = page.wait_for_selector('#providers-table button.clear[data-provider=up][data-model=up-gpt]')
    assert "cooling" in page.inner_text("#providers-table")
    # its requests and error rate are the gateway's in-memory counters (GET /targets)
    t = next(r for r in api(gw, "GET", "/targets").json()["data"] if r["model"] == "up-gpt")
    cells = page.eval_on_selector('#providers-table button.clear[data-provider=up][data-model=up-gpt]',
                                  "b => [...b.closest('tr').children].map((td) => td.textContent)")
    assert cells[5] == str(t["requests"]) and t["errors"] >= 1
    assert cells[6] == f"{100 * t['errors'] / t['requests']:.1f} %"
    page.screenshot(path=str(shots / "ui-providers.png"), full_page=True)
    button.click()
    page.wait_for_selector("#providers-status p")
    assert page.inner_text("#providers-status") == "cleared 1 cooldown"
    row = next(r for r in api(gw, "GET", "/cooldowns").json()["data"] if r["model"] == "up-gpt")
    assert not row["cooling"] and row["failures"] == 0
    page.wait_for_selector("#providers-table button.clear", state="detached")


def test_config_errors_by_line_and_good_save(page, gw, up, shots):
    go(page, "config")
    page.wait_for_function("() => document.getElementById('config-text').value.includes('providers:')")
    text = page.input_value("#config-text")
    assert "${UI_ADMIN}" in text and ADMIN not in text
    bad = text.replace("        model: up-gpt\n", "        model: up-gpt\n        colour: red\n") + "bogus: 1\n"
    lines = bad.split("\n")
    want = {"bogus": lines.index("bogus: 1") + 1, "models.gpt.targets[0].colour": lines.index("        colour: red") + 1}
    page.fill("#config-text", bad)
    page.click("#config-save")
    page.wait_for_selector("#config-errors li")
    items = page.eval_on_selector_all("#config-errors li", "lis => lis.map(li => [li.dataset.line, li.textContent])")
    got = {re.search(r"(\S+): ", t.split(" ", 2)[2]).group(1): int(n) for n, t in items}
    assert got == want
    for n in want.values():  # marked in the gutter and noted beside the line
        assert page.get_attribute(f"#config-gutter .ln[data-line='{n}']", "class") == "ln err"
        assert page.inner_text(f"#config-notes .note[data-line='{n}']").startswith("←")
    assert "Validation failed" in page.inner_text("#config-status")
    page.screenshot(path=str(shots / "ui-config.png"), full_page=True)
    assert chat(gw)[0].model == "up-gpt"  # nothing changed

    good = text.replace("        model: up-gpt\n", "        model: up-gpt-2\n")
    page.fill("#config-text", good)
    page.click("#config-save")
    page.wait_for_selector("#config-status p:not(.muted)")
    assert page.inner_text("#config-status").startswith("Saved and applied"), page.inner_text("#config-status")
    assert page.query_selector_all("#config-errors li") == []
    resp, _ = chat(gw)
    assert up.last.json["model"] == "up-gpt-2"


def test_debug_trace(page, gw, shots):
    go(page, "debug")
    page.wait_for_selector("#debug-state:text('off')")
    page.check("#debug-enabled")
    page.fill("#debug-aliases", "gpt")
    page.click("#debug-apply")
    page.wait_for_selector("#debug-state:text('on')")
    assert api(gw, "GET", "/debug").json()["aliases"] == ["gpt"]
    _, rid = chat(gw)
    wait_for(lambda: api(gw, "GET", f"/debug/logs/{rid}").status_code == 200, what="the capture")
    page.click("#debug-refresh")
    page.click(f"#debug-table tr:has-text('{rid}')")
    page.wait_for_selector("#debug-detail #trace")
    cols = page.eval_on_selector_all("#trace .trace-col h3", "hs => hs.map(h => h.textContent)")
    assert cols == ["Client request", "Upstream request", "Upstream response", "Client response"]
    trace = page.inner_text("#trace")
    assert "/v1/chat/completions" in trace and "Hello from the fake upstream." in trace
    assert UP_KEY not in page.content() and CLIENT not in page.content()
    page.screenshot(path=str(shots / "ui-debug.png"), full_page=True)

    # a streamed request: its responses shown as lists of events; and Live opens the same trace
    import openai
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT, max_retries=0, http_client=httpx.Client(trust_env=False))
    raw = client.chat.completions.with_raw_response.create(model="gpt", stream=True, messages=[{"role": "user", "content": "hi"}])
    sid = raw.headers["x-plexus-request-id"]
    "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    wait_for(lambda: api(gw, "GET", f"/debug/logs/{sid}").status_code == 200, what="the stream capture")
    usage_record(gw.url, ADMIN, sid)  # Live opens with the stored records, then follows the events
    go(page, "live")
    page.click(f'#live-rows tr[data-id="{sid}"]', timeout=3000)
    page.wait_for_selector("#live-detail #trace ol.events li")
    assert page.eval_on_selector_all("#live-detail #trace .trace-col:nth-child(4) ol.events li", "l => l.length") >= 3


def test_phone_width_and_dark(page, gw, shots):
    page.set_viewport_size({"width": 390, "height": 800})
    page.emulate_media(color_scheme="dark")
    go(page, "providers")
    page.wait_for_selector("#providers-table")
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(17, 20, 24)"
    # nothing wider than the screen but the scrolling tables
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(shots / "ui-phone-dark.png"), full_page=True)
