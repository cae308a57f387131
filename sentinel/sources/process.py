"""The kafka-python source with its consumer in a child process (``kafka.consumer_process``, on by
default for ``kafka.client: kafka-python``).

kafka-python parses every record in Python: on this machine that is ~8 µs of CPU a message, the
whole of a raw consumer's time, and in one process the daemon's loop paid it in series with its own
decode and store. Here a child process owns the consumer (:class:`~sentinel.sources.kafka.KafkaSource`,
unchanged) and fetches and parses the next batches while the daemon decodes and stores this one, on
another core. To the daemon it is the same :class:`~sentinel.sources.base.Source`: ``poll`` hands out
records, ``commit`` is sent to the child and returns once the broker confirmed it, ``rewind`` re-reads.
So the ingest contract is unchanged: offsets move only when the daemon, having stored the records,
calls ``commit``, and the child never commits on its own.

The protocol, over a socket pair: one frame per message (``multiprocessing.connection``'s
``send_bytes``), a JSON header, then for a batch its records in columns of bytes (``_Channel``;
nothing is unpickled, as nowhere in Sentinel):

* parent → child: ``credit`` one more batch may be sent (``seq``: the batch the parent just handed
  out); ``call`` a request (``commit``, ``rewind``, ``committed``, ``assignment``), answered by
  ``reply`` (its value, or the ``SourceError``'s operation, servers and problem); ``close``.
* child → parent: ``batch`` (``epoch``, ``seq``, lag, coordinator, and per partition its topic,
  number and record count; the body holds offsets, timestamps, key and value lengths as arrays,
  then the keys and values joined); ``status`` when a poll found nothing; ``error`` when a poll
  failed.

Flow is bounded by credits: at most ``prefetch`` batches are read ahead. A ``rewind`` discards what
was read ahead: the child seeks each partition back to the earliest offset the parent has not used
(the rewound records', or those of any batch sent and not handed out) and starts a new ``epoch``;
the parent drops batches of an older one.

If the child dies, ``poll`` raises :class:`SourceError` once and the next ``poll`` starts another
child (a new group member: what was read and not committed is delivered again and the store drops
the repeats). The child dies with the parent (``PR_SET_PDEATHSIG``, and end of file on its socket),
so a killed daemon leaves no consumer holding its partitions.
"""
from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from array import array
from itertools import accumulate, repeat
from operator import attrgetter
from multiprocessing.connection import Connection
from typing import Any, Mapping, Sequence

from ..config import KafkaConfig
from .base import KafkaConfigured, RawRecord, SourceError, first_offsets, next_offsets, record, tcp_reachable

log = logging.getLogger(__name__)

PREFETCH = 2                 # batches read ahead of the daemon
CHILD_POLL_MS = 50           # the child's kafka poll while it may send: how long a request waits at most
STATUS_SECONDS = 0.5         # an idle child reports lag and coordinator at most this often
START_MARGIN_S = 20.0        # the child's interpreter and imports, beyond the connect timeout
CLOSE_SECONDS = 6.0          # the consumer's own close is bounded at 5 s
ERROR_BACKOFF_S = 1.0


