"""API limits on a real daemon: `make bench-api-limits` (not a test).

Starts a local Tansu broker and ``sentinel run`` (a subprocess, the code under ``--tree``, default
this checkout) with the API on a loopback port, then sends 100 MB bodies to
``POST /api/v1/incidents/1/ack`` from a raw socket, in 64 KiB pieces, watching the socket for the
answer between pieces (a client that keeps sending after the server answered is what a flood
looks like). For each case it prints the status, the seconds until the answer, how much of the
body had been sent by then, and the daemon's RSS growth (sampled every 10 ms from /proc during
the request, peak minus before).

Cases: unauthenticated with Content-Length, unauthenticated chunked, authenticated with
Content-Length (over api.max_body_bytes) and authenticated chunked. Compare two trees with
``--tree /path/to/old/checkout``.
"""
from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token-0123456789"
PIECE = 64 * 1024


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, rss_kb(pid), threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.01)


def write_config(folder: Path, bootstrap: str, port: int) -> Path:
    from sentinel.examples.traffic import load_example_pair_dir
    import json

    ex = load_example_pair_dir()
    meta = json.loads((ex / "meta.json").read_text())
    cfg = {"store": {"url": f"sqlite:///{folder}/sentinel.db"},
           "kafka": {"bootstrap_servers": [bootstrap], "topic": "bench-traffic", "group_id": "bench",
                     "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000},
           "pairs": {"triage": {"baseline": {"path": str(ex / "baseline.pt2"), "runtime": "torch"},
                                "candidate": {"path": str(ex / "candidate.int8.onnx"), "runtime": "onnxruntime"},
                                "classes": meta["classes"], "critical_classes": meta["critical_classes"]}},
           "revalidation": {"interval_seconds": 86400}, "reports_dir": str(folder / "reports"),
           "api": {"enabled": True, "listen": f"127.0.0.1:{port}"}, "logging": {"level": "WARNING"}}
    path = folder / "sentinel.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def post_big(port: int, total: int, *, chunked: bool, token: str | None) -> dict:
    head = ["POST /api/v1/incidents/1/ack HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    if token:
        head.append(f"Authorization: Bearer {token}")
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    t0 = time.monotonic()
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    # a valid JSON body ({"note": "xxx..."}), so a server that reads it all parses it all too
    prefix, suffix = b'{"note": "', b'"}'
    sent, answer = 0, b""
    try:
        while sent < total:
            if select.select([s], [], [], 0)[0]:
                break
            n = min(PIECE, total - sent)
            data = b"x" * n
            if sent == 0:
                data = prefix + data[len(prefix):]
            if sent + n >= total:
                data = data[:-len(suffix)] + suffix
            s.sendall(f"{n:x}\r\n".encode() + data + b"\r\n" if chunked else data)
            sent += n
        if sent >= total and chunked:
            s.sendall(b"0\r\n\r\n")
    except OSError:   # the server closed the connection on us: the answer is already in our buffer
        pass
    try:
        answer = s.recv(4096)
    except OSError:
        pass
    elapsed = time.monotonic() - t0
    s.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
    return {"status": status, "seconds": elapsed, "sent_mb": sent / 1e6}


def wait_up(port: int, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the daemon's API did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", default=str(ROOT), help="the Sentinel checkout whose daemon to measure")
    ap.add_argument("--mb", type=float, default=100.0, help="body size in MB")
    args = ap.parse_args()
    from sentinel.testing.broker import TansuBroker, free_port

    total = int(args.mb * 1e6)
    with TansuBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = write_config(Path(tmp), broker.bootstrap, port)
        env = {**os.environ, "PYTHONPATH": args.tree, "SENTINEL_API_TOKEN": TOKEN}
        proc = subprocess.Popen([sys.executable, "-m", "sentinel", "run", "-c", str(cfg)], env=env, cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_up(port, proc)
            time.sleep(10)   # let the start-up imports (Evidently's preload) settle before measuring RSS
            print(f"tree {args.tree}: {args.mb:.0f} MB bodies to POST /api/v1/incidents/1/ack")
            print(f"{'case':<34} {'status':>6} {'seconds':>8} {'sent MB':>8} {'RSS +MB':>8}")
            for name, chunked, token in (("no token, Content-Length", False, None), ("no token, chunked", True, None),
                                         ("token, Content-Length", False, TOKEN), ("token, chunked", True, TOKEN)):
                before = rss_kb(proc.pid)
                sampler = RssSampler(proc.pid)
                sampler.start()
                r = post_big(port, total, chunked=chunked, token=token)
                time.sleep(0.3)
                sampler.stop.set()
                sampler.join()
                print(f"{name:<34} {r['status'] or '-':>6} {r['seconds']:>8.2f} {r['sent_mb']:>8.1f} "
                      f"{(sampler.peak - before) / 1024:>8.1f}")
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
