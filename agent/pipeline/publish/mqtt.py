"""MQTT publisher: one QoS 1 alert per unmasked person, availability, stats, Home Assistant discovery.

The config dataclasses come first (the runtime's config loader assembles them into the root
config); the publisher follows. Topics live under ``prefix`` (default ``maskwatch/<camera>/``):
``alert``, ``availability``, ``stats``, ``camera``; payloads and delivery rules: docs/mqtt.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any, Deque, Dict, Mapping, Optional, Sequence, Tuple

from typing import TYPE_CHECKING

from agent import __version__
from agent.pipeline.alert import DEFAULT_LABELS
from agent.pipeline.publish.ha import STATUS_ONLINE, discovery_messages, status_topic
from agent.pipeline.publish.stdout import alert_payload, iso_utc
from agent.types import AlertEvent

if TYPE_CHECKING:
    # paho, ssl and the spool's sqlite3 are imported only when a publisher is built: the config
    # loader imports this module, and a runtime with MQTT off need not carry them (~5 MB RSS).
    import ssl

    import paho.mqtt.client as mqtt

DEFAULT_STATE_DIR = "/var/lib/maskwatch"
MASK_LABEL = "mask"  # the compliant label of docs/model-contract.md
_TOPIC_FORBIDDEN = re.compile(r"[#+\x00]")


def _coerce(cls: type, value: Any, key: str) -> Any:
    """Accept a mapping where a nested config dataclass is expected (YAML gives dicts)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"mqtt.{key}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**value)
    raise ValueError(f"mqtt.{key}: expected a mapping, got {type(value).__name__}")


@dataclass
class TlsConfig:
    """TLS towards the broker. Verification of the broker certificate is on unless turned off."""

    enabled: bool = field(default=False, metadata={"help": "connect with TLS (usually port 8883)"})
    ca_file: str = field(
        default="",
        metadata={"help": "PEM file of the CA that signed the broker certificate; empty: system CAs",
                  "path": True},
    )
    cert_file: str = field(default="", metadata={"help": "client certificate (PEM) for mutual TLS", "path": True})
    key_file: str = field(default="", metadata={"help": "private key (PEM) of cert_file", "path": True})
    verify: bool = field(
        default=True,
        metadata={"help": "verify the broker certificate and host name; turn off only for tests"},
    )

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together; set both or neither")


@dataclass
class AuthConfig:
    """Username/password. The password is read from a file or an environment variable, never from
    the config file itself, and is never logged."""

    username: str = field(default="", metadata={"help": "MQTT username; empty: anonymous"})
    password_file: str = field(
        default="", metadata={"help": "file whose first line is the password (e.g. a systemd credential)", "path": True}
    )
    password_env: str = field(
        default="", metadata={"help": "name of the environment variable holding the password"}
    )

    def __post_init__(self) -> None:
        if self.password_file and self.password_env:
            raise ValueError("set password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password (password_file / password_env) needs a username; set username")

    def password(self) -> Optional[str]:
        """Read the password now (so a rotated secret is picked up on restart). Raises ValueError
        naming the file/variable (never the value) when it cannot be read."""
        if self.password_file:
            try:
                with open(self.password_file, "r", encoding="utf-8") as fh:
                    return fh.readline().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(
                    f"mqtt.auth.password_file: cannot read {self.password_file!r} ({exc.strerror})"
                ) from None
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(
                    f"mqtt.auth.password_env: environment variable {self.password_env!r} is not set"
                )
            return value
        return None


@dataclass
class HomeAssistantConfig:
    """Home Assistant MQTT discovery (retained config messages)."""

    enabled: bool = field(default=False, metadata={"help": "publish Home Assistant discovery config"})
    discovery_prefix: str = field(
        default="homeassistant", metadata={"help": "Home Assistant's discovery prefix"}
    )

    def __post_init__(self) -> None:
        if not self.discovery_prefix or _TOPIC_FORBIDDEN.search(self.discovery_prefix):
            raise ValueError("discovery_prefix must be a non-empty topic without + or #")
        self.discovery_prefix = self.discovery_prefix.strip("/")


