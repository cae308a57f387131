#!/usr/bin/env python3
"""Upload Sentinel's Grafana dashboard(s) to a Grafana server with grafana-client.

    GRAFANA_TOKEN=glsa_... python deploy/grafana/provision.py --url https://grafana.example.org \\
        --folder Sentinel --datasource Prometheus

Independent of the sentinel package: it needs only grafana-client (a Sentinel dependency, or
``pip install grafana-client``). The token is a Grafana service-account token with permission to
write dashboards (and to create the folder if it does not exist); it is read from --token or
GRAFANA_TOKEN and never printed. ``--dry-run`` prints the request body instead of sending it.
Exit codes: 0 uploaded, 1 Grafana refused or could not be reached, 2 usage error.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
DEFAULT_DASHBOARDS = sorted(HERE.glob("*.json"))


class UsageError(Exception):
    """A bad argument or dashboard file: exit code 2."""


def load_dashboard(path: str | Path) -> dict[str, Any]:
    try:
        dash = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(dash, dict) or not dash.get("uid") or not dash.get("title"):
        raise UsageError(f"{path}: not a dashboard (needs a 'uid' and a 'title')")
    return dash


def build_payload(dashboard: dict[str, Any], *, folder_uid: str | None = None, overwrite: bool = True,
                  datasource: str | None = None, message: str = "provisioned by sentinel deploy/grafana/provision.py",
                  public_url: str | None = None) -> dict[str, Any]:
    """The body of ``POST /api/dashboards/db``. The dashboard is matched by its ``uid``: ``id`` is
    dropped so the same file imports into any Grafana. ``datasource`` presets the dashboard's
    ``$datasource`` variable (a data source name or uid); without it Grafana picks its default
    Prometheus data source."""
    dash = copy.deepcopy(dashboard)
    dash["id"] = None
    if datasource:
        variables = [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
        if not variables:
            raise UsageError(f"dashboard {dash.get('uid')!r} has no data source variable to set")
        for var in variables:
            var["current"] = {"selected": True, "text": datasource, "value": datasource}
    if public_url:      # the console's address, which every panel and dashboard link starts with
        for var in dash.get("templating", {}).get("list", []):
            if var.get("name") == "public_url":
                url = public_url.rstrip("/")
                var["query"] = url
                var["current"] = {"selected": True, "text": url, "value": url}
                var["options"] = [{"selected": True, "text": url, "value": url}]
    payload: dict[str, Any] = {"dashboard": dash, "overwrite": overwrite, "message": message}
    if folder_uid:
        payload["folderUid"] = folder_uid
    return payload


def folder_uid(api: Any, title: str, *, create: bool = True) -> str:
    """The uid of the folder called ``title``, created when missing."""
    for folder in api.folder.get_all_folders():
        if folder.get("title") == title:
            return str(folder["uid"])
    if not create:
        raise UsageError(f"no Grafana folder titled {title!r}")
    return str(api.folder.create_folder(title)["uid"])


def parse_args(argv: Sequence[str] | None, environ: dict[str, str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="provision.py", description="Upload Sentinel's Grafana dashboards.")
    p.add_argument("--url", default=environ.get("GRAFANA_URL"),
                   help="Grafana base URL, e.g. https://grafana.example.org (default: $GRAFANA_URL)")
    p.add_argument("--token", default=None, help="service-account token (default: $GRAFANA_TOKEN)")
    p.add_argument("--folder", default=None, help="folder title; created if missing (default: General)")
    p.add_argument("--datasource", default=None, help="preset the $datasource variable to this data source")
    p.add_argument("--public-url", default=environ.get("SENTINEL_PUBLIC_URL"),
                   help="the Sentinel console's public URL for the dashboard's links (default: $SENTINEL_PUBLIC_URL)")
    p.add_argument("--dashboard", action="append", default=None, metavar="FILE",
                   help="dashboard JSON file (repeatable; default: every *.json beside this script)")
    p.add_argument("--no-overwrite", action="store_true", help="fail if a dashboard with the same uid exists")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default: 10)")
    p.add_argument("--dry-run", action="store_true", help="print the request bodies, send nothing")
    args = p.parse_args(argv)
    args.token = args.token or environ.get("GRAFANA_TOKEN")
    if not args.dry_run:
        if not args.url:
            raise UsageError("no Grafana URL: pass --url or set GRAFANA_URL")
        if not args.url.startswith(("http://", "https://")):
            raise UsageError(f"--url must start with http:// or https://, got {args.url!r}")
        if not args.token:
            raise UsageError("no token: pass --token or set GRAFANA_TOKEN (a service-account token)")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return args


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ) if environ is None else environ
    try:
        args = parse_args(argv, environ)
        files = args.dashboard or [str(p) for p in DEFAULT_DASHBOARDS]
        if not files:
            raise UsageError(f"no dashboard files in {HERE}")
        dashboards = [load_dashboard(f) for f in files]
        if args.dry_run:
            for dash in dashboards:
                payload = build_payload(dash, folder_uid=f"<uid of folder {args.folder!r}>" if args.folder else None,
                                        overwrite=not args.no_overwrite, datasource=args.datasource,
                                        public_url=args.public_url)
                print(json.dumps(payload, indent=2))
            return 0
        from grafana_client import GrafanaApi
        from grafana_client.client import GrafanaException

        api = GrafanaApi.from_url(args.url, credential=args.token, timeout=args.timeout)
        try:
            uid = folder_uid(api, args.folder) if args.folder else None
            for dash in dashboards:
                payload = build_payload(dash, folder_uid=uid, overwrite=not args.no_overwrite,
                                        datasource=args.datasource, public_url=args.public_url)
                result = api.dashboard.update_dashboard(payload)
                print(f"uploaded {dash['title']!r} (uid {dash['uid']}, version {result.get('version')}): "
                      f"{result.get('url', '')}")
        except GrafanaException as exc:
            print(f"error: Grafana answered {exc.status_code}: {exc.message}", file=sys.stderr)
            return 1
        except Exception as exc:  # connection refused, DNS, TLS: one line, not a traceback
            print(f"error: cannot reach Grafana at {args.url}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
