"""Console URLs: every link Sentinel hands out (notifications, API responses) points at a page of
the web console (``sentinel.console``), never at a path on the daemon's disk.

``Links(public_url)`` builds them under ``api.public_url`` (``https://sentinel.example.org``);
without one they are absolute paths (``/incidents/12``), right for pages served by the same
daemon and for API clients that know where they connected, but useless in an e-mail: set
``api.public_url`` where notifications are sent. A bottom-layer module (no Sentinel imports).
"""
from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote, urlencode


class Links:
    """The console's URLs under ``public_url`` (None: paths only)."""

    def __init__(self, public_url: str | None = None):
        self.base = (public_url or "").rstrip("/")

    @classmethod
    def from_config(cls, cfg: Any) -> "Links":
        return cls(getattr(getattr(cfg, "api", None), "public_url", None))

    def url(self, path: str, **query: Any) -> str:
        q = {k: v for k, v in query.items() if v not in (None, "")}
        return self.base + path + (f"?{urlencode(q)}" if q else "")

    def overview(self) -> str:
        return self.url("/")

    def incidents(self, **filters: Any) -> str:
        return self.url("/incidents", **filters)

    def incident(self, incident_id: int) -> str:
        return self.url(f"/incidents/{int(incident_id)}")

    def run(self, run_id: int) -> str:
        return self.url(f"/runs/{int(run_id)}")

    def run_report(self, run_id: int) -> str:
        return self.url(f"/runs/{int(run_id)}/report")

    def pair(self, name: str) -> str:
        return self.url(f"/pairs/{quote(str(name), safe='')}")

    # -- what API responses and payloads carry instead of file paths -------------------------------
    def incident_fields(self, incident: Mapping[str, Any]) -> dict[str, Any]:
        """``url`` (the incident page) and ``report`` (the latest run's report page, when that run
        wrote one), replacing the stored report file path."""
        last = incident.get("last_run_id") or (incident.get("run_ids") or [None])[-1]
        has_report = bool(incident.get("report")) and last is not None
        return {"url": self.incident(incident["id"]), "report": self.run_report(last) if has_report else None}

    def public_incident(self, incident: Mapping[str, Any]) -> dict[str, Any]:
        """``incident`` as API responses show it: links instead of the daemon's file paths."""
        out = {**incident, **self.incident_fields(incident)}
        if isinstance(out.get("evidence"), dict) and "report" in out["evidence"]:
            out["evidence"] = {**out["evidence"], "report": out["report"]}
        return out

    def public_run(self, run: Mapping[str, Any]) -> dict[str, Any]:
        """A run as API responses show it: ``url``, ``report`` (link or None), no ``report_path``."""
        out = {k: v for k, v in run.items() if k != "report_path"}
        out["url"] = self.run(run["id"])
        out["report"] = self.run_report(run["id"]) if run.get("report_path") else None
        return out
