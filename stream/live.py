"""The worker's per-user state kept decoded in memory between batches, in front of the changelog-backed
table (``docs/stream-performance.md``).

Decoding a user's state, re-encoding it and sending it to the changelog on every batch cost more than the
sessionizer itself, and grew with the number of distinct users per batch. :class:`LiveStates` decodes a
user once, keeps the decoded :class:`LiveUser` while the user is active, and encodes and writes each changed
user once per commit interval (:meth:`LiveStates.flush`), just before Faust commits offsets.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Container, ItemsView, Iterable, Iterator
from typing import NamedTuple, Protocol

import msgspec

from stream import fleet
from stream.core import WRITE_VERSIONS, UserState, decode_state, encode_state
from stream.state import UserRecord, decode_record, encode_record

log = logging.getLogger(__name__)


class Store(Protocol):
    """What :class:`LiveStates` needs of a table's local store (a dict is one)."""

    def get(self, key: bytes, /) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes, /) -> None: ...

    def items(self) -> ItemsView[bytes, bytes] | Iterable[tuple[bytes, bytes]]: ...


class LiveUser:
    """One user's state, decoded: the worker's record and the core's state (``record.core`` is stale while
    the user is cached; :meth:`LiveStates.flush` refreshes it)."""

    __slots__ = ("core", "record")

    def __init__(self, record: UserRecord, core: UserState | None) -> None:
        self.record = record
        self.core = core


class Flushed(NamedTuple):
    """A table value to write: ``key`` -> ``value`` on changelog ``partition``."""

    key: bytes
    partition: int
    value: bytes