@dataclass
class SpoolConfig:
    """On-disk queue of alerts not yet acknowledged by the broker."""

    path: str = field(
        default="",
        metadata={"help": "SQLite file; empty: <state_dir>/mqtt-spool.sqlite3", "path": True},
    )
    max_messages: int = field(
        default=10000,
        metadata={"help": "bound of the spool; the oldest alerts are dropped (and counted) beyond it"},
    )

    def __post_init__(self) -> None:
        if int(self.max_messages) < 1:
            raise ValueError("max_messages must be >= 1")
        self.max_messages = int(self.max_messages)


@dataclass
class MqttConfig:
    """The ``mqtt`` section. Empty ``prefix``, ``client_id`` and ``spool.path`` are derived from
    the camera name and state dir of the root config by :meth:`resolved` (the publisher does it)."""

    enabled: bool = field(
        default=False,
        metadata={"help": "publish to MQTT; false: alerts are printed as JSON lines on stdout"},
    )
    host: str = field(default="localhost", metadata={"help": "broker host name or address"})
    port: int = field(default=0, metadata={"help": "broker port; 0: 1883, or 8883 with TLS"})
    client_id: str = field(
        default="", metadata={"help": "MQTT client id; empty: maskwatch-<camera name>-<hostname>"}
    )
    keepalive: int = field(default=30, metadata={"help": "MQTT keepalive in seconds"})
    prefix: str = field(default="", metadata={"help": "topic prefix; empty: maskwatch/<camera name>/"})
    qos: int = field(default=1, metadata={"help": "QoS of alerts: 1 (at least once) or 2; the spool needs an ack"})
    # A short cap: alerts that waited through an outage go out within ~3 s of the broker's return
    # (issue #28); one connection attempt every 3 s is nothing to a broker, even from a fleet.
    reconnect_min_s: float = field(default=0.5, metadata={"help": "first reconnect delay (seconds)"})
    reconnect_max_s: float = field(
        default=3.0,
        metadata={"help": "largest reconnect delay (backoff doubles up to it): also the longest wait for the"
                          " broker once it is back"},
    )
    compliance_window_s: float = field(
        default=3600.0,
        metadata={"help": "window of the people counts and compliance ratio in stats messages (seconds)"},
    )
    tls: TlsConfig = field(default_factory=TlsConfig, metadata={"help": "TLS settings"})
    auth: AuthConfig = field(default_factory=AuthConfig, metadata={"help": "username/password"})
    homeassistant: HomeAssistantConfig = field(
        default_factory=HomeAssistantConfig, metadata={"help": "Home Assistant discovery"}
    )
    spool: SpoolConfig = field(default_factory=SpoolConfig, metadata={"help": "alert spool"})

    def __post_init__(self) -> None:
        self.tls = _coerce(TlsConfig, self.tls, "tls")
        self.auth = _coerce(AuthConfig, self.auth, "auth")
        self.homeassistant = _coerce(HomeAssistantConfig, self.homeassistant, "homeassistant")
        self.spool = _coerce(SpoolConfig, self.spool, "spool")
        if not self.host:
            raise ValueError("host must not be empty")
        self.port = int(self.port) or (8883 if self.tls.enabled else 1883)
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a TCP port")
        if int(self.keepalive) < 5:
            raise ValueError("keepalive must be >= 5 seconds")
        if self.qos not in (1, 2):
            raise ValueError("qos must be 1 or 2 (alerts leave the spool only when acknowledged)")
        if not 0 < float(self.reconnect_min_s) <= float(self.reconnect_max_s):
            raise ValueError("reconnect_min_s and reconnect_max_s need 0 < reconnect_min_s <= reconnect_max_s")
        if float(self.compliance_window_s) <= 0:
            raise ValueError("compliance_window_s must be > 0")
        if _TOPIC_FORBIDDEN.search(self.prefix):
            raise ValueError("prefix must not contain '+' or '#'")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"

    def resolved(self, camera_id: str, state_dir: str = DEFAULT_STATE_DIR) -> "MqttConfig":
        """A copy with the derived defaults filled in: ``prefix`` ``maskwatch/<camera_id>/``,
        ``client_id`` ``maskwatch-<camera_id>-<hostname>``, ``spool.path`` in ``state_dir``.
        Raises ValueError for a camera id that cannot be part of a topic."""
        if not camera_id or _TOPIC_FORBIDDEN.search(camera_id) or "/" in camera_id:
            raise ValueError(f"camera id {camera_id!r}: must be non-empty, without '/', '+' or '#'")
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"
        spool = dataclasses.replace(
            self.spool,
            path=self.spool.path or os.path.join(state_dir or DEFAULT_STATE_DIR, "mqtt-spool.sqlite3"),
        )
        return dataclasses.replace(
            self,
            prefix=self.prefix or f"maskwatch/{camera_id}/",
            client_id=self.client_id or f"maskwatch-{camera_id}-{host}",
            spool=spool,
        )

    def topic(self, leaf: str) -> str:
        """Full topic of a leaf under the prefix (after :meth:`resolved`), e.g. ``topic("alert")``."""
        return self.prefix + leaf


