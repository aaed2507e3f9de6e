"""Linux presence on a real D-Bus: a private `dbus-daemon --session` started here, a stand-in logind that owns
org.freedesktop.login1 and answers the agent's method calls, and screen savers, all sending the real signals
with their real signatures (Session.Lock(), Manager.PrepareForSleep(b), SessionRemoved(so),
ScreenSaver.ActiveChanged(b)). What users rely on: locked time and sleeps show up, once each, and nobody but
logind can fake a logind signal."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection

from agent.observations import Observation, PresenceObservation
from agent.sources.linuxpresence import LinuxPresence
from agent.sources.presencelogic import (
    LOGIN1,
    LOGIN1_MANAGER,
    LOGIN1_PATH,
    LOGIN1_SESSION,
    PresenceDeduper,
    presence_kind,
    session_type,
    wayland_warning,
)
from tests.support.ci import fail_or_skip

SESSION = "/org/freedesktop/login1/session/c7"
OTHER_SESSION = "/org/freedesktop/login1/session/c9"
USER = "/org/freedesktop/login1/user/_1000"


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    """A private session bus (dbus-daemon from Debian's dbus package)."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        message = "dbus-daemon missing (Debian: dbus; scripts/setup.sh installs it)"
        fail_or_skip(message)
    proc = subprocess.Popen(
        [daemon, "--session", "--nofork", "--nopidfile", "--print-address=1",
         f"--address=unix:path={tmp_path / 'bus'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    assert address.startswith("unix:"), proc.stderr.read() if proc.stderr else ""
    try:
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class FakeLogind:
    """Owns org.freedesktop.login1 on the bus and answers GetSession, GetSessionByPID (no session for the
    agent's pid unless ``by_pid``), GetUser and the user's ``Display`` property, as logind does."""

    def __init__(self, address: str, by_pid: bool) -> None:
        self.conn: DBusConnection = open_dbus_connection(address, enable_fds=True)
        self.delay_locks: list[int] = []  # write ends of the pipes whose read ends went out as Inhibit locks
        reply = self.conn.send_and_get_reply(message_bus.RequestName(LOGIN1, 0x4), timeout=10)
        assert reply.body == (1,), reply.body  # primary owner
        self.by_pid = by_pid
        self.calls: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.conn.receive(timeout=0.1)
            except TimeoutError:
                continue
            except OSError:
                return
            if msg.header.message_type != MessageType.method_call:
                continue
            member = msg.header.fields.get(HeaderFields.member)
            self.calls.append(str(member))
            answer = self._answer(str(member), msg)
            if answer is not None:
                self.conn.send(answer)

    def _answer(self, member: str, msg: Any) -> Any:
        if member == "GetSession":
            if msg.body == ("c7",):
                return new_method_return(msg, "o", (SESSION,))
            return new_error(msg, "org.freedesktop.login1.NoSuchSession", "s", ("no such session",))
        if member == "GetSessionByPID":
            if self.by_pid:
                return new_method_return(msg, "o", (SESSION,))
            return new_error(msg, "org.freedesktop.login1.NoSessionForPID", "s", ("not in a session",))
        if member == "Inhibit":
            assert msg.body == ("sleep", "desktrace agent", msg.body[2], "delay"), msg.body
            r, w = os.pipe()
            self.delay_locks.append(w)
            reply = new_method_return(msg, "h", (r,))
            self.conn.send(reply)
            os.close(r)  # the agent holds the only read end now
            return None
        if member == "GetUser":
            return new_method_return(msg, "o", (USER,))
        if member == "Get" and msg.body == ("org.freedesktop.login1.User", "Display"):
            return new_method_return(msg, "v", (("(so)", ("c7", SESSION)),))
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (member,))

    def lock_held(self, i: int) -> bool:
        """Whether the agent still holds the ``i``-th delay lock (the pipe's read end is open)."""
        try:
            os.write(self.delay_locks[i], b"x")
        except BrokenPipeError:
            return False
        return True

    def signal(self, path: str, interface: str, member: str, signature: str | None = None,
               body: tuple[Any, ...] = ()) -> None:
        self.conn.send(new_signal(DBusAddress(path, interface=interface), member, signature, body))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()
        for w in self.delay_locks:
            os.close(w)


def _send(conn: DBusConnection, path: str, interface: str, member: str, signature: str | None = None,
          body: tuple[Any, ...] = ()) -> None:
    conn.send(new_signal(DBusAddress(path, interface=interface), member, signature, body))


async def _until(pred: Any, within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("how", ["XDG_SESSION_ID", "pid", "user display"])
async def test_presence_signals_on_a_real_bus(bus: str, how: str) -> None:
    logind = await asyncio.to_thread(FakeLogind, bus, how == "pid")
    other = open_dbus_connection(bus)  # a program that is not logind, and the screen savers
    seen: list[Observation] = []
    presence = LinuxPresence(bus, bus, session_id="c7" if how == "XDG_SESSION_ID" else "", pid=4242, uid=1000)
    held_at_suspend: list[bool] = []

    def sink(o: Observation) -> None:  # the agent spools each observation before this returns
        if isinstance(o, PresenceObservation) and o.kind == "Suspend":
            held_at_suspend.append(logind.lock_held(0))
        seen.append(o)

    task = asyncio.create_task(presence.run(sink))
    try:
        await asyncio.wait_for(presence.ready.wait(), 30)
        assert presence.buses == {"logind": True, "screensaver": True}
        assert presence.session_path == SESSION
        expected_calls = {
            "XDG_SESSION_ID": ["GetSession"],
            "pid": ["GetSessionByPID"],
            "user display": ["GetSessionByPID", "GetUser", "Get"],  # a systemd user service: no session
        }[how]
        await _until(lambda: presence.holds_sleep_delay)  # a delay lock for sleep, from the start
        assert [c for c in logind.calls if c != "Inhibit"] == expected_calls
        assert logind.calls.count("Inhibit") == 1 and logind.lock_held(0)
        send = logind.signal
        gnome = "/org/gnome/ScreenSaver", "org.gnome.ScreenSaver", "ActiveChanged", "b"
        # (what happens, the presence kinds seen after it); signals of different senders have no order on
        # the bus, so each step waits for its outcome (a step that must change nothing waits a moment)
        steps: list[tuple[Any, list[str]]] = [
            (lambda: send(SESSION, LOGIN1_SESSION, "Lock"), ["Lock"]),
            # the same lock reported by the screen saver
            (lambda: _send(other, "/org/freedesktop/ScreenSaver", "org.freedesktop.ScreenSaver",
                           "ActiveChanged", "b", (True,)), ["Lock"]),
            (lambda: _send(other, SESSION, LOGIN1_SESSION, "Unlock"), ["Lock"]),  # not from logind
            (lambda: send(OTHER_SESSION, LOGIN1_SESSION, "Unlock"), ["Lock"]),  # another user's session
            (lambda: send(SESSION, LOGIN1_SESSION, "Unlock"), ["Lock", "Unlock"]),
            (lambda: send(LOGIN1_PATH, LOGIN1_MANAGER, "PrepareForSleep", "b", (True,)),
             ["Lock", "Unlock", "Suspend"]),
            (lambda: send(LOGIN1_PATH, LOGIN1_MANAGER, "PrepareForSleep", "b", (False,)),
             ["Lock", "Unlock", "Suspend", "Resume"]),
            (lambda: _send(other, *gnome, (True,)), ["Lock", "Unlock", "Suspend", "Resume", "Lock"]),
            (lambda: _send(other, *gnome, (False,)),
             ["Lock", "Unlock", "Suspend", "Resume", "Lock", "Unlock"]),
            (lambda: send(LOGIN1_PATH, LOGIN1_MANAGER, "SessionRemoved", "so", ("c9", OTHER_SESSION)),
             ["Lock", "Unlock", "Suspend", "Resume", "Lock", "Unlock"]),
            (lambda: send(LOGIN1_PATH, LOGIN1_MANAGER, "SessionRemoved", "so", ("c7", SESSION)),
             ["Lock", "Unlock", "Suspend", "Resume", "Lock", "Unlock", "Logoff"]),
        ]

        def kinds() -> list[str]:
            return [o.kind for o in seen if isinstance(o, PresenceObservation)]

        for step, expected in steps:
            before = len(seen)
            step()
            if len(expected) > before:
                await _until(lambda n=len(expected): len(seen) >= n)  # type: ignore[misc]
            await asyncio.sleep(0.2)  # nothing more may come
            assert kinds() == expected
            if kinds()[-1:] == ["Suspend"] and len(expected) > before:
                # the Suspend was handed over, then the delay lock released: now the machine may sleep
                assert held_at_suspend == [True]  # still held while the event was handed over
                assert not presence.holds_sleep_delay and not logind.lock_held(0)
            if kinds()[-1:] == ["Resume"] and len(expected) > before:
                await _until(lambda: presence.holds_sleep_delay)  # a new lock for the next sleep
                assert logind.calls.count("Inhibit") == 2 and logind.lock_held(1)
        assert len(kinds()) == len(seen)
        assert all(o.ts.tzinfo is not None for o in seen if isinstance(o, PresenceObservation))
    finally:
        presence.stop()
        await asyncio.wait_for(task, 10)
        other.close()
        await asyncio.to_thread(logind.close)


async def test_no_bus_is_logged_and_survived(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nowhere = f"unix:path={tmp_path / 'no-bus'}"
    presence = LinuxPresence(nowhere, nowhere, session_id="c7")
    task = asyncio.create_task(presence.run(lambda o: None))
    await asyncio.wait_for(presence.ready.wait(), 30)
    assert presence.buses == {"logind": False, "screensaver": False}
    assert not task.done()  # the agent keeps running on what it has
    presence.stop()
    await asyncio.wait_for(task, 10)
    assert "presence watcher unavailable" in caplog.text


# ---- pure interpretation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interface", "member", "path", "body", "kind"),
    [
        (LOGIN1_SESSION, "Lock", SESSION, (), "Lock"),
        (LOGIN1_SESSION, "Unlock", SESSION, (), "Unlock"),
        (LOGIN1_SESSION, "Lock", OTHER_SESSION, (), None),
        (LOGIN1_MANAGER, "PrepareForSleep", LOGIN1_PATH, (True,), "Suspend"),
        (LOGIN1_MANAGER, "PrepareForSleep", LOGIN1_PATH, (False,), "Resume"),
        (LOGIN1_MANAGER, "PrepareForShutdown", LOGIN1_PATH, (True,), "Logoff"),
        (LOGIN1_MANAGER, "PrepareForShutdown", LOGIN1_PATH, (False,), None),
        (LOGIN1_MANAGER, "SessionRemoved", LOGIN1_PATH, ("c7", SESSION), "Logoff"),
        (LOGIN1_MANAGER, "SessionNew", LOGIN1_PATH, ("c7", SESSION), None),
        ("org.freedesktop.ScreenSaver", "ActiveChanged", "/org/freedesktop/ScreenSaver", (True,), "Lock"),
        ("org.mate.ScreenSaver", "ActiveChanged", "/org/mate/ScreenSaver", (False,), "Unlock"),
        ("org.example.Other", "ActiveChanged", "/", (True,), None),
    ],
)
def test_signal_meanings(
    interface: str, member: str, path: str, body: tuple[Any, ...], kind: str | None
) -> None:
    assert presence_kind(interface, member, path, body, SESSION) == kind


def test_deduper_passes_state_changes_only() -> None:
    d = PresenceDeduper()
    kinds = ["Unlock", "Lock", "Lock", "Unlock", "Unlock", "Suspend", "Suspend", "Resume", "Logoff", "Logoff"]
    assert [k for k in kinds if d.accept(k)] == ["Unlock", "Lock", "Unlock", "Suspend", "Resume", "Logoff"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "kind", "warns"),
    [
        ({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, "wayland", True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "wayland", True),
        ({"XDG_SESSION_TYPE": "x11", "DISPLAY": ":0"}, "x11", False),
        ({"DISPLAY": ":1"}, "x11", False),
        ({}, "", False),
    ],
)
def test_session_type(env: dict[str, str], kind: str, warns: bool) -> None:
    assert session_type(env) == kind
    assert (wayland_warning(env) is not None) is warns




def test_agent_start_reports_the_session_type_and_presence_becomes_events() -> None:
    from datetime import UTC, datetime

    from agent.identity import Identity
    from agent.recorder import Recorder
    from proto.codec import decode_event, encode_event

    rec = Recorder(Identity(agent_id="a-1", user="alice", domain="corp", host="pc1"))
    t0 = datetime(2024, 5, 6, 9, tzinfo=UTC)
    events = rec.start(t0, "wayland")
    events += rec.observe(PresenceObservation(ts=t0, kind="Lock"))
    decoded = [decode_event(encode_event(e)) for e in events]
    assert [e.type for e in decoded] == ["AgentStart", "Lock"]
    assert decoded[0].session_type == "wayland"  # type: ignore[union-attr]