class LiveStates:
    """Decoded per-user state over a table store (``store``: user key bytes -> :func:`encode_record` bytes).

    Guarantees: :meth:`get` returns the state as last :meth:`put` (cached) or as stored; a user marked
    changed is written to the store by the next :meth:`flush` exactly once, whatever the number of batches
    in between; at most ``max_users`` unchanged users stay decoded (the least recently used are dropped
    after a flush, their bytes being in the store); :meth:`drop_partitions` forgets cached users of revoked
    partitions without writing them (their changes are re-derived by whoever re-processes the uncommitted
    events). Values are written in state format ``state_format`` (2, 3 or 4, ``stream.core.WRITE_VERSIONS``)
    and read in any. With ``max_value_bytes`` and ``shed`` (``Sessionizer.shed``), no value written is
    larger: a user whose value would be is made to fit first (:meth:`_fit`), so that the changelog never
    refuses it (a refused state write stops the worker, which would then stop again on the same events).
    """

    def __init__(
        self,
        store: Store,
        max_users: int = 5_000,
        state_format: int = 2,
        max_value_bytes: int | None = None,
        shed: Callable[[UserState, int], int] | None = None,
    ) -> None:
        if state_format not in WRITE_VERSIONS:
            raise ValueError(f"state format {state_format} is not one of {WRITE_VERSIONS}")
        self.store = store
        self.max_users = max_users
        self.state_format = state_format
        self.max_value_bytes = max_value_bytes
        self._shed = shed
        self._cache: OrderedDict[bytes, LiveUser] = OrderedDict()
        self._dirty: set[bytes] = set()
        self._records: set[bytes] = set()  #: users whose record changed and core did not (:meth:`put_record`)
        self._held: dict[bytes, Flushed] = {}  #: values stored by :meth:`checkpoint`, for the next flush
        self.unreadable = 0  #: stored values that could not be decoded (the user starts afresh)
        self.shed_users = 0  #: values made to fit ``max_value_bytes`` (one per user and flush)
        self.oversized = 0  #: values still larger after all that could go went (written as they are)

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def changed(self) -> int:
        """Users changed since the last flush (stored by a :meth:`checkpoint` or not)."""
        return len(self._dirty | self._records | self._held.keys())

    def get(self, key: bytes) -> LiveUser | None:
        """The decoded state of ``key`` (None for a user never seen, or whose stored bytes are unreadable)."""
        live = self._cache.get(key)
        if live is not None:
            self._cache.move_to_end(key)
            return live
        raw = self.store.get(key)
        if raw is None:
            return None
        try:
            record = decode_record(raw)
            core = decode_state(record.core) if record.core else None
        except (msgspec.DecodeError, ValueError):
            # Not ours (e.g. an older, incompatible format): start the user afresh rather than stall.
            log.error("unreadable state record replaced", extra={"kv": {"bytes": len(raw)}})
            self.unreadable += 1
            return None
        live = LiveUser(record, core)
        self._cache[key] = live
        return live

    def put(self, key: bytes, live: LiveUser) -> None:
        """Cache ``live`` as the state of ``key`` and mark it changed."""
        self._cache[key] = live
        self._cache.move_to_end(key)
        self._dirty.add(key)

    def put_record(self, key: bytes, live: LiveUser) -> None:
        """Cache ``live`` as the state of ``key`` and mark its record changed but not its core, which has
        not changed since it was read or last flushed: the next :meth:`flush` writes the core's bytes as
        they are (``record.core``) instead of encoding the core again."""
        self._cache[key] = live
        self._cache.move_to_end(key)
        if key not in self._dirty:
            self._records.add(key)

    def flush(self, write: Callable[[Flushed], None] | None = None) -> int:
        """Encode every changed user, store it and pass it to ``write`` (the changelog send), after the
        values a :meth:`checkpoint` stored since the last flush (those of users not changed since); then drop
        the least recently used unchanged users beyond ``max_users``. Returns the number of users written."""
        held, self._held = self._held, {}
        n = 0
        if held:
            changed = self._dirty | self._records
            for key, f in held.items():
                if key not in changed:
                    if write is not None:
                        write(f)
                    n += 1
        n += self._store_changed(write)
        cache = self._cache
        while len(cache) > self.max_users:
            cache.popitem(last=False)
        return n

    def checkpoint(self, keys: Iterable[bytes] | None = None) -> int:
        """Store every changed user (or those of ``keys``) now, as :meth:`flush` does, and hold the values for
        the next flush's ``write``: a user :meth:`forget` drops after this goes back to this state, not to
        the one of the last flush. The processor calls it when it lets go of the records taken since then
        (which it would dead-letter if the user failed), for users whose taken events are all settled.
        Returns the number of users stored."""
        return self._store_changed(lambda f: self._held.__setitem__(f.key, f), keys)

    def _store_changed(
        self, write: Callable[[Flushed], None] | None, only: Iterable[bytes] | None = None
    ) -> int:
        cache, store = self._cache, self.store
        n = 0
        if only is None:
            dirty, records = self._dirty, self._records - self._dirty
            self._records = set()
        else:
            wanted = set(only)
            dirty, records = self._dirty & wanted, (self._records & wanted) - self._dirty
            self._records -= wanted
        for keys, core_changed in ((dirty, True), (records, False)):
            for key in keys:
                live = cache.get(key)
                if live is None:
                    continue
                record = live.record
                if core_changed and live.core is not None:
                    record.core = encode_state(live.core, self.state_format)
                value = encode_record(record, self.state_format)
                if self.max_value_bytes is not None and len(value) > self.max_value_bytes:
                    value = self._fit(live, value)
                store[key] = value
                if write is not None:
                    write(Flushed(key, record.partition, value))
                n += 1
        if only is None:
            self._dirty.clear()
        else:
            self._dirty -= dirty
        return n

    def _fit(self, live: LiveUser, value: bytes) -> bytes:
        """Shrink ``live`` until its value fits ``max_value_bytes``: forget its unconfirmed output (still
        sent; only a crash before its acknowledgement loses it), halve its facts (the oldest go, see
        ``Sessionizer.shed``) while there are some, then halve the agents it remembers, then start its
        core afresh (its sessions published so far stay published). Returns the value to write."""
        limit = self.max_value_bytes
        assert limit is not None
        record = live.record
        before, facts, reset = len(value), 0, False
        while len(value) > limit:
            core = live.core
            if record.unsent:  # first what only a crash before the output's acknowledgement would need
                record.unsent = []
                value = encode_record(record, self.state_format)
                continue
            dropped = self._shed(core, len(core.ts) // 2) if core is not None and self._shed else 0
            if dropped:
                facts += dropped
            elif len(record.agents) > 1:
                fleet.keep_latest(record.agents, len(record.agents) // 2)
            elif core is not None:
                live.core, reset = None, True
            else:
                self.oversized += 1
                log.error("user state larger than state_max_bytes even when emptied; written as it is",
                          extra={"kv": {"bytes": len(value), "limit": limit}})
                return value
            record.core = encode_state(live.core, self.state_format) if live.core is not None else b""
            value = encode_record(record, self.state_format)
        self.shed_users += 1
        log.warning("user state over state_max_bytes: its oldest facts were dropped to fit", extra={"kv": {
            "bytes_before": before, "bytes_after": len(value), "facts_dropped": facts,
            "core_reset": reset}})
        return value

    def forget(self, key: bytes) -> None:
        """Drop ``key`` from the cache without writing it (the next :meth:`get` reads the store)."""
        self._cache.pop(key, None)
        self._dirty.discard(key)
        self._records.discard(key)

    def drop_partitions(self, partitions: Container[int]) -> int:
        """Forget the cached users of ``partitions`` (changed or not); returns how many."""
        doomed = [k for k, live in self._cache.items() if live.record.partition in partitions]
        for key in [k for k, f in self._held.items() if f.partition in partitions]:
            del self._held[key]  # its new owner may have written a newer value since
        for key in doomed:
            del self._cache[key]
            self._dirty.discard(key)
            self._records.discard(key)
        return len(doomed)

    def clear(self) -> None:
        self._cache.clear()
        self._dirty.clear()
        self._records.clear()
        self._held.clear()

    def users(self) -> Iterator[tuple[bytes, LiveUser | None, bytes | None]]:
        """Every user, cached or stored: ``(key, live or None, stored bytes or None)``; a cached user is
        given decoded (its stored bytes may be stale), any other one as stored bytes."""
        cache = self._cache
        for key, live in list(cache.items()):  # the caller may put() while iterating
            yield key, live, None
        for key, raw in list(self.store.items()):
            if key not in cache:
                yield key, None, raw
