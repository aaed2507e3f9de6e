"""Linux presence over D-Bus: Lock/Unlock/Suspend/Resume/Logoff from logind (system bus) and the desktop's
screen saver (session bus), through ``jeepney`` (pure-Python D-Bus, asyncio router).

Which session is ours: ``XDG_SESSION_ID`` (``Manager.GetSession``), else the session of this process
(``GetSessionByPID``), else, for an agent run as a systemd user service (which is in no session), the
user's graphical session (``User.Display``). Without a session only machine-wide signals (sleep, shutdown)
and the screen saver count.

A bus that cannot be reached is logged once and left alone: the agent keeps running on what it has. The
meaning of each signal is :mod:`agent.sources.presencelogic`'s.

Suspend is recorded before the machine sleeps: the watcher holds a logind *delay* inhibitor lock for
``sleep`` (``Manager.Inhibit``, a file descriptor; logind waits for it, 5 s by default) and closes it only
after the ``Suspend`` observation has been handed to the agent, which spools it durably before returning;
after ``Resume`` it takes a new one. jeepney's asyncio router cannot pass file descriptors, so the lock is
taken over a short-lived blocking connection in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jeepney import (
    DBusAddress,
    HeaderFields,
    MatchRule,
    MessageType,
    Properties,
    message_bus,
    new_method_call,
)
from jeepney.io import blocking
from jeepney.io.asyncio import DBusRouter, Proxy, open_dbus_router

from agent.observations import ObservationSink, PresenceObservation
from agent.sources.presencelogic import (
    LOGIN1,
    LOGIN1_MANAGER,
    LOGIN1_PATH,
    LOGIN1_SESSION,
    LOGIN1_USER,
    SCREENSAVERS,
    PresenceDeduper,
    presence_kind,
)

log = logging.getLogger("desktrace.agent.sources.presence")


class LinuxPresence:
    """Watches logind and the screen saver and emits :class:`PresenceObservation` s.

    Guarantees: each lock, unlock, suspend, resume and logoff of this user's session is emitted once (the
    same change reported by logind and by the screen saver is emitted once,
    :class:`~agent.sources.presencelogic.PresenceDeduper`), on the event loop that runs :meth:`run`, in the
    order the buses delivered the signals; logind signals are only accepted from the owner of
    ``org.freedesktop.login1`` (matched by the bus). :attr:`ready` is set once both buses are subscribed
    or given up; :attr:`session_path` is our logind session's object path, when found."""

    def __init__(
        self,
        system_bus: str = "SYSTEM",
        session_bus: str = "SESSION",
        *,
        session_id: str | None = None,
        pid: int | None = None,
        uid: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.system_bus = system_bus
        self.session_bus = session_bus
        self.session_id = os.environ.get("XDG_SESSION_ID") if session_id is None else session_id
        self.pid = os.getpid() if pid is None else pid
        self.uid = os.getuid() if uid is None else uid
        self.clock = clock
        self.session_path: str | None = None
        self.ready = asyncio.Event()
        self.buses: dict[str, bool] = {}  # "logind" / "screensaver" -> subscribed
        self._dedup = PresenceDeduper()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inhibitor: int | None = None  # the delay lock's file descriptor, while held
        self._inhibiting: asyncio.Task[None] | None = None

    async def run(self, emit: ObservationSink) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks = [
            asyncio.create_task(self._watch("logind", self.system_bus, self._logind_rules, emit)),
            asyncio.create_task(self._watch("screensaver", self.session_bus, self._screensaver_rules, emit)),
        ]
        try:
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if self._inhibiting is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._inhibiting
            self._release_inhibitor()

    # ---- the sleep delay lock ---------------------------------------------------------------------------

    @property
    def holds_sleep_delay(self) -> bool:
        """Whether a logind delay lock for sleep is held now."""
        return self._inhibitor is not None

    def _take_inhibitor_soon(self) -> None:
        if self._inhibitor is None and (self._inhibiting is None or self._inhibiting.done()):
            self._inhibiting = asyncio.create_task(self._take_inhibitor())

    async def _take_inhibitor(self) -> None:
        fd = await asyncio.to_thread(self._inhibit)
        if fd is None:
            return
        if self._inhibitor is not None or (self._stop is not None and self._stop.is_set()):
            os.close(fd)
            return
        self._inhibitor = fd

    def _inhibit(self) -> int | None:
        """``Manager.Inhibit("sleep", ..., "delay")`` over a blocking connection; the lock's raw fd."""
        manager = DBusAddress(LOGIN1_PATH, bus_name=LOGIN1, interface=LOGIN1_MANAGER)
        msg = new_method_call(
            manager, "Inhibit", "ssss",
            ("sleep", "desktrace agent", "records the suspend before the machine sleeps", "delay"),
        )
        try:
            with blocking.open_dbus_connection(self.system_bus, enable_fds=True) as conn:
                reply = conn.send_and_get_reply(msg, timeout=10)
        except Exception as exc:
            log.warning("no sleep delay lock: a suspend may be recorded late",
                        extra={"kv": {"error_class": type(exc).__name__}})
            return None
        if reply.header.message_type == MessageType.error or not reply.body:
            log.warning("no sleep delay lock: a suspend may be recorded late",
                        extra={"kv": {"refused": True}})
            return None
        return int(reply.body[0].to_raw_fd())

    def _release_inhibitor(self) -> None:
        fd, self._inhibitor = self._inhibitor, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is None or stop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            stop.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    # ---- buses ------------------------------------------------------------------------------------------

    async def _watch(
        self,
        name: str,
        bus: str,
        rules: Callable[[DBusRouter], Any],
        emit: ObservationSink,
    ) -> None:
        try:
            async with open_dbus_router(bus) as router:
                wanted: list[MatchRule] = await rules(router)
                queue: asyncio.Queue[Any] = asyncio.Queue()
                with contextlib.ExitStack() as stack:
                    daemon = Proxy(message_bus, router)
                    for rule in wanted:
                        await daemon.AddMatch(rule)
                        # the bus filters by sender (a well-known name); locally messages carry the unique
                        # name, so the local filter leaves the sender out
                        local = MatchRule(
                            type="signal",
                            interface=rule.header_fields.get("interface"),
                            path=rule.header_fields.get("path"),
                            member=rule.header_fields.get("member"),
                        )
                        stack.enter_context(router.filter(local, queue=queue))
                    self.buses[name] = True
                    self._mark(name)
                    log.info("presence watcher subscribed", extra={"kv": {"bus": name, "rules": len(wanted)}})
                    while True:
                        self._handle(await queue.get(), emit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # no such bus (a container, no desktop), refused, closed
            log.warning(
                "presence watcher unavailable; these presence events are not observed",
                extra={"kv": {"bus": name, "error_class": type(exc).__name__}},
            )
        finally:
            self.buses.setdefault(name, False)
            self._mark(name)

    def _mark(self, name: str) -> None:
        self.buses.setdefault(name, False)
        if {"logind", "screensaver"} <= self.buses.keys():
            self.ready.set()

    async def _logind_rules(self, router: DBusRouter) -> list[MatchRule]:
        self.session_path = await self._find_session(router)
        if self.session_path is None:
            log.warning("no logind session found for this agent: lock/unlock come from the screen saver only")
        rules = [MatchRule(type="signal", sender=LOGIN1, interface=LOGIN1_MANAGER, path=LOGIN1_PATH)]
        self._take_inhibitor_soon()
        if self.session_path is not None:
            rules.append(
                MatchRule(type="signal", sender=LOGIN1, interface=LOGIN1_SESSION, path=self.session_path)
            )
        return rules

    async def _screensaver_rules(self, router: DBusRouter) -> list[MatchRule]:
        return [MatchRule(type="signal", interface=i, member="ActiveChanged") for i in SCREENSAVERS]

    async def _find_session(self, router: DBusRouter) -> str | None:
        manager = DBusAddress(LOGIN1_PATH, bus_name=LOGIN1, interface=LOGIN1_MANAGER)
        if self.session_id:
            path = await _call(router, new_method_call(manager, "GetSession", "s", (self.session_id,)))
            if path:
                return str(path[0])
        path = await _call(router, new_method_call(manager, "GetSessionByPID", "u", (self.pid,)))
        if path:
            return str(path[0])
        user = await _call(router, new_method_call(manager, "GetUser", "u", (self.uid,)))
        if not user:
            return None
        user_obj = DBusAddress(str(user[0]), bus_name=LOGIN1, interface=LOGIN1_USER)
        display = await _call(router, Properties(user_obj).get("Display"))
        if display:
            _sig, (_sid, spath) = display[0]
            if spath and spath != "/":
                return str(spath)
        return None

    def _handle(self, msg: Any, emit: ObservationSink) -> None:
        fields = msg.header.fields
        kind = presence_kind(
            str(fields.get(HeaderFields.interface, "")),
            str(fields.get(HeaderFields.member, "")),
            str(fields.get(HeaderFields.path, "")),
            msg.body,
            self.session_path,
        )
        if kind is not None and self._dedup.accept(kind):
            log.info("presence", extra={"kv": {"kind": kind}})
            emit(PresenceObservation(ts=self.clock(), kind=kind))  # spooled durably when it returns
        if kind == "Suspend":
            self._release_inhibitor()  # now the machine may sleep
        elif kind == "Resume":
            self._take_inhibitor_soon()


async def _call(router: DBusRouter, msg: Any) -> tuple[Any, ...] | None:
    """A method call's reply body, or None when the service answered with an error or not in time."""
    try:
        reply = await asyncio.wait_for(router.send_and_get_reply(msg), 10)
    except TimeoutError:
        return None
    if reply.header.message_type == MessageType.error:
        return None
    return tuple(reply.body)


__all__ = ["LinuxPresence"]
