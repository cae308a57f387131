"""The console in a real browser: Debian's Chromium (/usr/bin/chromium) driven by playwright
(its driver only; never a downloaded browser), the app served by uvicorn on a free port, a real
store and users file. A responder signs in, follows the open incident from the overview, reads
its headline and acknowledges it with a note; the timeline names them. A viewer's ack is
refused. An approver accepts a run. Screenshots go to tests/artifacts/ (ignored by git)."""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from sentinel.app import http_app as create_app

from consoles import Control, make_console_app

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package drives Chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def site(tmp_path):
    """The console served over real HTTP: (base URL, the seeded app)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    s = make_console_app(tmp_path, public_url=base)
    server = uvicorn.Server(uvicorn.Config(create_app(s.app, Control()), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield base, s
    server.should_exit = True
    thread.join(10)
    s.app.store.dispose()


@pytest.fixture
def browser():
    # playwright's launch() starts headless with a fresh temporary profile (its own
    # --user-data-dir, removed at close: it refuses one passed in args)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def sign_in(browser, base: str, token: str):
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    page.goto(f"{base}/login")
    page.fill("#token", token)
    page.click("#signin")
    page.wait_for_url(f"{base}/")
    return page


def test_responder_acknowledges_the_open_incident_from_the_overview(site, browser):
    base, s = site
    page = sign_in(browser, base, s.tokens["alice"])
    assert page.inner_text("#who") == "alice"
    shot(page, "console-overview")
    page.click("text=1 critical")                       # open critical incidents of the pair
    page.click(f"#incidents a[href='{base}/incidents/{s.incident_id}'] >> nth=1")
    title = s.app.incidents.get(s.incident_id)["title"]
    assert page.inner_text("#headline") == title
    assert "increase over reference: 0.0308 >= fail level 0.02" in page.inner_text("#evidence")
    assert page.inner_text("#severity") == "critical" and page.inner_text("#state") == "open"
    page.fill("#ack-note", "rolling the int8 candidate back")
    page.click("#ack")
    page.wait_for_selector("text=Done: acknowledged")
    assert page.inner_text("#state") == "acknowledged"
    last = page.locator("#timeline tr").last
    assert last.locator(".actor").inner_text() == "alice" and "rolling the int8 candidate back" in last.inner_text()
    shot(page, "console-incident")
    assert s.app.incidents.get(s.incident_id)["events"][-1]["actor"] == "alice"


def test_viewer_cannot_acknowledge(site, browser):
    base, s = site
    page = sign_in(browser, base, s.tokens["bob"])
    page.goto(f"{base}/incidents/{s.incident_id}")
    assert page.locator("#ack").count() == 0 and "bob (viewer)" in page.inner_text("#cannot")
    # the form posted anyway (with bob's own session and CSRF token) is refused by the server
    status = page.evaluate("""async (id) => {
        const csrf = document.querySelector('input[name=csrf]').value;
        const r = await fetch(`/incidents/${id}/ack`, {method: 'POST', body: new URLSearchParams({csrf, note: 'x'})});
        return r.status; }""", s.incident_id)
    assert status == 403 and s.app.incidents.get(s.incident_id)["state"] == "open"
    shot(page, "console-viewer")


def test_approver_accepts_a_run(site, browser):
    base, s = site
    page = sign_in(browser, base, s.tokens["carol"])
    page.goto(f"{base}/pairs/triage")
    page.fill("#accept-reason", "int8 is 4% slower; agreed with the product owner")
    page.click("#accept")
    page.wait_for_selector("#accepted")
    assert "Performance accepted by carol" in page.inner_text("#accepted")
    assert page.url == f"{base}/runs/{s.run_id}?done=accepted"
    shot(page, "console-run")
    assert s.app.store.get_run(s.run_id)["record"]["perf"]["accepted_by"]["actor"] == "carol"
