"""The web console, served by the daemon's own app (``sentinel.api.create_app`` installs it):
server-rendered HTML (Jinja2, autoescaped), one inline stylesheet, inline SVG plots, no scripts
and nothing fetched from elsewhere, so it works offline.

Pages: ``/`` overview, ``/incidents`` (filters, pages), ``/incidents/{id}`` (with ack / resolve
/ silence forms), ``/runs/{id}`` (and ``/runs/{id}/report``, the run's report file),
``/pairs/{name}`` (with ``accept``), ``/login`` and ``/logout``. People sign in with their token
(``sessions.py``); what they may do is their role's (``sentinel.users``). Reads need a session
only when ``api.read_access`` is ``authenticated``.
"""
from __future__ import annotations

from typing import Any

from ..links import Links
from ..users import Users


def install(api: Any, app: Any, control: Any, *, users: Users, links: Links) -> None:
    """Add the console's routes to ``api`` (the FastAPI app of ``sentinel.api``)."""
    from .routes import Console

    Console(api, app, control, users=users, links=links).install()
