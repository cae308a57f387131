"""The Diagnose button in a real browser (Chromium through playwright, as tests/test_console_browser.py):
a responder opens a failing run of the damaged candidate, clicks Diagnose, and is back on the run
page with the named layer and the SQNR plot; in a pair with several candidates, picks one, then
every one. Screenshots: tests/artifacts/console-diagnosis.png, console-diagnosis-candidates.png."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from sentinel.users import add_user
from test_console_browser import browser, shot, sign_in  # noqa: F401  (fixture; skips without Chromium)
from test_diagnose_auto import make_app, revalidate


def serve(app):
    """The app's site on a free local port, until the generator is closed."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app.http_app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    app.store.dispose()


@pytest.fixture
def site(tmp_path):
    users = tmp_path / "users.yaml"
    token = add_user(users, "alice", "responder")
    app = make_app(tmp_path, "damaged.int8.onnx", auto=False, users=users)
    run_id = revalidate(app, tmp_path).run_id
    for base in serve(app):
        yield base, app, run_id, token


@pytest.fixture
def multi_site(tmp_path):
    from test_diagnose_candidates import make_multi_app

    users = tmp_path / "users.yaml"
    token = add_user(users, "alice", "responder")
    app, _ = make_multi_app(tmp_path, {"int8": "candidate.int8.onnx", "damaged": "damaged.int8.onnx"},
                            auto=False, users=users)
    run_id = revalidate(app, tmp_path).run_id
    for base in serve(app):
        yield base, app, run_id, token


def test_responder_diagnoses_a_failing_run_from_its_page(site, browser):  # noqa: F811
    base, app, run_id, token = site
    page = sign_in(browser, base, token)
    page.goto(f"{base}/runs/{run_id}")
    assert page.locator("#diagnosis").count() == 0
    page.click("#diagnose")
    page.wait_for_selector("text=Done: diagnosed")
    assert page.url == f"{base}/runs/{run_id}?done=diagnosed"
    summary = page.inner_text("#diagnosis-summary")
    assert "below the 30 dB floor on agreeing rows too, from /body/body.0/Gemm (Gemm)" in summary
    assert "/body/body.0/Gemm" in page.inner_text("#diagnosis-layers")
    plot = page.locator("#diagnosis-plot svg")
    assert plot.count() == 1 and plot.bounding_box()["width"] > 300     # drawn, not just present
    assert app.store.get_run(run_id)["record"]["diagnosis"]["by"] == "alice"
    shot(page, "console-diagnosis")


def test_responder_diagnoses_one_candidate_of_several_from_the_run_page(multi_site, browser):  # noqa: F811
    base, app, run_id, token = multi_site
    page = sign_in(browser, base, token)
    page.goto(f"{base}/runs/{run_id}")
    assert page.locator("#diagnosis").count() == 0
    page.select_option("#diagnose-candidate", "damaged")
    page.click("#diagnose")
    page.wait_for_selector("text=Done: diagnosed")
    assert page.inner_text("#diagnosis-damaged h3") == "Candidate damaged"
    assert page.locator("#diagnosis-int8").count() == 0
    summary = page.inner_text("#diagnosis-summary-damaged")
    assert "from /body/body.0/Gemm (Gemm)" in summary
    plot = page.locator("#diagnosis-plot-damaged svg")
    assert plot.count() == 1 and plot.bounding_box()["width"] > 300
    page.select_option("#diagnose-candidate", "")      # every candidate
    page.click("#diagnose")
    page.wait_for_selector("#diagnosis-int8")
    assert "no tensor below the 30 dB floor" in page.inner_text("#diagnosis-summary-int8")
    assert list(app.store.get_run(run_id)["record"]["diagnosis"]["candidates"]) == ["int8", "damaged"]
    shot(page, "console-diagnosis-candidates")
