"""The X11 source against a real X server (Xvfb), a real window manager (openbox) and real programs (xterm,
xdotool): window switches, new windows, title changes, and injected input told apart by its XTEST device."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.identity import Identity
from agent.observations import InputObservation, Observation, WindowSnapshot
from agent.privacy import PrivacyFilter
from agent.recorder import Recorder
from agent.sources.x11logic import (
    XI_RAW_BUTTON_PRESS,
    XI_RAW_KEY_PRESS,
    browser_tab,
    decode_text,
    input_kind,
    parse_raw_event,
    wm_class_app,
    xtest_device_ids,
)
from agent.throttle import HID_TYPE_FOR, HidThrottle
from tests.support.ci import fail_or_skip

TOOLS = ("Xvfb", "openbox", "xdotool", "xterm")


@functools.cache
def _missing_tools() -> tuple[str, ...]:
    """The X11 tools that are not installed (scripts/setup.sh installs them before the tests run)."""
    return tuple(t for t in TOOLS if shutil.which(t) is None)


def _need_tools() -> None:
    """Fail (CI) or skip (a developer's machine) when the X11 tools are not installed."""
    missing = _missing_tools()
    if missing:
        message = f"X11 test tools missing: {', '.join(missing)} (Debian: xvfb openbox xdotool xterm)"
        fail_or_skip(message)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def xserver() -> Iterator[str]:
    """A private Xvfb (display number chosen by the server: -displayfd) with openbox running on it."""
    _need_tools()
    xvfb, name = _start_xvfb()
    procs: list[subprocess.Popen[bytes]] = [xvfb]
    try:
        env = {**os.environ, "DISPLAY": name}
        wm = subprocess.Popen(
            ["openbox", "--sm-disable"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        procs.append(wm)
        _wait(lambda: _wm_running(name), 15, "openbox did not take over the display")
        # openbox announces itself before it manages windows, and a window mapped in between is never
        # managed: probe with a throw-away window until one gets focused.
        for _attempt in range(10):
            probe = subprocess.Popen(["xterm", "-T", "probe", "-e", "sleep", "30"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait(lambda: _active_title(name) == "probe", 1.5, "")
                break
            except AssertionError:
                continue
            finally:
                _stop(probe)
        else:
            raise AssertionError("openbox did not focus a new window in 10 tries")
        _wait(lambda: _active_title(name) != "probe", 10, "the probe window did not close")
        yield name
    finally:
        for p in reversed(procs):
            _stop(p)


def _start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    """Xvfb on a random high display number (low ones like :0 are what other X tests on this machine use
    by default, and a stray client of theirs would land on our server), retried when taken; -displayfd
    tells when it is ready."""
    for _attempt in range(20):
        number = random.randint(300, 9000)
        read_fd, write_fd = os.pipe()
        xvfb = subprocess.Popen(
            ["Xvfb", f":{number}", "-displayfd", str(write_fd),
             "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            ready = f.readline().strip().decode()  # "" when the server exits (display taken)
        if ready == str(number):
            return xvfb, f":{number}"
        _stop(xvfb)
    raise AssertionError("could not start Xvfb on a free display in 20 tries")


def _active_title(name: str) -> str:
    out = subprocess.run(
        ["xdotool", "getactivewindow", "getwindowname"], env={**os.environ, "DISPLAY": name},
        capture_output=True, check=False, text=True,
    )
    return out.stdout.strip()


def _wm_running(name: str) -> bool:
    """An EWMH window manager has set _NET_SUPPORTING_WM_CHECK on the root window."""
    from Xlib import X, display

    d = display.Display(name)
    try:
        root = d.screen().root
        prop = root.get_full_property(d.intern_atom("_NET_SUPPORTING_WM_CHECK"), X.AnyPropertyType)
        return prop is not None and len(prop.value) > 0
    finally:
        d.close()


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)


async def _await(pred: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.05)


async def _xdotool(display: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "xdotool", *args, env={**os.environ, "DISPLAY": display},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, f"xdotool {' '.join(args)} failed: {err.decode()}"
    return out.decode().strip()


@pytest.mark.x11
async def test_window_switch_open_update_and_injected_input(xserver: str) -> None:
    from agent.sources.x11 import X11Source

    source = X11Source(xserver)
    seen: list[Observation] = []
    task = asyncio.create_task(source.run(seen.append))
    terms: list[asyncio.subprocess.Process] = []
    env = {**os.environ, "DISPLAY": xserver}
    xterm_exe = _real_exe("xterm")

    def snapshots() -> list[WindowSnapshot]:
        return [o for o in seen if isinstance(o, WindowSnapshot)]

    def last_title() -> str:
        snaps = snapshots()
        return snaps[-1].title if snaps else ""

    try:
        await _await(source.ready.is_set, 10, "the X11 source did not start")
        # Two real windows; `sleep` instead of a shell so no prompt rewrites the titles.
        for title in ("first", "second"):
            terms.append(await asyncio.create_subprocess_exec(
                "xterm", "-T", title, "-e", "sleep", "60", env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
            try:
                await _await(_equals(last_title, title), 10, "")
            except AssertionError:
                active = await _xdotool(xserver, "getactivewindow", "getwindowname")
                raise AssertionError(
                    f"no snapshot of the new window {title!r}; seen {[s.title for s in snapshots()]}, "
                    f"active now {active!r}"
                ) from None
        first_id = await _xdotool(xserver, "search", "--sync", "--name", "^first$")
        second_id = await _xdotool(xserver, "search", "--sync", "--name", "^second$")

        opened = {s.title: s for s in snapshots() if s.new_window}
        assert set(opened) == {"first", "second"}
        for title, wid in (("first", first_id), ("second", second_id)):
            snap = opened[title]
            assert snap.window_id == wid
            assert snap.app == "XTerm"  # WM_CLASS class part
            assert snap.exe_path == xterm_exe
            assert snap.pid == terms[0 if title == "first" else 1].pid
        # Switch back to the first window: the same window id again, not new.
        count = len(snapshots())
        await _xdotool(xserver, "windowactivate", "--sync", first_id)
        await _await(lambda: last_title() == "first" and len(snapshots()) > count, 10, "no switch snapshot")
        switch = snapshots()[-1]
        assert (switch.window_id, switch.new_window) == (first_id, False)

        # A title change of the active window.
        await _xdotool(xserver, "set_window", "--name", "first — renamed ✓", first_id)
        await _await(lambda: last_title() == "first — renamed ✓", 10, "no snapshot of the title change")
        update = snapshots()[-1]
        assert (update.window_id, update.new_window, update.app) == (first_id, False, "XTerm")

        # A title change of a window in the background is not the foreground's business.
        count = len(snapshots())
        await _xdotool(xserver, "set_window", "--name", "background", second_id)
        await asyncio.sleep(0.5)
        assert len(snapshots()) == count

        # Injected input: xdotool drives the XTEST devices. The pointer is put on the active window so the
        # click switches nothing (and the wheel does not switch openbox desktops, as it would on the root).
        await _xdotool(xserver, "mousemove", "--window", first_id, "20", "20")
        before = len(seen)
        await _xdotool(xserver, "key", "a")
        await _xdotool(xserver, "click", "1")
        await _xdotool(xserver, "click", "4")
        await _await(
            lambda: len([o for o in seen[before:] if isinstance(o, InputObservation)]) >= 3, 10,
            "xdotool input did not reach the source",
        )
        await asyncio.sleep(0.3)  # anything duplicated would have arrived by now
        inputs = [o for o in seen[before:] if isinstance(o, InputObservation)]
        assert [(o.kind, o.injected) for o in inputs] == [("key", True), ("click", True), ("scroll", True)]
        assert not [o for o in seen[before:] if isinstance(o, WindowSnapshot)]
        assert source.idle_ms() < 5000

        # Through the HID throttle those are written as Injected* events.
        throttle = HidThrottle(timedelta(seconds=60))
        written = [
            w.type for o in inputs for w in throttle.on_input(o.ts, HID_TYPE_FOR[("injected", o.kind)])
        ]
        assert written == ["InjectedKeyboardEvent"]
        later = inputs[-1].ts + timedelta(seconds=61)
        assert [w.type for w in throttle.on_input(later, HID_TYPE_FOR[("injected", "click")])] == [
            "InjectedMouseScroll", "InjectedMouseClick",
        ]

        # And through the agent's recorder (with the privacy filter) the whole run becomes these events.
        ident = Identity(agent_id="x11-test", user="u", domain="d", host="h")
        rec = Recorder(ident, privacy=PrivacyFilter.create())
        events = [e for o in seen for e in rec.observe(o)]
        events += rec.stop(inputs[-1].ts + timedelta(seconds=2))
        assert [(e.type, e.input, getattr(e, "title", None)) for e in events] == [
            ("WindowOpen", "none", "first"),
            ("WindowOpen", "none", "second"),
            ("WindowSwitch", "none", "first"),
            ("WindowUpdate", "none", "first — renamed ✓"),
            ("InjectedKeyboardEvent", "injected", "first — renamed ✓"),
            ("AgentStop", "none", None),
        ]
        assert {getattr(e, "app", "XTerm") for e in events} == {"XTerm"}
    finally:
        source.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        for t in terms:
            if t.returncode is None:
                t.terminate()
                try:
                    await asyncio.wait_for(t.wait(), 5)
                except TimeoutError:
                    t.kill()
                    await t.wait()


def _equals(get: Callable[[], str], expected: str) -> Callable[[], bool]:
    return lambda: get() == expected


def _real_exe(name: str) -> str:
    return str(Path(shutil.which(name) or name).resolve())


@pytest.mark.x11
def test_xtest_devices_are_recognised_on_a_real_server(xserver: str) -> None:
    from Xlib import display

    d = display.Display(xserver)
    try:
        devices = d.xinput_query_device(0).devices
        ids = xtest_device_ids(devices)
        names = {dev.deviceid: dev.name for dev in devices}
    finally:
        d.close()
    assert sorted(names[i] for i in ids) == ["Virtual core XTEST keyboard", "Virtual core XTEST pointer"]


async def test_missing_display_is_a_clear_error() -> None:
    from agent.sources.x11 import X11Source, X11Unavailable

    source = X11Source(":4999")
    with pytest.raises(X11Unavailable, match="cannot open X display ':4999'"):
        await asyncio.wait_for(source.run(lambda o: None), 10)


@pytest.mark.x11
async def test_losing_the_x_server_ends_run_with_a_clear_error() -> None:
    from agent.sources.x11 import X11Source, X11Unavailable

    _need_tools()
    xvfb, name = await asyncio.to_thread(_start_xvfb)
    try:
        source = X11Source(name)
        task = asyncio.create_task(source.run(lambda o: None))
        await _await(source.ready.is_set, 10, "the X11 source did not start")
        xvfb.kill()
        with pytest.raises(X11Unavailable, match="lost the connection"):
            await asyncio.wait_for(task, 10)
    finally:
        await asyncio.to_thread(_stop, xvfb)


# ---- the platform-free part (no X server needed) ----------------------------------------------------------


def test_parse_raw_event_body() -> None:
    # deviceid, time, detail, sourceid, valuators_len, flags, pad; then a valuator mask
    body = struct.pack("=HIIHHII", 3, 123456, 38, 5, 1, 0, 0) + b"\0" * 4
    raw = parse_raw_event(body)
    assert (raw.deviceid, raw.sourceid, raw.detail, raw.time) == (3, 5, 38, 123456)
    with pytest.raises(ValueError, match="too short"):
        parse_raw_event(body[:10])


@pytest.mark.parametrize(
    ("evtype", "detail", "kind"),
    [
        (XI_RAW_KEY_PRESS, 38, "key"), (XI_RAW_BUTTON_PRESS, 1, "click"), (XI_RAW_BUTTON_PRESS, 3, "click"),
        (XI_RAW_BUTTON_PRESS, 4, "scroll"), (XI_RAW_BUTTON_PRESS, 7, "scroll"),
        (XI_RAW_BUTTON_PRESS, 8, "click"),
        (14, 38, None),  # RawKeyRelease is not counted
    ],
)
def test_input_kind(evtype: int, detail: int, kind: str | None) -> None:
    assert input_kind(evtype, detail) == kind


def test_only_xtest_devices_are_injected() -> None:
    devices = [
        SimpleNamespace(deviceid=2, name="Virtual core pointer"),
        SimpleNamespace(deviceid=4, name="Virtual core XTEST pointer"),
        SimpleNamespace(deviceid=5, name=b"Virtual core XTEST keyboard"),
        SimpleNamespace(deviceid=9, name="Logitech USB Receiver"),
        SimpleNamespace(deviceid=10, name="XTESTER gamepad"),
    ]
    assert xtest_device_ids(devices) == {4, 5}


def test_property_decoding_and_program_names() -> None:
    assert decode_text("caf\u00e9 \u2713".encode(), utf8=True) == "caf\u00e9 \u2713"
    assert decode_text(b"caf\xe9\0", utf8=False) == "caf\u00e9"
    assert decode_text(None, utf8=True) == ""
    assert wm_class_app(("xterm", "XTerm")) == "XTerm"
    assert wm_class_app(("navigator", "")) == "navigator"
    assert wm_class_app(None) == ""
    assert browser_tab("firefox", "Docs \u2014 Mozilla Firefox") == "Docs"
    assert browser_tab("Google-chrome", "Inbox - Google Chrome") == "Inbox"
    assert browser_tab("XTerm", "Inbox - Google Chrome") == ""