# --------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------

def _json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Publisher
# --------------------------------------------------------------------------------------------

class ComplianceWindow:
    """People per label over the last ``window_s``, from the pipeline's cumulative counts (a person
    is counted when their track ends), and the share of them wearing a mask correctly."""

    def __init__(self, window_s: float, start: Optional[float] = None) -> None:
        self.window_s = window_s
        # (time, cumulative counts); the process start is the first baseline: nobody counted yet.
        self._history: Deque[Tuple[float, Dict[str, int]]] = deque([(time.time() if start is None else start, {})])

    def update(self, now: float, people: Mapping[str, int]) -> Dict[str, Any]:
        self._history.append((now, {str(k): int(v) for k, v in people.items()}))
        # Keep as baseline the newest snapshot that is at least window_s old.
        while len(self._history) > 2 and self._history[1][0] <= now - self.window_s:
            self._history.popleft()
        base_t, base = self._history[0]
        counts = {label: max(0, int(n) - base.get(label, 0)) for label, n in people.items()}
        total = sum(counts.values())
        return {
            "window_s": round(now - base_t, 1),  # the span actually covered (short after a start)
            "people": counts,
            "ratio": round(counts.get(MASK_LABEL, 0) / total, 4) if total else None,
        }


class PublisherError(ValueError):
    """A user-caused problem found when the publisher is built (unreadable password file, CA or key
    file, spool path); ``str()`` names the key and the fix."""


def _client_class() -> type:
    """paho's client, remembering why the last (re)connect attempt failed: paho's own loop swallows
    the exception and ``on_connect_fail`` gets no argument, but "certificate verify failed" or
    "connection refused" is what the operator needs to read. paho is imported here, on first use:
    the config loader imports this module, and a runtime with MQTT off should not carry paho."""
    import paho.mqtt.client as paho_client

    class _Client(paho_client.Client):
        last_connect_error: Optional[BaseException] = None

        def reconnect(self) -> Any:
            try:
                return super().reconnect()
            except OSError as exc:
                self.last_connect_error = exc
                raise

    return _Client


_WAKE, _ACK, _CONNECTED, _DISCONNECTED, _HA_ONLINE, _STOP = range(6)
SPOOL_FULL_LOG_S = 60.0  # at most one "spool full" line per minute, with the count


