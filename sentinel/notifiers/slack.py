"""Slack incoming webhook: one Block Kit message per event.

Config::

    notifiers:
      ml-oncall-slack:
        type: slack
        url_env: SLACK_WEBHOOK_URL          # https://hooks.slack.com/services/... (a secret: keep it in env)
        params: {sentinel_url: "https://sentinel.internal:8080", mention: "<!subteam^S0123>"}

The message: a header with severity and title, fields (severity, state, pair, check, slices,
occurrences), the evidence per failing slice, links (incident, report, runbook) and, while the
incident needs someone, how to acknowledge it. Slack answers ``ok`` with 200; 429 and 5xx are
retried (``Retry-After`` honoured), other errors (``invalid_payload``, ``no_service``) are not.
Slack has no idempotency key: a crash between Slack's 200 and Sentinel recording it can repeat one
message, the one duplicate the outbox allows.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from .base import notifier_params
from .http import HttpPoster, url_from_config
from .render import ack_hint, evidence_lines, is_trigger, links, summary, what_happened

_EMOJI = {"critical": ":rotating_light:", "high": ":red_circle:", "warning": ":warning:"}


class SlackNotifier:
    def __init__(self, name: str, url: str, *, timeout: float = 5.0, sentinel_url: str | None = None,
                 mention: str | None = None):
        self.name = name
        self._http = HttpPoster(name, url, timeout=timeout)
        self.sentinel_url, self.mention = sentinel_url, mention

    @classmethod
    def from_config(cls, name: str, cfg: Any) -> "SlackNotifier":
        p = notifier_params(name, cfg.params, {"sentinel_url": None, "mention": None})
        return cls(name, url_from_config(name, cfg), timeout=cfg.timeout_seconds, **p)

    def __repr__(self) -> str:
        return f"SlackNotifier(name={self.name!r}, url={self._http.safe_url!r})"

    def message(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The Block Kit message for ``payload``."""
        inc = payload["incident"]
        sev = str(inc["severity"])
        head = f"{_EMOJI.get(sev, '')} {summary(payload, 140)}".strip()[:150]   # header text max 150
        fields = [("Severity", sev.upper()), ("State", inc["state"]), ("Pair", inc["pair"]),
                  ("Check", inc["check"]), ("Slices", ", ".join(inc.get("slices") or [inc["slice"]])[:200]),
                  ("Occurrences", str(inc["occurrences"]))]
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": head, "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Incident #{inc['id']} {what_happened(payload)}*"
                                                                    + (f" {self.mention}" if self.mention and is_trigger(payload) else "")},
             "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields]},
            {"type": "section", "text": {"type": "mrkdwn", "text": ("*Evidence*\n" + "\n".join(
                f"• {line}" for line in evidence_lines(payload)))[:3000]}},
        ]
        link_items = links(payload, self.sentinel_url)
        if link_items:
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": " | ".join(f"<{href}|{text}>" for text, href in link_items)}]})
        if is_trigger(payload):
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": ack_hint(payload, self.sentinel_url)}]})
        # `text` is the notification/fallback line Slack shows where blocks are not rendered
        return {"text": f"{summary(payload, 300)} ({what_happened(payload)})", "blocks": blocks,
                "unfurl_links": False}

    def send(self, payload: dict[str, Any], *, idempotency_key: str) -> None:
        body = json.dumps(self.message(payload)).encode()
        self._http.post(body, {"Content-Type": "application/json"})
