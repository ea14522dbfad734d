"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

import os
import socket

import pytest

from agent.service.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_ready_and_status_reach_the_socket(notify_socket):
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("watching camera 0")
    assert sock.recv(4096) == b"READY=1\nSTATUS=watching camera 0"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_watchdog_pings_at_half_the_interval(notify_socket):
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_interval == pytest.approx(1.0)
    assert n.watchdog(now=100.0)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert not n.watchdog(now=100.5)  # too soon: nothing sent
    assert n.watchdog(now=101.1)
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_watchdog_for_another_pid_is_ignored(notify_socket):
    path, _ = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval is None
    assert not n.watchdog()


def test_without_systemd_everything_is_a_noop():
    n = Notifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.status("x")


def test_a_vanished_socket_is_not_an_error(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False