class MqttPublisher:
    """Publishes alerts (QoS 1 through an on-disk spool), availability, stats, camera state and
    Home Assistant discovery. Implements :class:`agent.pipeline.publish.stdout.Publisher`.

    Threads: the caller (frame loop) only writes the spool and queues a wake-up; paho's network
    thread (``loop_start``) only queues what it saw; one sender thread owns the spool cursor and
    the map from ``publish()``'s ``mid`` to spool row, so a PUBACK can never arrive for a mid the
    sender has not recorded yet, and no lock is held across paho's own locks.
    """

    def __init__(self, config: MqttConfig, camera: str, state_dir: str = DEFAULT_STATE_DIR,
                 logger: Optional[logging.Logger] = None, version: str = __version__,
                 alert_labels: Sequence[str] = DEFAULT_LABELS) -> None:
        self.config = config.resolved(camera, state_dir)
        self.camera = camera
        self.version = version
        self.alert_labels = tuple(alert_labels)  # Home Assistant's event types
        self.log = logger or logging.getLogger("maskwatch.mqtt")
        cfg = self.config
        self._window = 20  # alerts handed to paho at once; the rest wait in the spool only
        self._queue: "queue.Queue[Tuple[int, Any]]" = queue.Queue()
        self._inflight: Dict[int, int] = {}  # mid -> spool seq (sender thread only)
        self._cursor = 0  # highest spool seq handed to paho (sender thread only)
        self._connected = threading.Event()
        self._drained = threading.Event()
        self._sender: Optional[threading.Thread] = None
        self._closed = False
        self._camera_up: Optional[bool] = None
        self._compliance = ComplianceWindow(cfg.compliance_window_s)
        self._failures = 0  # consecutive failed connection attempts, for the log
        self._drops_unlogged = 0  # alerts dropped for room since the last "spool full" line
        self._drops_logged_at: Optional[float] = None  # monotonic time of that line
        self.counters: Dict[str, int] = {"published": 0, "acked": 0, "reconnects": 0, "spool_errors": 0,
                                         "connect_failures": 0, "sender_errors": 0}
        import paho.mqtt.client as paho_client
        from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

        self._queued_ok = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
        self._client = _client_class()(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, clean_session=True,
                                       protocol=paho_client.MQTTv311)
        self._client.max_inflight_messages_set(self._window)
        # paho takes fractions of a second here (its wait is a float deadline), so no rounding up.
        self._client.reconnect_delay_set(float(cfg.reconnect_min_s), float(cfg.reconnect_max_s))
        self._client.will_set(cfg.topic("availability"), "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        if cfg.auth.username:
            try:
                password = cfg.auth.password()
            except ValueError as exc:
                raise PublisherError(str(exc)) from None
            self._client.username_pw_set(cfg.auth.username, password)
        if cfg.tls.enabled:
            self._client.tls_set_context(self._tls_context())
            # Host name checking follows `verify` too (a CA-only check would accept any cert of that CA).
            self._client.tls_insecure_set(not cfg.tls.verify)
        from agent.pipeline.publish.spool import Spool, SpoolError

        try:  # last: nothing to close when an earlier check fails
            self._spool = Spool(cfg.spool.path, cfg.spool.max_messages, logger=self.log)
        except SpoolError as exc:
            raise PublisherError(f"mqtt.spool.path: {exc}") from None

    # -- Publisher protocol ------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background: never blocks on the broker; one that is down or refuses us
        is logged and retried with backoff, while alerts wait in the spool."""
        cfg = self.config
        pending = self._spool.depth()
        if pending:
            self.log.info("mqtt: %d alert(s) left in the spool by an earlier run will be re-sent", pending)
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()
        self.log.info("mqtt: connecting to %s:%d as %r (tls %s), topics under %r", cfg.host, cfg.port,
                      cfg.client_id, "on" if cfg.tls.enabled else "off", cfg.prefix)
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive)
        self._client.loop_start()

    def alert(self, event: AlertEvent) -> None:
        """Spool the alert, then let the sender publish it; never waits for the network."""
        from agent.pipeline.publish.spool import SpoolError

        if self._closed:
            raise RuntimeError("MqttPublisher.alert() after close()")
        payload = _json(alert_payload(event))
        topic = self.config.topic("alert")
        try:
            dropped = self._spool.put(event.event_id, topic, payload)
            if dropped:
                self._note_drops(dropped)
            self._drained.clear()  # so close() waits for this one too
            self._queue.put((_WAKE, None))
        except SpoolError as exc:
            # Without the spool the alert can still go out now; it just would not survive a restart.
            self.counters["spool_errors"] += 1
            self.log.error("mqtt: %s; publishing alert %s without the spool", exc, event.event_id)
            self._client.publish(topic, payload, qos=self.config.qos)

    def _note_drops(self, n: int, flush: bool = False) -> None:
        """Log alerts dropped for room: the first drop at once, later ones summed into one line at
        most every SPOOL_FULL_LOG_S (a flood of alerts against a full spool would otherwise log
        thousands of lines a second). ``flush`` logs what is still unsaid (at close)."""
        self._drops_unlogged += n
        now = time.monotonic()
        due = self._drops_logged_at is None or now - self._drops_logged_at >= SPOOL_FULL_LOG_S
        if not self._drops_unlogged or not (due or flush):
            return
        since = "" if self._drops_logged_at is None else f" in the last {now - self._drops_logged_at:.0f} s"
        self.log.warning("mqtt: spool full (%d alerts): dropped the %d oldest alert(s)%s, %d since the spool file"
                         " was made; the broker is away or too slow (drops are summed up, one line a minute)",
                         self.config.spool.max_messages, self._drops_unlogged, since, self._spool.dropped())
        self._drops_unlogged = 0
        self._drops_logged_at = now

    def stats(self, stats: Mapping[str, Any]) -> None:
        """Publish a stats message (agent/schemas/stats.schema.json) from the pipeline's figures
        (the runtime calls this every ``runtime.stats_interval_s``). QoS 0, not retained: a lost
        one is replaced by the next."""
        if self._closed:
            return
        self._client.publish(self.config.topic("stats"), _json(self.stats_payload(stats)), qos=0)

    def stats_payload(self, stats: Mapping[str, Any], now: Optional[float] = None) -> Dict[str, Any]:
        """The stats message: the pipeline's mapping plus camera, time, compliance window, spool and
        MQTT figures. Each call adds a snapshot to the compliance window."""
        now = time.time() if now is None else now
        out: Dict[str, Any] = {"camera": self.camera, "time": iso_utc(now), "epoch": round(now, 3)}
        out.update(stats)
        people = stats.get("people")
        if isinstance(people, Mapping):
            out["compliance"] = self._compliance.update(now, people)
        if self._camera_up is not None:
            out["camera_up"] = self._camera_up
        out["spool"] = {"depth": self._spool.depth(), "dropped": self._spool.dropped()}
        out["mqtt"] = {"connected": self._connected.is_set(), "reconnects": self.counters["reconnects"],
                       "published": self.counters["published"], "acked": self.counters["acked"],
                       "errors": self.counters["spool_errors"] + self.counters["sender_errors"]}
        return out

    def camera_status(self, up: bool) -> None:
        """Retained ``up`` / ``down`` on ``<prefix>camera`` (on changes only)."""
        if up == self._camera_up:
            return
        self._camera_up = bool(up)
        self._client.publish(self.config.topic("camera"), "up" if up else "down", qos=1, retain=True)

    def close(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) for spooled alerts to be acknowledged, publish a retained
        ``stopped``, disconnect. What is not acknowledged stays in the spool for the next start."""
        if self._closed:
            return
        self._closed = True
        # The whole close fits in `timeout` (systemd's stop timeout is the outer bound): in-flight
        # alerts get the time up to the last third (at most 1 s), which is kept for `stopped`.
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        if self._sender is not None:
            self._drained.clear()  # the sender sets it again once nothing waits for an ack
            self._queue.put((_WAKE, None))
            self._drained.wait(max(0.0, timeout - min(1.0, timeout / 3)))
        if self._connected.is_set():
            info = self._client.publish(self.config.topic("availability"), "stopped", qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # the connection dropped meanwhile: the broker sends our Last Will instead
        self._client.disconnect()
        self._client.loop_stop()
        if self._sender is not None:
            self._queue.put((_STOP, None))
            self._sender.join(timeout=max(0.1, deadline - time.monotonic()))
        self._note_drops(0, flush=True)
        left = self._spool.depth()
        if left:
            self.log.warning("mqtt: %d alert(s) not acknowledged yet; kept in %s for the next start",
                             left, self.config.spool.path)
        self._spool.close()

    # -- paho callbacks (network thread): record and hand over, nothing more ------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            # Bad credentials, not authorised, ...: paho drops the link and retries with backoff.
            self._note_failure(f"broker refused the connection: {reason_code}")
            return
        if self._failures:
            self.log.info("mqtt: connected to %s:%d after %d failed attempt(s)", self.config.host,
                          self.config.port, self._failures)
        else:
            self.log.info("mqtt: connected to %s:%d", self.config.host, self.config.port)
        self._failures = 0
        client.publish(self.config.topic("availability"), "online", qos=1, retain=True)
        ha = self.config.homeassistant
        if ha.enabled:
            client.subscribe(status_topic(ha.discovery_prefix), qos=1)
        self._queue.put((_CONNECTED, None))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        err = self._client.last_connect_error
        self._note_failure(_describe_error(err) if err is not None else "connection failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        was = self._connected.is_set()
        self._queue.put((_DISCONNECTED, None))
        if was and not self._closed:
            self.log.warning("mqtt: lost the connection to the broker (%s); reconnecting", reason_code)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        self._queue.put((_ACK, mid))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.payload.strip().lower() == STATUS_ONLINE.encode():
            self._queue.put((_HA_ONLINE, None))

    def _note_failure(self, why: str) -> None:
        self._failures += 1
        self.counters["connect_failures"] += 1
        # The first failures and then every 10th: enough to read the cause without flooding the log.
        if self._failures <= 3 or self._failures % 10 == 0:
            self.log.error("mqtt: cannot connect to %s:%d (attempt %d): %s; retrying", self.config.host,
                           self.config.port, self._failures, why)

    # -- sender thread -----------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            kind, arg = self._queue.get()
            if kind == _STOP:
                return
            try:
                self._handle(kind, arg)
            except Exception:  # noqa: BLE001 -- a dead sender would silently strand every alert
                self.counters["sender_errors"] += 1
                # One line; the traceback only at debug level (agent/logs.py drops it otherwise).
                self.log.error("mqtt: sender failed on event %d; alerts stay in the spool", kind, exc_info=True)

    def _handle(self, kind: int, arg: Any) -> None:
        """One event of the sender thread, then hand more alerts to paho if there is room."""
        if kind == _ACK:
            seq = self._inflight.pop(arg, None)
            if seq is not None:
                self.counters["acked"] += 1
                self._spool_call(self._spool.remove, seq)
        elif kind == _CONNECTED:
            self.counters["reconnects"] += 1
            self._connected.set()
            if self.config.homeassistant.enabled:
                self._publish_discovery()
        elif kind == _DISCONNECTED:
            # paho keeps its unacknowledged QoS 1 messages and re-sends them (same mid) on
            # reconnect, so the mid -> row map stays valid across the outage.
            self._connected.clear()
        elif kind == _HA_ONLINE:
            self._publish_discovery()
        self._pump()

    def _pump(self) -> None:
        """Hand the next spooled alerts to paho, up to the in-flight window."""
        spool = self._spool
        room = self._window - len(self._inflight)
        if room > 0 and self._connected.is_set():
            rows = self._spool_call(spool.after, self._cursor, room) or []
            for row in rows:
                info = self._client.publish(row.topic, row.payload, qos=self.config.qos)
                if info.rc not in self._queued_ok:
                    # Not queued by paho (e.g. its mid counter wrapped onto a message still in
                    # flight): leave the row for the next pump instead of waiting for an ack.
                    self.log.debug("mqtt: publish of %s deferred (%s)", row.event_id, info.rc)
                    break
                # NO_CONN: paho keeps the message and sends it after reconnecting.
                self._inflight[info.mid] = row.seq
                self._cursor = row.seq
                self.counters["published"] += 1
        if not self._inflight and not (self._spool_call(spool.after, self._cursor, 1) or []):
            self._drained.set()
        else:
            self._drained.clear()

    def _spool_call(self, fn: Any, *args: Any) -> Any:
        from agent.pipeline.publish.spool import SpoolError

        try:
            return fn(*args)
        except SpoolError as exc:
            self.counters["spool_errors"] += 1
            self.log.error("mqtt: %s", exc)
            return None

    def _publish_discovery(self) -> None:
        ha = self.config.homeassistant
        for topic, body in discovery_messages(self.config.prefix, self.camera, ha.discovery_prefix, self.version,
                                                self.alert_labels):
            self._client.publish(topic, _json(body), qos=1, retain=True)

    def _tls_context(self) -> ssl.SSLContext:
        tls = self.config.tls
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        try:
            if tls.ca_file:
                ctx.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise PublisherError(f"mqtt.tls.ca_file: cannot load {tls.ca_file!r} ({_describe_error(exc)}); "
                                 "point it to the PEM file of the CA that signed the broker certificate") from None
        if tls.cert_file:
            try:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise PublisherError(
                    f"mqtt.tls.cert_file/key_file: cannot load {tls.cert_file!r} / {tls.key_file!r} "
                    f"({_describe_error(exc)}); give a PEM client certificate and its unencrypted key") from None
        if not tls.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _describe_error(exc: BaseException) -> str:
    """One line for the log: the SSL/OS reason without a traceback."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
