"""A real mosquitto broker for tests, a subscriber that collects messages, and a publisher child.

``Broker`` writes a config into a temporary folder and runs ``mosquitto -c`` on a free loopback
port: anonymous or with a password file (``mosquitto_passwd``), plain or TLS (a CA, server and
client certificates made here with ``openssl``), persistence on so retained messages and the
collector's QoS 1 session survive ``stop()`` / ``start()`` on the same port.

``Collector`` is a paho subscriber with a persistent session (clean_session=False): messages
published while it was cut off by a broker restart are queued for it by the broker.

Run as a script (``python tests/mosquitto.py child CONFIG_JSON``) it is a small agent: an
``MqttPublisher`` that sends alerts read from stdin, for tests that kill processes.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def mosquitto_binary() -> Optional[str]:
    return shutil.which("mosquitto", path=SEARCH_PATH)


def skip_reason() -> Optional[str]:
    """Why broker tests cannot run here, or None."""
    if mosquitto_binary() is None:
        return "mosquitto not installed (apt-get install -y mosquitto mosquitto-clients)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: List[str], **kw) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


@dataclass
class Pki:
    """Certificates made for one test: a CA, a server cert for 127.0.0.1/localhost, a client cert,
    and an unrelated CA (to test a wrong ``ca_file``)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_pki(folder: Path) -> Pki:
    """Make the certificates with the ``openssl`` command (EC keys: fast)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not found")
    folder.mkdir(parents=True, exist_ok=True)

    def ca(name: str) -> None:
        _run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.crt"), "-days", "2",
              "-subj", f"/CN={name}"])

    def leaf(name: str, ext: str) -> None:
        _run([openssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.csr"), "-subj", f"/CN={name}"])
        (folder / f"{name}.ext").write_text(ext)
        _run([openssl, "x509", "-req", "-in", str(folder / f"{name}.csr"), "-CA", str(folder / "ca.crt"),
              "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-out", str(folder / f"{name}.crt"),
              "-days", "2", "-extfile", str(folder / f"{name}.ext")])

    ca("ca")
    ca("other-ca")
    leaf("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    leaf("client", "extendedKeyUsage=clientAuth\n")
    return Pki(folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "client.crt",
               folder / "client.key", folder / "other-ca.crt")


class Broker:
    """One mosquitto process on 127.0.0.1:``port``; ``stop()``/``start()`` keep port and state."""

    def __init__(self, folder: Path, users: Optional[Dict[str, str]] = None, pki: Optional[Pki] = None,
                 require_client_cert: bool = False) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError(skip_reason())
        self.binary = binary
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.pki = pki
        self.log_file = folder / "mosquitto.log"
        self.proc: Optional[subprocess.Popen] = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {folder}/",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "max_queued_messages 100000",
            # Started as root, mosquitto would switch to user "mosquitto" and lose access to the folder.
            f"user {getpass.getuser()}",
        ]
        if users:
            pw = folder / "passwd"
            pw.write_text("")
            passwd = shutil.which("mosquitto_passwd", path=SEARCH_PATH)
            if passwd is None:
                raise RuntimeError("mosquitto_passwd not installed (apt-get install -y mosquitto)")
            for user, password in users.items():
                _run([passwd, "-b", str(pw), user, password])
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if pki is not None:
            lines += [f"cafile {pki.ca}", f"certfile {pki.server_cert}", f"keyfile {pki.server_key}",
                      f"require_certificate {'true' if require_client_cert else 'false'}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start: {err}\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


class Collector:
    """Subscribes (QoS 1, persistent session) and keeps every message: (topic, payload, retain)."""

    def __init__(self, port: int, topics: List[str], client_id: str = "test-collector",
                 tls_ca: Optional[Path] = None, auth: Optional[tuple] = None,
                 client_cert: Optional[tuple] = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: List[tuple] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.topics = topics
        self.client_id = client_id
        # acks sent by _on_message itself, before a test can see the message (see settle)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                  manual_ack=True)
        self.client.reconnect_delay_set(1, 1)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca), certfile=str(client_cert[0]) if client_cert else None,
                                keyfile=str(client_cert[1]) if client_cert else None)
        if auth is not None:
            self.client.username_pw_set(*auth)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("collector could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])
            self._subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        client.ack(msg.mid, msg.qos)
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def payloads(self, topic: str) -> List[bytes]:
        with self._cond:
            return [p for t, p, _ in self.messages if t == topic]

    def wait_for(self, predicate: Callable[["Collector"], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def settle(self, timeout: float = 5.0) -> None:
        """Return once the broker has taken this subscriber's acknowledgements of what it received.

        mosquitto keeps an unacked QoS 1 message of a persistent session to send again after a
        restart: a broker stopped before an ack reaches it re-delivers the message (at-least-once on
        the subscriber's leg, not the publisher's). Each ack is queued before its message is visible
        (manual ack in _on_message, not paho's after the callback), and a broker handles one client's
        packets in order, so once the PUBACK of a publish sent now comes back, the earlier acks are in.
        """
        info = self.client.publish(f"settle/{self.client_id}", b"", qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise RuntimeError("the broker did not acknowledge the collector's settle message")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def alert_ids(collector: Collector, topic: str) -> List[str]:
    return [json.loads(p)["id"] for p in collector.payloads(topic)]


def make_event(camera: str, n: int, label: str = "no_mask"):
    """A plausible AlertEvent; ``n`` makes its id unique."""
    from agent.types import AlertEvent

    return AlertEvent(event_id=f"{camera}-{n}", camera=camera, epoch=time.time(), label=label, score=0.91,
                      track_id=n, box=(10.0 + n, 20.0, 110.5, 140.25), frame_width=640, frame_height=480,
                      models={"detector": "blazeface-short-int8@1", "classifier": "maskclf-int8@1"})


def spawn_child(config: dict, env: Optional[dict] = None) -> subprocess.Popen:
    """Start the publisher child; ``config``: mqtt (section mapping), camera, state_dir."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "child", json.dumps(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        env={**os.environ, **(env or {})}, cwd=str(REPO),
    )


