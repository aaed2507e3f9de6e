"""The Linux X11 source: the foreground window through EWMH, input through XInput2 raw events.

- Foreground window: ``_NET_ACTIVE_WINDOW`` on the root window, watched with PropertyNotify; the active
  window's title (``_NET_WM_NAME`` as UTF-8, else ``WM_NAME``) is watched the same way. ``WM_CLASS`` names
  the program, ``_NET_WM_PID`` -> ``/proc/<pid>/exe`` gives the executable (local clients only).
  ``_NET_CLIENT_LIST`` at start-up seeds the windows that already existed; any other window id is new the
  first time it becomes active (``new_window=True``).
- Input: XI2 ``RawKeyPress`` / ``RawButtonPress`` selected on the root window for all master devices (one
  event per press; raw events reach us whichever window has focus or grabs). The event's ``sourceid`` is the
  physical (slave) device; presses from the "Virtual core XTEST pointer/keyboard" slaves are software
  generated (xdotool, RPA robots) and come out as ``injected=True``. python-xlib 0.33 asks for XI 2.0 (whose
  raw events have no sourceid) and has no structure for raw events, so this module sends XIQueryVersion 2.2
  itself and parses the raw event body (:func:`agent.sources.x11logic.parse_raw_event`).
- Idle: ``MIT-SCREEN-SAVER``'s idle time, else the time since the last raw press seen.
- Presence (lock, unlock, suspend, resume, logoff): a :class:`agent.sources.linuxpresence.LinuxPresence`
  given as ``presence`` runs beside the X thread on the same event loop (logind and the screen saver over
  D-Bus). On Wayland (``XDG_SESSION_TYPE`` / ``WAYLAND_DISPLAY``) only XWayland windows exist on the X
  display: the source says so in the log and in ``session_type`` (reported in ``AgentStart``).

The X connection is used by one thread only (python-xlib connections are not meant to be shared); it hands
observations to the asyncio loop with ``call_soon_threadsafe``. ``idle_ms`` uses a second connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

from Xlib import X, Xatom, display, error
from Xlib.ext import xinput
from Xlib.ext.ge import GenericEventCode

from agent.observations import InputObservation, Observation, ObservationSink, WindowSnapshot
from agent.sources.common import Debouncer, ForegroundTracker, InputAttributor
from agent.sources.presencelogic import PresenceWatcher, session_type, wayland_warning
from agent.sources.x11logic import (
    XI_HIERARCHY_CHANGED,
    browser_tab,
    decode_text,
    input_kind,
    parse_raw_event,
    wm_class_app,
    xtest_device_ids,
)

log = logging.getLogger("desktrace.agent.sources.x11")

_XI_ALL_MASTER_DEVICES = 1
_XI_ALL_DEVICES = 0
_POLL_SECONDS = 0.5
#: Title changes are read this long after the first notification: programs set ``WM_NAME`` and
#: ``_NET_WM_NAME`` one after the other, and reading in between would report a half-updated title.
TITLE_DEBOUNCE_SECONDS = 0.1


class X11Unavailable(RuntimeError):
    """The X server cannot be reached or lacks something the source needs; the message says what."""


def _now() -> datetime:
    return datetime.now(UTC)


class X11Source:
    """Watches an X11 display (EWMH window manager required for window tracking).

    Guarantees: every observation is delivered on the asyncio loop that called :meth:`run`, in the order the
    X server reported it; a key press or button press is delivered once (not once per master and slave
    device) with ``injected`` true exactly when its source device is an XTEST device; snapshots are emitted
    only when the active window or what it shows changed. :attr:`ready` is set once the source is
    listening. Window titles never go to logs.
    """

    def __init__(self, display_name: str | None = None, presence: PresenceWatcher | None = None) -> None:
        self._display_name = display_name if display_name is not None else os.environ.get("DISPLAY", "")
        self._presence = presence
        #: the desktop session kind (``x11``, ``wayland``, ...), reported in AgentStart
        self.session_type = session_type(os.environ) or "x11"
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._wake_r = self._wake_w = -1  # a pipe while run() is active: stop() writes to it
        self._thread: threading.Thread | None = None
        self._last_input_monotonic = time.monotonic()
        self._idle_lock = threading.Lock()
        self._idle_display: display.Display | None = None
        self._has_screensaver: bool | None = None

    # ---- Source protocol -----------------------------------------------------------------------------

    async def run(self, emit: ObservationSink) -> None:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def deliver(obs: Observation) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us: we are stopping anyway
                loop.call_soon_threadsafe(emit, obs)

        def done(exc: BaseException | None) -> None:
            def settle() -> None:
                if finished.done():
                    return
                if exc is None:
                    finished.set_result(None)
                else:
                    finished.set_exception(exc)

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        def main() -> None:
            try:
                self._loop(deliver)
            except BaseException as exc:
                done(exc)
            else:
                done(None)

        warning = wayland_warning(os.environ)
        if warning is not None:
            log.warning(warning, extra={"kv": {"session_type": self.session_type}})
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=main, name="desktrace-x11-source", daemon=True)
        self._thread.start()
        presence = None
        if self._presence is not None:
            presence = asyncio.create_task(self._presence.run(emit), name="presence")
        try:
            await finished
        finally:
            self.stop()
            if presence is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(presence, 5)
            thread, self._thread = self._thread, None
            await asyncio.to_thread(thread.join, 5)
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def stop(self) -> None:
        self._stop.set()
        if self._presence is not None:
            self._presence.stop()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def idle_ms(self) -> int:
        with self._idle_lock:
            if self._has_screensaver is not False:
                try:
                    if self._idle_display is None:
                        self._idle_display = display.Display(self._display_name)
                        self._has_screensaver = self._idle_display.has_extension("MIT-SCREEN-SAVER")
                    if self._has_screensaver:
                        root = self._idle_display.screen().root
                        return int(root.screensaver_query_info().idle)  # ms since user input
                except (error.DisplayError, error.ConnectionClosedError, error.XError, OSError):
                    log.warning("x11 idle query failed; using time since last input", exc_info=True)
                    self._idle_display = None
            return int((time.monotonic() - self._last_input_monotonic) * 1000)

    # ---- the X thread --------------------------------------------------------------------------------

    def _loop(self, deliver: ObservationSink) -> None:
        try:
            d = display.Display(self._display_name)
        except (error.DisplayError, error.DisplayNameError, OSError) as exc:
            raise X11Unavailable(f"cannot open X display {self._display_name!r}: {exc}") from exc
        try:
            watcher = _Watcher(d, deliver, self)
            self.ready.set()
            while not self._stop.is_set():
                while self._pending(d):
                    watcher.handle(d.next_event())
                if watcher.title_debounce.fire(time.monotonic()):
                    watcher.emit_active()
                    continue
                timeout = watcher.title_debounce.timeout(time.monotonic(), _POLL_SECONDS)
                readable, _, _ = select.select([d.fileno(), self._wake_r], [], [], timeout)
                if self._wake_r in readable:
                    break
        finally:
            with contextlib.suppress(Exception):
                d.close()

    @staticmethod
    def _pending(d: display.Display) -> int:
        try:
            return int(d.pending_events())
        except (error.ConnectionClosedError, OSError) as exc:
            raise X11Unavailable(f"lost the connection to the X server: {exc}") from exc

    def _saw_input(self) -> None:
        self._last_input_monotonic = time.monotonic()


class _Watcher:
    """State of the X thread: atoms, the active window, XTEST devices, the tracker."""

    def __init__(self, d: display.Display, deliver: ObservationSink, owner: X11Source) -> None:
        self.d = d
        self.deliver = deliver
        self.owner = owner
        self.root = d.screen().root
        self.attributor = InputAttributor()
        self.hostname = socket.gethostname()
        atom = d.intern_atom
        self.NET_ACTIVE_WINDOW = atom("_NET_ACTIVE_WINDOW")
        self.NET_CLIENT_LIST = atom("_NET_CLIENT_LIST")
        self.NET_WM_NAME = atom("_NET_WM_NAME")
        self.NET_WM_PID = atom("_NET_WM_PID")
        self.UTF8_STRING = atom("UTF8_STRING")
        self.WM_CLIENT_MACHINE = atom("WM_CLIENT_MACHINE")
        self.active: int = 0
        self.title_debounce = Debouncer(TITLE_DEBOUNCE_SECONDS)
        self.root.change_attributes(event_mask=X.PropertyChangeMask)
        if self._get(self.root, atom("_NET_SUPPORTING_WM_CHECK"), Xatom.WINDOW) is None:
            log.warning("no EWMH window manager yet: the active window is tracked once one sets it")
        self.clients: set[int] = set(self._client_list())
        self.tracker = ForegroundTracker(str(w) for w in self.clients)
        self.xi_opcode = self._setup_xinput()
        self.xtest: frozenset[int] = self._query_xtest()
        d.flush()
        self._refresh_active()

    # -- XInput2 --

    def _setup_xinput(self) -> int | None:
        if not self.d.has_extension(xinput.extname):
            log.warning("X server has no XInputExtension: input will not be observed")
            return None
        opcode = self.d.display.get_extension_major(xinput.extname)
        reply = xinput.XIQueryVersion(display=self.d.display, opcode=opcode, major_version=2, minor_version=2)
        if (reply.major_version, reply.minor_version) < (2, 1):
            log.warning(
                "X server has XInput %s.%s (< 2.1, no sourceid): input will not be observed",
                reply.major_version, reply.minor_version,
            )
            return None
        self.root.xinput_select_events([
            (_XI_ALL_MASTER_DEVICES, xinput.RawKeyPressMask | xinput.RawButtonPressMask),
            (_XI_ALL_DEVICES, xinput.HierarchyChangedMask),
        ])
        return int(opcode)

    def _query_xtest(self) -> frozenset[int]:
        if self.xi_opcode is None:
            return frozenset()
        devices = self.d.xinput_query_device(_XI_ALL_DEVICES).devices
        ids = xtest_device_ids(devices)
        log.info("x11 input devices", extra={"kv": {"devices": len(devices), "xtest_devices": sorted(ids)}})
        return ids

    # -- events --

    def handle(self, ev: Any) -> None:
        if ev.type == X.PropertyNotify:
            self._on_property(ev)
        elif ev.type == X.DestroyNotify:
            self.tracker.forget([str(ev.window.id)])
        elif ev.type == GenericEventCode and ev.extension == self.xi_opcode:
            self._on_xi(ev)

    def _on_property(self, ev: Any) -> None:
        wid = ev.window.id
        if wid == self.root.id:
            if ev.atom == self.NET_ACTIVE_WINDOW:
                self._refresh_active()
            elif ev.atom == self.NET_CLIENT_LIST:
                now = set(self._client_list())
                gone = self.clients - now
                self.tracker.forget(str(w) for w in gone)
                self.clients = now
        elif wid == self.active and ev.atom in (self.NET_WM_NAME, Xatom.WM_NAME, Xatom.WM_CLASS):
            self.title_debounce.poke(time.monotonic())

    def emit_active(self) -> None:
        """Read the active window again (a debounced title change) and emit it if it changed."""
        if self.active:
            self._emit_snapshot(self.active)

    def _on_xi(self, ev: Any) -> None:
        if ev.evtype == XI_HIERARCHY_CHANGED:
            self.xtest = self._query_xtest()
            return
        body = ev._data.get("data")
        if not isinstance(body, bytes | bytearray):
            return
        try:
            raw = parse_raw_event(bytes(body))
        except ValueError:
            log.warning("ignoring a malformed XI2 raw event")
            return
        kind = input_kind(ev.evtype, raw.detail)
        if kind is None:
            return
        ts = _now()
        injected = raw.sourceid in self.xtest
        self.attributor.on_input(ts, injected)
        self.owner._saw_input()
        self.deliver(InputObservation(ts=ts, kind=kind, injected=injected))

    # -- windows --

    def _client_list(self) -> list[int]:
        prop = self._get(self.root, self.NET_CLIENT_LIST, Xatom.WINDOW)
        return [int(w) for w in prop.value] if prop is not None else []

    def _get(self, window: Any, prop: int, type_: int) -> Any:
        try:
            return window.get_full_property(prop, type_)
        except error.XError:  # BadWindow: it closed meanwhile
            return None

    def _refresh_active(self) -> None:
        prop = self._get(self.root, self.NET_ACTIVE_WINDOW, Xatom.WINDOW)
        wid = int(prop.value[0]) if prop is not None and len(prop.value) else 0
        self.title_debounce.cancel()  # the read below sees the latest title anyway
        if wid != self.active:
            if self.active:
                self._watch(self.active, 0)
            self.active = wid
            if wid:
                self._watch(wid, X.PropertyChangeMask | X.StructureNotifyMask)
        if wid:
            self._emit_snapshot(wid)

    def _watch(self, wid: int, mask: int) -> None:
        catch = error.CatchError(error.BadWindow)
        self.d.create_resource_object("window", wid).change_attributes(event_mask=mask, onerror=catch)

    def _emit_snapshot(self, wid: int) -> None:
        snapshot = self._read_window(wid)
        if snapshot is None:
            return
        out = self.tracker.observe(snapshot)
        if out is not None:
            self.deliver(out)

    def _read_window(self, wid: int) -> WindowSnapshot | None:
        w = self.d.create_resource_object("window", wid)
        try:
            # EWMH says UTF8_STRING; some tools (xdotool set_window) store it typed STRING: any type, UTF-8.
            title_prop = self._get(w, self.NET_WM_NAME, X.AnyPropertyType)
            if title_prop is not None and title_prop.value:
                title = decode_text(title_prop.value, utf8=True)
            else:
                legacy = self._get(w, Xatom.WM_NAME, X.AnyPropertyType)
                utf8 = legacy is not None and legacy.property_type == self.UTF8_STRING
                title = decode_text(legacy.value if legacy is not None else None, utf8=utf8)
            wm_class = w.get_wm_class()
            pid_prop = self._get(w, self.NET_WM_PID, Xatom.CARDINAL)
            machine = self._get(w, self.WM_CLIENT_MACHINE, Xatom.STRING)
        except error.XError:
            return None
        pid = int(pid_prop.value[0]) if pid_prop is not None and len(pid_prop.value) else 0
        local = machine is None or decode_text(machine.value, utf8=False) in ("", self.hostname)
        app = wm_class_app(wm_class)
        ts = _now()
        return WindowSnapshot(
            ts=ts,
            window_id=str(wid),
            app=app,
            exe_path=_exe(pid) if local else "",
            pid=pid if local else 0,
            title=title,
            tab=browser_tab(app, title),
            input=self.attributor.cause(ts),
        )


def _exe(pid: int) -> str:
    if pid <= 0:
        return ""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""