class ProcessSource(KafkaConfigured):
    """A :class:`~sentinel.sources.base.Source` on kafka-python whose consumer runs in a child process
    (the module's docstring says how). Its settings are :class:`~sentinel.sources.kafka.KafkaSource`'s."""

    name = "kafka"

    def __init__(self, cfg: KafkaConfig, *, password: str | None = None,
                 connect_timeout_s: float = 10.0, commit_timeout_s: float = 30.0, prefetch: int = PREFETCH):
        self.cfg = cfg
        self._password = password
        self.connect_timeout_s = connect_timeout_s
        self.commit_timeout_s = commit_timeout_s
        self.prefetch = prefetch
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: _Channel | None = None
        self._lock = threading.RLock()   # the ingest thread, and close() from the shutdown's thread
        self._queue: collections.deque[tuple[int, list[RawRecord]]] = collections.deque()   # (seq, records)
        self._epoch = 0
        self._calls = 0
        self._lag: int | None = None
        self._lost: tuple[float | None, float] = (0.0, time.monotonic())   # (lost for, when told)
        self._dead: str | None = None    # why the child is gone, until the next poll starts another

    # from_config, servers and topics are KafkaConfigured's: kafka-python is imported by the child
    # only (~18 MB of the daemon's memory otherwise)

    def consumer_config(self) -> dict[str, Any]:
        """What the child gives :class:`kafka.KafkaConsumer` (``KafkaSource.consumer_config``)."""
        from .kafka import KafkaSource

        return KafkaSource(self.cfg, password=self._password, connect_timeout_s=self.connect_timeout_s,
                           commit_timeout_s=self.commit_timeout_s).consumer_config()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child and, in it, the consumer; raises what the consumer's start raised
        (:class:`SourceError` naming the servers) within about ``connect_timeout_s``."""
        with self._lock:
            if self._proc is not None:
                return
            ours, theirs = socket.socketpair()
            root = logging.getLogger()
            fmt = "text" if any(type(h.formatter).__name__ == "TextFormatter" for h in root.handlers) else "json"
            # the child imports this very package, wherever it was imported from (a checkout, a venv)
            here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
            try:
                proc = subprocess.Popen([sys.executable, "-m", "sentinel.sources.process", str(theirs.fileno()),
                                         str(os.getpid())], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                        env=env)
            finally:
                theirs.close()
            conn = _Channel(ours.detach())
            conn.send({"k": "init", "cfg": self.cfg.model_dump(mode="json"), "password": self._password,
                       "connect_timeout_s": self.connect_timeout_s, "commit_timeout_s": self.commit_timeout_s,
                       "prefetch": self.prefetch, "log_level": logging.getLevelName(root.level), "log_format": fmt})
            answer: dict[str, Any] = {}
            if conn.poll(self.connect_timeout_s + START_MARGIN_S):
                try:
                    answer = conn.recv()[0]
                except (EOFError, OSError, ValueError):
                    answer = {}
            if answer.get("k") != "started":
                conn.close()
                _end(proc, 0.0)
                if answer.get("k") == "error":
                    raise SourceError(*answer["error"])
                raise SourceError("kafka connect", self.servers,
                                  f"the consumer process did not start (exit code {proc.returncode})")
            self._proc, self._conn, self._dead = proc, conn, None
            self._queue.clear()
            self._epoch, self._lag = 0, None
            self._lost = (0.0, time.monotonic())   # no coordinator yet: the join happens in the child's polls
            log.info("kafka source started in a consumer process: pid=%d servers=%s topics=%s group=%s",
                     proc.pid, ",".join(self.servers), self.topics, self.cfg.group_id)

    def close(self) -> None:
        """Leave the group and stop the child, without committing (idempotent)."""
        with self._lock:
            proc, conn, self._proc, self._conn = self._proc, self._conn, None, None
            self._queue.clear()
        if proc is None:
            return
        try:
            assert conn is not None
            conn.send({"k": "close"})
        except OSError:
            pass
        _end(proc, CLOSE_SECONDS)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "ProcessSource":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The consumer process's pid (None: not running)."""
        return self._proc.pid if self._proc is not None else None

    # -- records ---------------------------------------------------------------------------

    def poll(self, timeout_ms: int | None = None) -> list[RawRecord]:
        """The next batch the child read (maybe none) within ``timeout_ms``; a dead child is
        reported once as :class:`SourceError`, and the next call starts another."""
        timeout = (self.cfg.poll_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        with self._lock:
            if self._dead is not None and self._proc is None:
                self.start()
            deadline = time.monotonic() + timeout
            while not self._queue:
                left = deadline - time.monotonic()
                if not self._receive(max(0.0, left)) and left <= 0:
                    return []
            seq, records = self._queue.popleft()
            self._send({"k": "credit", "seq": seq})
            return records

    def commit(self, records: Sequence[RawRecord]) -> dict[tuple[str, int], int]:
        """Commit in the child, synchronously (as :meth:`KafkaSource.commit`)."""
        if not records:
            return {}
        return _offsets(self._call("commit", _triples(next_offsets(records))))

    def rewind(self, records: Sequence[RawRecord]) -> None:
        """Make the next :meth:`poll` return ``records`` again, and then what followed them:
        everything read ahead is dropped and read again."""
        if not records:
            return
        with self._lock:
            self._epoch += 1
            self._queue.clear()
            self._call("rewind", self._epoch, _triples(first_offsets(records)))

    def committed(self) -> dict[tuple[str, int], int]:
        return _offsets(self._call("committed"))

    def assignment(self) -> set[tuple[str, int]]:
        """The ``(topic, partition)`` the child's consumer is assigned now."""
        return {(t, p) for t, p in self._call("assignment")}

    # -- progress and health -----------------------------------------------------------------

    def lag(self) -> int | None:
        """The child's lag at its latest batch, plus what it had read ahead and not handed out."""
        with self._lock:
            if self._lag is None or self._proc is None:
                return None
            return self._lag + sum(len(q[1]) for q in self._queue)

    def coordinator_lost_for(self) -> float | None:
        lost, told = self._lost
        return None if lost is None else lost + max(0.0, time.monotonic() - told)

    def ping(self, timeout_s: float = 1.0) -> bool:
        return any(tcp_reachable(s, timeout_s) for s in self.servers)

    # -- internals ---------------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            if self._proc is None:
                raise SourceError(f"kafka {name}", self.servers, self._dead or "the source is not started")
            self._calls += 1
            call = self._calls
            self._send({"k": "call", "id": call, "name": name, "args": list(args)})
            deadline = time.monotonic() + self.commit_timeout_s + CLOSE_SECONDS
            while True:
                got = self._receive(max(0.0, deadline - time.monotonic()), want=call)
                if got is not None:
                    if "error" in got:
                        raise SourceError(*got["error"])
                    return got["value"]
                if self._proc is None:
                    raise SourceError(f"kafka {name}", self.servers, self._dead or "the consumer process stopped")
                if time.monotonic() >= deadline:
                    self._gone("the consumer process did not answer")
                    raise SourceError(f"kafka {name}", self.servers, self._dead or "no answer")

    def _send(self, message: dict[str, Any]) -> None:
        try:
            assert self._conn is not None
            self._conn.send(message)
        except (OSError, AssertionError):
            self._gone("its socket closed")

    def _receive(self, timeout: float, want: int | None = None) -> Any:
        """Read one message (waiting up to ``timeout``) and act on it; returns the reply ``want``
        once it is read, else None. A batch goes to the queue (an older
        epoch's is dropped, its credit given back), a status updates lag and coordinator, an
        error is raised as :class:`SourceError`."""
        conn = self._conn
        if conn is None:
            raise SourceError("kafka poll", self.servers, self._dead or "the source is not started")
        try:
            if not conn.poll(timeout):
                return None
            msg, body = conn.recv()
        except (EOFError, OSError, ValueError) as exc:
            why = self._gone("it exited" if not isinstance(exc, ValueError) else f"it sent a bad frame: {exc}")
            raise SourceError("kafka poll", self.servers, why) from None
        kind = msg["k"]
        if kind in ("batch", "status"):
            self._lost = (msg["lost"], time.monotonic())
        if kind == "batch":
            if msg["epoch"] != self._epoch:
                return None            # read before a rewind: the child reads it again
            self._lag = msg["lag"]
            self._queue.append((msg["seq"], _unpack(msg["parts"], body)))
        elif kind == "status":
            if not self._queue:
                self._lag = msg["lag"]
        elif kind == "reply":
            if msg["id"] == want:
                return msg
        elif kind == "error":
            raise SourceError(*msg["error"])
        return None

    def _gone(self, how: str) -> str:
        """The child is gone (or useless): reap it, say why once, start another at the next poll."""
        proc, conn, self._proc, self._conn = self._proc, self._conn, None, None
        self._queue.clear()
        self._lag = None
        code = None
        if proc is not None:
            _end(proc, 0.0)
            code = proc.returncode
        if conn is not None:
            conn.close()
        self._dead = (f"the consumer process ended ({how}, exit code {code}); records read and not committed "
                      "are read again by the next one")
        log.error("kafka consumer process ended; starting another at the next poll", extra={"exit_code": code})
        return self._dead


class _Channel:
    """Messages over a socket pair: one frame each, a 4-byte length, a JSON header of that length,
    then the message's body (bytes), if any."""

    def __init__(self, fd: int):
        self.conn = Connection(fd)

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        head = json.dumps(header, separators=(",", ":")).encode("utf-8")
        self.conn.send_bytes(b"".join((len(head).to_bytes(4, "big"), head, body)))

    def recv(self) -> tuple[dict[str, Any], memoryview]:
        """The next message: its header and its body (ValueError for a frame that is neither)."""
        frame = memoryview(self.conn.recv_bytes())
        n = int.from_bytes(frame[:4], "big")
        header = json.loads(bytes(frame[4:4 + n]))
        if not isinstance(header, dict) or "k" not in header:
            raise ValueError("no message header")
        return header, frame[4 + n:]

    def poll(self, timeout: float) -> bool:
        return self.conn.poll(timeout)

    def close(self) -> None:
        self.conn.close()


def _pack(got: list[tuple[Any, list[Any]]]) -> tuple[list[list[Any]], bytes]:
    """kafka-python's records per partition as a batch's ``parts`` (topic, partition, count, bytes
    of keys) and body: per partition its offsets and timestamps (int64, -1: none), key and value
    lengths (int32, -1: None), then its keys and its values, each joined."""
    parts, body = [], []
    for tp, recs in got:
        keys = list(map(_KEY, recs))
        values = list(map(_VALUE, recs))
        stamps = list(map(_TIMESTAMP, recs))
        if None in stamps:
            stamps = [-1 if t is None else t for t in stamps]
        key_lens, value_lens = _lengths(keys), _lengths(values)
        joined_keys = b"".join(k for k in keys if k is not None) if -1 in key_lens else b"".join(keys)
        parts.append([tp.topic, tp.partition, len(recs), len(joined_keys)])
        body += [array("q", map(_OFFSET, recs)).tobytes(), array("q", stamps).tobytes(),
                 array("i", key_lens).tobytes(), array("i", value_lens).tobytes(), joined_keys,
                 b"".join(v for v in values if v is not None) if -1 in value_lens else b"".join(values)]
    return parts, b"".join(body)


_KEY, _VALUE, _TIMESTAMP, _OFFSET = (attrgetter(a) for a in ("key", "value", "timestamp", "offset"))


def _lengths(items: list[bytes | None]) -> list[int]:
    return [-1 if b is None else len(b) for b in items] if None in items else list(map(len, items))


def _unpack(parts: list[list[Any]], body: memoryview) -> list[RawRecord]:
    """The records of a batch :func:`_pack` made, in its order."""
    out: list[RawRecord] = []
    pos = 0
    for topic, partition, n, key_bytes in parts:
        offsets, stamps, key_lens, value_lens = array("q"), array("q"), array("i"), array("i")
        for arr in (offsets, stamps, key_lens, value_lens):
            size = arr.itemsize * n
            arr.frombytes(body[pos:pos + size])
            pos += size
            if len(arr) != n:
                raise ValueError(f"a batch's body ends within the columns of {topic}[{partition}]")
        value_bytes = sum(v for v in value_lens if v > 0)
        keys = _split(bytes(body[pos:pos + key_bytes]), key_lens.tolist())
        pos += key_bytes
        values = _split(bytes(body[pos:pos + value_bytes]), value_lens.tolist())
        pos += value_bytes
        # kafka-python uses -1 (and None for old formats) for "no timestamp"
        ts = stamps.tolist()
        if ts and min(ts) < 0:
            ts = [None if t < 0 else t for t in ts]
        out += map(record, zip(repeat(topic), repeat(partition), offsets.tolist(), keys, values, ts))
    if pos != len(body):
        raise ValueError(f"a batch's body has {len(body)} bytes, its header accounts for {pos}")
    return out


def _split(joined: bytes, lengths: list[int]) -> list[bytes | None]:
    """``joined`` cut into pieces of ``lengths`` (-1: None, no bytes)."""
    if not lengths or min(lengths) >= 0:
        ends = list(accumulate(lengths))
        return list(map(joined.__getitem__, map(slice, [0, *ends[:-1]], ends)))
    out: list[bytes | None] = []
    at = 0
    for n in lengths:
        if n < 0:
            out.append(None)
        else:
            out.append(joined[at:at + n])
            at += n
    return out


def _triples(offsets: Mapping[tuple[str, int], int]) -> list[list[Any]]:
    return [[t, p, o] for (t, p), o in offsets.items()]


def _offsets(triples: list[list[Any]]) -> dict[tuple[str, int], int]:
    return {(t, p): o for t, p, o in triples}


def _end(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Wait up to ``grace`` seconds for ``proc`` to exit, then kill it; reaped either way."""
    try:
        proc.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.kill()
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:   # pragma: no cover - a kill is not refused
        log.error("the kafka consumer process did not die", extra={"pid": proc.pid})


# ---------------------------------------------------------------------------------------------
# The child


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (Linux); and if it died before this was set, exit now."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (AttributeError, OSError):   # not Linux: end of file on the socket ends the loop
        pass
    if os.getppid() != parent:
        os._exit(0)


class _Child:
    def __init__(self, conn: _Channel, init: dict[str, Any]):
        from .kafka import KafkaSource

        self.conn = conn
        self.src = KafkaSource(KafkaConfig.model_validate(init["cfg"]), password=init["password"],
                               connect_timeout_s=init["connect_timeout_s"], commit_timeout_s=init["commit_timeout_s"])
        self.prefetch = init["prefetch"]
        self.credits = self.prefetch
        self.epoch = 0
        self.seq = 0
        self.sent: collections.deque[tuple[int, dict[tuple[str, int], int]]] = collections.deque()
        self.status_at = 0.0
        self.closing = False

    def run(self) -> None:
        try:
            self.src.start()
        except SourceError as exc:
            self.conn.send({"k": "error", "error": _error(exc)})
            return
        self.conn.send({"k": "started"})
        try:
            while not self.closing:
                if self.credits > 0:
                    while not self.closing and self.conn.poll(0):
                        self.handle(self.conn.recv()[0])
                    if not self.closing:
                        self.read()
                elif self.conn.poll(1.0):
                    self.handle(self.conn.recv()[0])
        except (EOFError, OSError):   # the parent is gone
            pass
        finally:
            self.src.close()

    def handle(self, msg: dict[str, Any]) -> None:
        kind = msg["k"]
        if kind == "credit":
            self.credits += 1
            while self.sent and self.sent[0][0] <= msg["seq"]:
                self.sent.popleft()
        elif kind == "call":
            name = msg["name"]
            try:
                value = getattr(self, f"do_{name}")(*msg["args"])
                self.conn.send({"k": "reply", "id": msg["id"], "value": value})
            except SourceError as exc:
                self.conn.send({"k": "reply", "id": msg["id"], "error": _error(exc)})
            except Exception as exc:   # noqa: BLE001 - the parent gets it as a SourceError
                log.exception("kafka consumer process: %s failed", name)
                self.conn.send({"k": "reply", "id": msg["id"],
                                "error": [f"kafka {name}", self.src.servers, f"{type(exc).__name__}: {exc}"]})
        elif kind == "close":
            self.closing = True

    def read(self) -> None:
        try:
            got = self.src.poll_partitions(CHILD_POLL_MS)
        except SourceError as exc:
            self.conn.send({"k": "error", "error": _error(exc)})
            if self.conn.poll(ERROR_BACKOFF_S):
                self.handle(self.conn.recv()[0])
            return
        lost_for = self.src.coordinator_lost_for()
        if not got:
            now = time.monotonic()
            if now - self.status_at >= STATUS_SECONDS:
                self.conn.send({"k": "status", "lag": self.src.lag(), "lost": lost_for})
                self.status_at = now
            return
        parts, body = _pack(got)
        self.seq += 1
        self.credits -= 1
        self.sent.append((self.seq, {(tp.topic, tp.partition): recs[0].offset for tp, recs in got}))
        self.conn.send({"k": "batch", "epoch": self.epoch, "seq": self.seq, "parts": parts, "lag": self.src.lag(),
                        "lost": lost_for}, body)

    def do_commit(self, upto: list[list[Any]]) -> list[list[Any]]:
        return _triples(self.src.commit_offsets(_offsets(upto)))

    def do_committed(self) -> list[list[Any]]:
        return _triples(self.src.committed())

    def do_assignment(self) -> list[list[Any]]:
        return sorted([tp.topic, tp.partition] for tp in self.src._require().assignment())

    def do_rewind(self, epoch: int, first: list[list[Any]]) -> None:
        seek = _offsets(first)
        for _, firsts in self.sent:   # read ahead and never handed out: read again too
            for tp, offset in firsts.items():
                seek[tp] = min(seek.get(tp, offset), offset)
        self.src.seek(seek)
        self.sent.clear()
        self.epoch, self.credits = epoch, self.prefetch


def _error(exc: SourceError) -> list[Any]:
    return [exc.operation, exc.servers, exc.problem]


def main(argv: Sequence[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    _die_with_parent(parent)
    conn = _Channel(fd)
    try:
        init = conn.recv()[0]
    except (EOFError, OSError, ValueError):
        return 0
    from ..config import SECRETS
    from ..logs import setup_logging

    if init.get("password"):
        SECRETS.add(init["password"])
    setup_logging(init.get("log_level") or "INFO", init.get("log_format") or "json")
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the daemon stops it (close), not a terminal's ^C
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # nor a signal to its process group
    _Child(conn, init).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