def read_until(proc: subprocess.Popen, marker: str, timeout: float = 20.0) -> str:
    """Read the child's stdout until a line starting with ``marker``; returns that line."""
    result: List[str] = []

    def reader() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith(marker):
                result.append(line.strip())
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise AssertionError(f"child did not print {marker!r} within {timeout}s (exit {proc.poll()})")
    return result[0]


def _child(config_json: str) -> int:
    """A small agent: alerts come as lines ``N`` on stdin (one event ``<camera>-N`` each); prints
    ``queued N`` after each, ``started`` once, and closes cleanly on SIGTERM or end of input."""
    import logging

    from agent.pipeline.publish.mqtt import MqttConfig, MqttPublisher

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    cfg = json.loads(config_json)
    camera = cfg["camera"]
    pub = MqttPublisher(MqttConfig(**cfg["mqtt"]), camera=camera, state_dir=cfg["state_dir"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pub.start()
    print("started", flush=True)

    def feed() -> None:
        for line in sys.stdin:
            line = line.strip()
            if line == "depth":
                print(f"depth {pub.stats_payload({})['spool']['depth']}", flush=True)
                continue
            if line:
                pub.alert(make_event(camera, int(line)))
                print(f"queued {line}", flush=True)
        stop.set()

    threading.Thread(target=feed, daemon=True).start()
    stop.wait()
    pub.close(timeout=float(cfg.get("close_timeout", 5.0)))
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    # Run as a script, sys.path[0] is tests/, whose agent/ (the tests' package) would shadow the
    # real one when the repo is already on the path further down (PYTHONPATH=repo).
    sys.path[:] = [str(REPO)] + [p for p in sys.path[1:] if p != str(REPO)]
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        sys.exit(_child(sys.argv[2]))
    print("usage: mosquitto.py child CONFIG_JSON", file=sys.stderr)
    sys.exit(2)
