"""Grafana annotations for finished runs, for incidents runs opened or reopened, and for people
acknowledging or resolving an incident, pushed with
grafana-client (``POST /api/annotations``) when ``grafana.url`` is configured, so the dashboard's
graphs show when a run failed and an incident opened, with a link to the console page.

Best effort by design: a Grafana that refuses, times out or cannot be reached is logged (its
token masked like every secret) and the run, the daemon and the incident go on. A base helper:
it takes a run outcome duck-typed (``run_id``, ``pair``, ``status``, ``results``, ``incidents``)
and imports nothing of Sentinel's flow.
"""
from __future__ import annotations

import html
import logging
import time
from typing import Any

from .words import describe

log = logging.getLogger("sentinel.grafana")
TAG = "sentinel"


class GrafanaAnnotator:
    """Annotations on ``dashboard_uid`` (None: organisation-wide, every dashboard that asks for
    the ``sentinel`` tag shows them) at ``url`` with ``token``. ``console_url`` (the console's
    public URL) links each annotation to its run or incident page."""

    def __init__(self, url: str, token: str | None, *, dashboard_uid: str | None = None, timeout: float = 5.0,
                 console_url: str | None = None):
        from grafana_client import GrafanaApi

        self.api = GrafanaApi.from_url(url, credential=token or None, timeout=timeout)
        self.dashboard_uid = dashboard_uid
        self.console = (console_url or "").rstrip("/")

    def _link(self, path: str, text: str) -> str:
        return f'<a href="{self.console}{path}">{text}</a>' if self.console else text

    def _add(self, tags: list[str], text: str, at_ms: int) -> bool:
        try:
            self.api.annotations.add_annotation(dashboard_uid=self.dashboard_uid, time_from=at_ms, tags=tags, text=text)
            return True
        except Exception as exc:    # any failure of an optional side channel: logged, never raised
            log.warning("grafana annotation failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300],
                                                            "tags": tags})
            return False

    def annotate_run(self, outcome: Any, at: float | None = None) -> int:
        """One annotation for the run and one per incident it opened or reopened; returns how many
        Grafana accepted."""
        at_ms = int((time.time() if at is None else at) * 1000)
        worst = next((r for r in outcome.results if r.status == outcome.status and r.status in ("fail", "warn")), None)
        said = f": {worst.check} on {describe(worst.to_row())}" if worst is not None else ""
        text = self._link(f"/runs/{outcome.run_id}", f"Run {outcome.run_id} of {outcome.pair} {outcome.status}") + said
        sent = self._add([TAG, "run", f"pair:{outcome.pair}", f"status:{outcome.status}"], text, at_ms)
        for inc in outcome.incidents or []:
            if inc.action not in ("opened", "reopened"):
                continue
            text = self._link(f"/incidents/{inc.incident_id}", f"Incident #{inc.incident_id} {inc.action}") + \
                f" [{inc.severity}] {inc.pair} {inc.check} on {inc.slice}"
            sent += self._add([TAG, "incident", f"pair:{inc.pair}", f"severity:{inc.severity}", inc.action], text, at_ms)
        return sent

    def annotate_transition(self, action: str, incident: dict[str, Any], actor: str, note: str | None = None,
                            at: float | None = None) -> bool:
        """One annotation for a person's ``ack`` or ``resolve`` of ``incident``: who did it, and
        their note, so the graphs show when someone took the incident on and when it ended."""
        done = {"ack": "acknowledged", "resolve": "resolved"}.get(action, action)
        at_ms = int((time.time() if at is None else at) * 1000)
        text = self._link(f"/incidents/{incident['id']}", f"Incident #{incident['id']} {done}") + \
            f" by {_plain(actor)}: {incident.get('pair')} {incident.get('check')}"
        if note:
            text += f" ({_plain(note)[:200]})"
        return self._add([TAG, "incident", f"pair:{incident.get('pair')}", f"severity:{incident.get('severity')}", done],
                         text, at_ms)


def _plain(text: str) -> str:
    """Text a person wrote, safe inside the annotation's HTML."""
    return html.escape(str(text), quote=False)
