"""The chart with several replicas: only on PostgreSQL (values.schema.json), then a
PodDisruptionBudget and rolling updates; one replica keeps Recreate and renders no budget."""
from __future__ import annotations

import pytest

from test_deploy import CHART, one, render, rendered_config

PG = {"config": {"store": {"url": "postgresql+psycopg://sentinel@postgres:5432/sentinel"}}}


@pytest.fixture(scope="module")
def helm():
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (PyPI) is not installed")
    helm.disable_logging()
    return helm


def test_several_replicas_on_postgresql_get_a_disruption_budget_and_rolling_updates(helm):
    objs = render(helm, {"replicaCount": 3, **PG})
    deploy = one(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert rendered_config(objs)["store"]["url"].startswith("postgresql")


def test_one_replica_keeps_recreate_and_no_budget(helm):
    objs = render(helm, {})
    assert one(objs, "Deployment")["spec"]["strategy"]["type"] == "Recreate"
    assert "PodDisruptionBudget" not in objs


@pytest.mark.parametrize("values, says", [
    ({"replicaCount": 2}, "/config/store/url"),                                     # SQLite default
    ({"replicaCount": 2, "config": {"store": {"url": "sqlite:////var/lib/sentinel/s.db"}}}, "/config/store/url"),
    ({"replicaCount": 2, **PG, "persistence": {"enabled": True}}, "ReadWriteMany"),  # reports on a RWO volume
])
def test_several_replicas_without_postgresql_or_a_shared_volume_are_refused(helm, values, says):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError) as err:
            chart.render(values, name="sentinel", namespace="monitoring")
    assert says in str(err.value)


def test_the_replica_scenario_lints(helm):
    import yaml
    values = yaml.safe_load((CHART / "ci" / "replicas-postgres-values.yaml").read_text())
    report = helm.lint(CHART, values, strict=True)
    assert not report["errors"], report
    objs = render(helm, values)
    assert one(objs, "PodDisruptionBudget") and rendered_config(objs)["kafka"]["client"] == "confluent"


def test_replicas_share_one_console_session_key(helm):
    """A sign-in on one pod holds on every pod: with replicaCount > 1 the chart's Secret holds a
    session-secret (made when none is given) and every replica reads it from the same key."""
    import base64
    objs = render(helm, {"replicaCount": 3, **PG})
    secret = one(objs, "Secret")
    made = base64.b64decode(secret["data"]["session-secret"]).decode()
    assert len(made) >= 32 and made.isalnum()
    env = {e["name"]: e for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["SENTINEL_SESSION_SECRET"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "session-secret"}
    given = render(helm, {"replicaCount": 2, **PG, "secrets": {"sessionSecret": "k" * 40}})
    assert base64.b64decode(one(given, "Secret")["data"]["session-secret"]).decode() == "k" * 40
    # the config's own variable name is the one the chart fills
    named = render(helm, {"replicaCount": 2, "config": {**PG["config"], "api": {"session_secret_env": "CONSOLE_KEY"}}})
    assert "CONSOLE_KEY" in {e["name"] for e in one(named, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    # one replica: no session key is made (sessions end with the process, as before)
    assert "Secret" not in render(helm, {})
