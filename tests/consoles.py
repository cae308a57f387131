"""A daemon-shaped app for the console's tests: a real store and incident engine from a real
config (models never loaded), a users file with one person per role, one failing run with its
report file and an open incident."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentinel.app import build
from sentinel.config import load_config
from seeds import failing_incident
from sentinel.users import add_user

from pairs import example_config

ROLES = {"alice": "responder", "bob": "viewer", "carol": "approver", "dave": "admin"}


@dataclass
class Started:
    """What the ``console_app`` fixture hands out."""
    app: Any
    run_id: int
    incident_id: int
    tokens: dict[str, str]
    users_file: Path


class Control:
    """The daemon's side the API reads (state, next runs, lag) for an app served without a daemon."""

    class state:   # noqa: N801 - mimics the daemon's RunState enum member
        value = "started"

    health = None
    last_lag = 7

    def next_run_times(self) -> dict[str, Any]:
        return {}

    def revalidate(self, pair: str, trigger: str = "manual") -> Any:
        return None


def make_console_app(tmp_path: Path, store_url: str | None = None, **api: Any) -> Started:
    users_file = tmp_path / "users.yaml"
    tokens = {name: add_user(users_file, name, role) for name, role in ROLES.items()}
    cfg = load_config(example_config(tmp_path, store_url=store_url, api={
        "enabled": False, "users_file": str(users_file), "public_url": "https://sentinel.example.org", **api},
        incidents={"runbook_url": "https://runbooks.example.org/flips"},
        # a target nobody listens on: its deliveries stay pending, as the timeline shows
        notifiers={"oncall": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}}))
    app = build(cfg, load_models=False)
    run_id, incident_id = failing_incident(app, report_dir=Path(cfg.reports_dir))
    return Started(app, run_id, incident_id, tokens, users_file)


def login_csrf(client: Any) -> str:
    """The sign-in form's CSRF token (a TestClient keeps its cookie)."""
    import re
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
