"""The object graph, built in one place (in the spirit of uvicorn's ``Config.load()``).

``build(cfg)`` returns an :class:`App`: the config, the store, the loaded model pairs, the
notifiers and escalation policies, the incident engine, the outbox dispatcher, the revalidator
(report writer included) and the metrics. The daemon (``sentinel.daemon.Daemon``), every CLI
command (``sentinel.cli``) and the HTTP API (``sentinel.api.create_app``) take an ``App``
instead of wiring these parts themselves, so they are wired the same way everywhere.

Each part is resolved once, on first use: ``incidents list`` opens the store and never loads a
model. ``build(cfg, load_models=True)`` (what the daemon does) resolves everything at once, in
the order that fails fastest: notifiers and escalation policies (config problems), then the
models, then the store.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .config import Config
from .metrics import Metrics


@dataclass(frozen=True, eq=False)
class App:
    """What a Sentinel process works with. Frozen: the parts are properties resolved once and
    cached (``pair_names`` says which configured pairs ``pairs`` loads)."""
    cfg: Config
    metrics: Metrics
    pair_names: tuple[str, ...]
    #: set to cut the revalidation in progress short (the daemon's shutdown does)
    cancel: threading.Event = field(default_factory=threading.Event)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def _once(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    # -- config-only parts (no I/O beyond the policy files) -----------------------------------------
    @property
    def notifiers(self) -> dict[str, Any]:
        """Every configured notifier, by target name (raises ConfigError naming the key)."""
        from .notifiers.base import build_notifiers
        return self._once("notifiers", lambda: build_notifiers(self.cfg))

    @property
    def policies(self) -> list[Any]:
        """The escalation policies, checked against the notifier names (raises ConfigError)."""
        from .incidents.escalation import load_policies
        cfg = self.cfg
        return self._once("policies", lambda: load_policies(cfg.escalation, base_dir=cfg.base_dir,
                                                            targets=cfg.notifiers, source=cfg.source))

    @property
    def report_dir(self) -> Path:
        from .revalidation import resolve_report_dir
        return resolve_report_dir(self.cfg)

    # -- models --------------------------------------------------------------------------------------
    def pair(self, name: str) -> Any:
        """One configured pair's models, loaded once (``revalidation.LoadedPair``)."""
        from .revalidation import load_pair
        return self._once(("pair", name), lambda: load_pair(self.cfg, name))

    @property
    def pairs(self) -> dict[str, Any]:
        """The pairs named by ``pair_names``, loaded once each."""
        return {name: self.pair(name) for name in self.pair_names}

    # -- the store and what writes to it -------------------------------------------------------------
    @property
    def store(self) -> Any:
        from .storage.repository import open_store
        return self._once("store", lambda: open_store(self.cfg.store.url, echo=self.cfg.store.echo))

    @property
    def incidents(self) -> Any:
        """The incident engine (``incidents.engine.IncidentEngine``) on this store."""
        from .incidents.engine import IncidentEngine
        def make() -> Any:
            engine = IncidentEngine.from_config(self.cfg, self.store, policies=self.policies)
            if self.cfg.grafana.url:    # people's acks and resolutions show on the dashboards too
                engine.on_people = lambda *told: self.grafana.annotate_transition(*told)
            return engine
        return self._once("incidents", make)

    @property
    def dispatcher(self) -> Any:
        """The outbox dispatcher: every notifier, each target's ``max_attempts``, the smallest
        configured ``backoff_seconds``, and delivery outcomes counted in the metrics."""
        from .notifiers.outbox import OutboxDispatcher
        ncfg = self.cfg.notifiers
        # a claim must outlast the slowest send, or another replica sends the row again
        lease = max(self.cfg.replicas.lease_seconds, 2 * max((c.timeout_seconds for c in ncfg.values()), default=0) + 5)
        return self._once("dispatcher", lambda: OutboxDispatcher(
            self.store, self.notifiers, max_attempts={n: c.max_attempts for n, c in ncfg.items()},
            backoff_seconds=min((c.backoff_seconds for c in ncfg.values()), default=1.0), lease_seconds=lease,
            on_outcome=lambda target, outcome: self.metrics.notifications.labels(target, outcome).inc()))

    def deliver_outbox(self) -> None:
        """Deliver what is due now (one-shot commands deliver what they queued; the daemon
        retries anything left pending). No notifiers configured: nothing to do."""
        if self.cfg.notifiers:
            self.dispatcher.dispatch_due()

    def write_report(self, run: dict[str, Any], data: Any = None) -> str | None:
        """The run's report, with what the store knows around it (traffic time range, incidents,
        the pair's recent runs); a failing read leaves that context out, never the report."""
        import logging

        from .reports import write_run_report
        from .storage.summaries import report_context
        try:
            context = report_context(self.store, run)
        except Exception:
            logging.getLogger("sentinel.reports").exception("report context unavailable", extra={"run_id": run.get("id")})
            context = {}
        context["base_url"] = (getattr(self.cfg.api, "public_url", None) or "").rstrip("/")
        context["open_on"] = "/".join(self.cfg.incidents.open_on)
        return write_run_report(run, self.report_dir, data, context)

    @property
    def grafana(self) -> Any:
        """The ``grafana.GrafanaAnnotator`` ``grafana:`` describes, None when no ``grafana.url`` is set."""
        from .config import read_secret
        g = self.cfg.grafana

        def make() -> Any:
            if not g.url:
                return None
            from .grafana import GrafanaAnnotator
            return GrafanaAnnotator(g.url, read_secret(g.token_env, g.token_file), dashboard_uid=g.dashboard_uid,
                                    timeout=g.timeout_seconds, console_url=getattr(self.cfg.api, "public_url", None))
        return self._once("grafana", make)

    @property
    def revalidator(self) -> Any:
        """The ``revalidation.Revalidator`` over ``pairs``, recording incidents, metrics and reports."""
        from .revalidation import Revalidator
        return self._once(("revalidator", self.pair_names), lambda: Revalidator(
            self.cfg, self.store, self.pairs, incidents=self.incidents, metrics=self.metrics,
            report_writer=self._report_writer(), cancel=self.cancel))

    def _report_writer(self) -> Any:
        from .reports import ReportWriter
        return ReportWriter(self.write_report)

    def evaluator(self, name: str) -> Any:
        """A ``Revalidator`` over the one pair ``name`` for re-evaluating stored runs (``replay``,
        ``report --rewrite``): it records nothing (no incidents, metrics or reports)."""
        from .revalidation import Revalidator
        return self._once(("evaluator", name), lambda: Revalidator(self.cfg, self.store, {name: self.pair(name)}))

    def http_app(self, control: Any = None) -> Any:
        """What the daemon serves at ``api.listen``: the HTTP API (``sentinel.api``) with the web
        console (``sentinel.console``) on the same app, sharing its users and links. ``control``:
        the running daemon (default: this App)."""
        from .api import create_app
        from .console import install

        api = create_app(self, control)
        install(api, self, self if control is None else control, users=api.state.users, links=api.state.links)
        return api

    def load(self) -> "App":
        """Resolve every part now, config problems first (notifiers, escalation policies) so a bad
        config fails before the models load; then the models, the store and what writes to it."""
        for part in ("notifiers", "policies", "pairs", "store", "incidents", "dispatcher", "revalidator"):
            getattr(self, part)
        return self


def http_app(app: App, control: Any = None) -> Any:
    """``app.http_app(control)`` (for callers holding no ``App`` method)."""
    return app.http_app(control)


def build(cfg: Config, *, metrics: Metrics | None = None, load_models: bool = True,
          pairs: Sequence[str] | Iterable[str] | None = None) -> App:
    """The ``App`` for ``cfg``. ``pairs``: only these configured pairs (default: all, in config order).
    ``load_models``: resolve everything now (``App.load``); False leaves each part to its first
    use, so a command that only reads incidents loads no model."""
    app = App(cfg=cfg, metrics=metrics if metrics is not None else Metrics(),
              pair_names=tuple(pairs) if pairs is not None else tuple(cfg.pairs))
    return app.load() if load_models else app
