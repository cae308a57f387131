"""Loopback receivers that speak the formats Sentinel's notifiers target, checking requests the way
the real services do (required fields, limits) and recording what they accepted."""
from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from typing import Any, Callable

Handler = Callable[[dict[str, Any]], tuple[int, bytes]]


class Receiver:
    """An HTTP server on 127.0.0.1 recording every POST. ``handler(request) -> (status, body)``
    decides the answer; ``script`` (a list of statuses) overrides it for the next requests.
    ``stop()`` takes it down (connections are then refused) and ``start()`` brings it back on the
    same port. ``delay`` (seconds) holds each answer back; ``path`` is the one ``url`` names."""

    def __init__(self, handler: Handler | None = None, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []     # every request that reached the server
        self.accepted: list[dict[str, Any]] = []     # those answered 2xx
        self.script: list[int] = []
        self.delay = 0.0
        self.path = "/hook"
        self.handler = handler or (lambda req: (200, b'{"ok":true}'))
        self.lock = threading.Lock()
        self.port = port
        self.server: http.server.ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = {"path": self.path, "headers": dict(self.headers), "body": body}
                with receiver.lock:
                    receiver.requests.append(req)
                    scripted = receiver.script.pop(0) if receiver.script else None
                status, reply = (scripted, b'{"error":"scripted"}') if scripted else receiver.handler(req)
                if receiver.delay:
                    time.sleep(receiver.delay)
                if 200 <= status < 300:
                    with receiver.lock:
                        receiver.accepted.append(req)
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request that reached the server, in order."""
        return [r["headers"]["Idempotency-Key"] for r in self.requests]

    def json(self, accepted_only: bool = True) -> list[Any]:
        return [json.loads(r["body"]) for r in (self.accepted if accepted_only else self.requests)]


def pagerduty_handler(req: dict[str, Any]) -> tuple[int, bytes]:
    """What PagerDuty's Events API v2 checks before answering 202."""
    try:
        ev = json.loads(req["body"])
    except ValueError:
        return 400, b'{"status":"invalid event","message":"Event object is invalid","errors":["bad json"]}'
    errors = []
    if not ev.get("routing_key"):
        errors.append("'routing_key' is missing or blank")
    if ev.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid")
    if ev.get("event_action") in ("acknowledge", "resolve") and not ev.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if ev.get("event_action") == "trigger":
        p = ev.get("payload") or {}
        if not p.get("summary") or len(p["summary"]) > 1024:
            errors.append("'payload.summary' is missing or too long")
        if not p.get("source"):
            errors.append("'payload.source' is missing")
        if p.get("severity") not in ("critical", "error", "warning", "info"):
            errors.append("'payload.severity' is invalid")
    if len(ev.get("dedup_key") or "") > 255:
        errors.append("'dedup_key' is too long")
    if errors:
        return 400, json.dumps({"status": "invalid event", "message": "Event object is invalid", "errors": errors}).encode()
    return 202, json.dumps({"status": "success", "message": "Event processed", "dedup_key": ev.get("dedup_key")}).encode()


def slack_handler(req: dict[str, Any]) -> tuple[int, bytes]:
    """What a Slack incoming webhook checks (Block Kit limits) before answering 200 ``ok``."""
    try:
        msg = json.loads(req["body"])
    except ValueError:
        return 400, b"invalid_payload"
    blocks = msg.get("blocks")
    if not msg.get("text") and not blocks:
        return 400, b"no_text"
    for b in blocks or []:
        if b.get("type") not in ("header", "section", "context", "divider", "actions"):
            return 400, b"invalid_blocks"
        if b["type"] == "header" and (b["text"]["type"] != "plain_text" or len(b["text"]["text"]) > 150):
            return 400, b"invalid_blocks"
        if b["type"] == "section" and (len(b.get("text", {}).get("text", "")) > 3000 or len(b.get("fields", [])) > 10
                                       or any(len(f["text"]) > 2000 for f in b.get("fields", []))):
            return 400, b"invalid_blocks"
        if b["type"] == "context" and not 1 <= len(b.get("elements", [])) <= 10:
            return 400, b"invalid_blocks"
    return 200, b"ok"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class Alertmanager:
    """Debian's prometheus-alertmanager on a free loopback port with a temporary config and
    storage folder (clustering off)."""

    def __init__(self, binary: str, workdir: str) -> None:
        self.port = free_port()
        cfg = os.path.join(workdir, "alertmanager.yml")
        with open(cfg, "w") as f:
            f.write("route:\n  receiver: blackhole\n  group_wait: 1h\nreceivers:\n  - name: blackhole\n")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.path={os.path.join(workdir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"alertmanager did not start: {self.proc.stderr.read().decode()[-500:]}")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alerts(self, **query: str) -> list[dict[str, Any]]:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{qs}", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
