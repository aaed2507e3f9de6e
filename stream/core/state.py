"""What the sessionizer keeps for one user, and its compact msgpack form.

Facts, not events: every accepted event is one ``(ts, code)`` pair in two aligned arrays sorted by time,
``code = flags | host_index << 6 | tz_index << 20`` (hosts and time zones interned per user). A heartbeat's
``last_input_ts`` is one more evidence point in ``pts``; legacy ``StateChange`` reports are also kept in
``sc`` as ``ts * 2 + working``. On the wire, the sorted time lists are delta-encoded so that a heartbeat
every 60 s costs three bytes; format 4 keeps that for the old facts' sealed chunks and writes the recent
part's columns as raw 64-bit numbers (a copy of their memory: less CPU, more bytes).

The per-fact sequences are compact columns (``array('q')``: 8 bytes per value instead of a pointer to a
28-byte Python int), so a decoded user-day takes about a third of the memory of lists.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Sequence
from itertools import accumulate
from operator import sub
from typing import Any, Final

import msgspec

# ---- fact flags -------------------------------------------------------------------------------------------
HW = 1  #: hardware input: evidence [ts, ts]
BRK = 2  #: Lock, Logoff, Suspend, AgentStop
PEND = 4  #: Logoff, Suspend, AgentStop: ends presence
LOCK = 8  #: Lock
SCW = 16  #: StateChange(working)
SCS = 32  #: StateChange(stopped)
FLAG_MASK = 63
HOST_SHIFT = 6
HOST_MASK = (1 << 14) - 1
TZ_SHIFT = 20

NO_TIME = -(1 << 62)  #: "never" for the time fields below
PUB_UNBOUNDED = 1 << 62  #: ``UserState.pub_bound`` when no bound is known (above every key)

Column = array  #: ``array('q')``: one sorted column of 64-bit integers


def column(values: Sequence[int] = ()) -> array[int]:
    """A new column holding ``values``."""
    return array("q", values)


class UserState(msgspec.Struct, kw_only=True):
    """Everything the core keeps for one user; bounded by the retention horizon.

    ``ts``/``code``: the facts, sorted by ``(ts, code)``, one per distinct ``(ts, code)``; ``pts``: sorted
    distinct heartbeat ``last_input_ts`` points; ``sc``: sorted ``ts * 2 + (state == working)``;
    ``comps``: flat ``[start, end, ...]`` of the presence periods computed last (merged where they
    overlap); ``cks``: flat checkpoints (``compute.Checkpoint``) to resume from; ``pub``: the published
    sessions, ``start * 2 + (kind == inactive)`` -> ``[end, fingerprint]``;
    ``seen``: per agent, flat ``[lo, hi, max_ts, ...]`` seq ranges already applied; ``floor``: facts before
    it were pruned; ``open_from``: start of the earliest computed session not published as it is now.
    """

    latest: int = NO_TIME
    latest_eb: int = NO_TIME
    floor: int = NO_TIME
    open_from: int | None = None
    n_open: int = 0
    hosts: list[str] = msgspec.field(default_factory=list)
    tzs: list[str] = msgspec.field(default_factory=list)
    ts: array[int] = msgspec.field(default_factory=column)
    code: array[int] = msgspec.field(default_factory=column)
    pts: array[int] = msgspec.field(default_factory=column)
    sc: array[int] = msgspec.field(default_factory=column)
    comps: array[int] = msgspec.field(default_factory=column)
    cks: array[int] = msgspec.field(default_factory=column)
    pub: dict[int, list[int]] = msgspec.field(default_factory=dict)
    seen: dict[str, list[int]] = msgspec.field(default_factory=dict)
    # Not state: what the encoder may reuse (see encode_state). ``edit_ts``/``edit_pts``: the lowest index
    # of ``ts``/``code`` and of ``pts`` changed other than by appending since ``cache`` was made (0: all).
    edit_ts: int = 0
    edit_pts: int = 0
    cache: Any = None
    # Not state either: a bound at or above every key of ``pub`` (``PUB_UNBOUNDED``: not known), so that a
    # computation need not read every published key to learn that none starts in its region (reading them
    # cost a sixth of a user's update: a user's keys are scattered in memory).
    pub_bound: int = PUB_UNBOUNDED
    # Not state: ``pub``'s msgpack as the encoder last wrote it, or None when ``pub`` changed since (every
    # change of ``pub`` sets it to None). Most updates publish nothing closed, and encoding a user's
    # published keys, scattered in memory, took about a third of a format-2 write and half of a format-4
    # one (``bench/bench_user_update.py``): the encoder reuses these bytes instead.
    pub_raw: bytes | None = None
    # Not state: the open chain as the latest computation left it, when it is the first session not
    # published and the last chain of the last presence period: ``(start, end, period end)``; or, when the
    # only session not published is the inactive rest of the last period, ``(its start, NO_TIME, period
    # end)``; None when neither or not known (a decoded state, a cut). Lets a settle whose new facts only
    # extend that chain, or only lengthen that inactive rest, skip the computation (``Sessionizer._extend``).
    tip: tuple[int, int, int] | None = None


class _Wire(msgspec.Struct, array_like=True):
    """Version 1 (written before the chunked version 2; now only read). A frozen wire format: its field
    list is declared again, not shared with :class:`_Light`, so that neither can change the other."""

    v: int
    latest: int
    latest_eb: int
    floor: int
    open_from: int | None
    n_open: int
    hosts: list[str]
    tzs: list[str]
    ts: list[int]
    code: list[int]
    pts: list[int]
    sc: list[int]
    comps: list[int]
    cks: list[int]
    pub: dict[int, list[int]]
    seen: dict[str, list[int]]


_WIRE_VERSION = 1
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)


class _Light(msgspec.Struct, array_like=True):
    """Version 2 without its sealed chunks: what changes at every update."""

    latest: int
    latest_eb: int
    floor: int
    open_from: int | None
    n_open: int
    hosts: list[str]
    tzs: list[str]
    ts: list[int]  #: the facts after the sealed chunks: times delta-encoded (the first one absolute)
    code: list[int]
    pts: list[int]  #: the points after the sealed chunks, delta-encoded likewise
    sc: list[int]
    comps: list[int]
    cks: list[int]
    pub: dict[int, list[int]]
    seen: dict[str, list[int]]


class _Columns(msgspec.Struct, array_like=True):
    """Version 4's light part: :class:`_Light` with every column as its raw bytes (64-bit little-endian
    integers, times absolute, not delta-encoded). Writing a column is then a copy of its memory instead of
    a list of Python ints, their deltas and a msgpack integer each; the values are larger (8 bytes per
    number instead of 1-9), and only the recent facts are in this part."""

    latest: int
    latest_eb: int
    floor: int
    open_from: int | None
    n_open: int
    hosts: list[str]
    tzs: list[str]
    ts: memoryview  #: the facts after the sealed chunks (decoded as a view of the value's bytes)
    code: memoryview
    pts: memoryview  #: the points after the sealed chunks
    sc: memoryview
    comps: memoryview
    cks: memoryview
    pub: dict[int, list[int]]
    seen: dict[str, list[int]]


class _WireV2(msgspec.Struct, array_like=True):
    """Version 2: ``[2, zlib(msgpack(_Light)), ts chunks, pts chunks]`` (the light part in stored zlib
    blocks since this release, see :data:`STORED`; any level reads the same); version 3 is the same with
    the light part's msgpack without zlib framing (``[3, msgpack(_Light), ...]``); version 4 has the
    light part as ``msgpack(_Columns)``, its columns as raw bytes (``[4, msgpack(_Columns), ...]``). A
    chunk (the same in all three) is the
    zlib-compressed msgpack of ``[delta-encoded times (the first absolute), codes]`` (``pts`` chunks: the
    times only) of a run of old facts; it is encoded once and its bytes reused by every later encoding
    while those facts are unchanged, so writing a user's state costs its recent part, not its whole
    retention horizon."""

    v: int
    light: bytes
    ts_chunks: list[bytes]
    pts_chunks: list[bytes]


_light_decoder: Final = msgspec.msgpack.Decoder(_Light)
_columns_decoder: Final = msgspec.msgpack.Decoder(_Columns)
_v2_decoder: Final = msgspec.msgpack.Decoder(_WireV2)
_chunk_decoder: Final = msgspec.msgpack.Decoder(list[list[int]])
#: Unsealed facts (or points) that make the encoder seal a chunk. Every write encodes and compresses the
#: unsealed part again: 256/64 against 512/128 cost 27% less per write of a 3-day user (136 against 184 us)
#: for values 12-15% larger (smaller chunks compress less well); chunk sizes are not part of the format.
SEAL_AT: Final = 256
KEEP_OPEN: Final = 64  #: most recent facts never sealed (late events land among them: about half an hour)


class _ChunkCache:
    """Sealed chunks of one column: ``ends[i]``: the index after chunk ``i``; ``blobs[i]``: its bytes. And the
    deltas of the unsealed tail as the last version 2 or 3 encoding wrote them (``tail``, for the facts
    from ``tail_from``; ``tail_from`` -1: none kept), which the next one extends instead of redoing: the
    deltas were most of a version 2 write's CPU (about 25 of 37 us for a one-day user), and a live update
    only appends a fact or two. Kept as a column (8 bytes a delta, 2-3 KB per user decoded)."""

    __slots__ = ("blobs", "ends", "tail", "tail_from")

    def __init__(self, ends: list[int], blobs: list[bytes]) -> None:
        self.ends = ends
        self.blobs = blobs
        self.tail_from = -1
        self.tail: array[int] = column()

    def tail_deltas(self, col: array[int], edit: int) -> list[int]:
        """``_delta(col[self.sealed:])``, reusing the deltas kept from the last call for the facts before
        ``edit`` (the lowest index changed other than by appending since then: those are unchanged)."""
        a = self.sealed
        tail = self.tail
        if self.tail_from != a or edit <= a or a + len(tail) > len(col):
            deltas = _delta(col[a:])
            self.tail_from, self.tail = a, column(deltas)
            return deltas
        del tail[edit - a :]  # (a fact's delta depends on it and the one before: those before ``edit`` stay)
        n = a + len(tail)
        if n < len(col):
            values = col[n - 1 :].tolist()
            tail.extend(map(sub, values[1:], values))
        return tail.tolist()

    def valid_up_to(self, edit: int) -> None:
        """Drop the chunks that hold index ``edit`` or later."""
        ends = self.ends
        k = len(ends)
        while k and ends[k - 1] > edit:
            k -= 1
        del ends[k:], self.blobs[k:]

    @property
    def sealed(self) -> int:
        return self.ends[-1] if self.ends else 0


def _seal(cache: _ChunkCache, cols: tuple[array[int], ...]) -> None:
    """Seal chunks of ``SEAL_AT - KEEP_OPEN`` or more facts while more than ``SEAL_AT`` are unsealed."""
    n = len(cols[0])
    while n - cache.sealed > SEAL_AT:
        lo = cache.sealed
        hi = n - KEEP_OPEN
        parts = [_delta(cols[0][lo:hi]), *(c[lo:hi].tolist() for c in cols[1:])]
        cache.blobs.append(zlib.compress(_encoder.encode(parts), 1))
        cache.ends.append(hi)


def _delta(xs: array[int]) -> list[int]:
    if not xs:
        return []
    values = xs.tolist()  # then map in C: about twice as fast as a generator over pairs
    return [values[0], *map(sub, values[1:], values)]


def _undelta(xs: list[int]) -> array[int]:
    return array("q", list(accumulate(xs)))


#: The state format versions :func:`encode_state` writes (:func:`decode_state` reads 1 to 4).
WRITE_VERSIONS: Final = (2, 3, 4)
_LITTLE: Final = sys.byteorder == "little"


def _raw(col: array[int], start: int = 0) -> memoryview:
    """The little-endian bytes of ``col[start:]`` (a view of its memory on a little-endian machine)."""
    if _LITTLE:
        return memoryview(col)[start:]
    copy = col[start:]
    copy.byteswap()
    return memoryview(copy)


def _unraw(data: memoryview) -> array[int]:
    """The column of :func:`_raw`'s bytes; ``ValueError`` when they are not whole 64-bit numbers."""
    if len(data) % 8:
        raise ValueError("not a sessionizer state: a column of partial numbers")
    col = array("q")
    col.frombytes(data)
    if not _LITTLE:
        col.byteswap()
    return col


#: zlib level of the parts of a version-2 value that every write encodes again (the light part here, the
#: record in ``stream.state``) up to :data:`STORE_UP_TO` bytes: 0, stored blocks. Any zlib reader (every
#: release that reads version 2) inflates them, and they cost about 5 us instead of 40-60 us at level 1,
#: which only halved 1-3 KB; sealed chunks, encoded once and reused, stay at level 1. Version 3 drops the
#: zlib framing too.
STORED: Final = 0
#: Larger parts (a user with thousands of legacy reports or of seq gaps in the horizon) are deflated at
#: level 1 as before: they shrink 2-100x, and an uncompressed one would bring the value nearer the
#: changelog's record limit (``stream.live``).
STORE_UP_TO: Final = 8192


def zlib_framed(data: bytes) -> bytes:
    """``data`` as a zlib stream: stored blocks up to :data:`STORE_UP_TO` bytes, else deflated (level 1)."""
    return zlib.compress(data, STORED if len(data) <= STORE_UP_TO else 1)


def _pub(state: UserState) -> Any:
    """``state.pub`` for an encoder: a ``msgspec.Raw`` of its msgpack, encoded once per change (see
    ``UserState.pub_raw``; msgspec writes a Raw's bytes as they are, so the value is the same)."""
    raw = state.pub_raw
    if raw is None:
        raw = state.pub_raw = _encoder.encode(state.pub)
    return msgspec.Raw(raw)


def encode_state(state: UserState, version: int = 2) -> bytes:
    """Compact bytes of ``state``: version 2, 3 or 4 (:class:`_WireV2`). Sealed chunks are reused from
    ``state.cache`` while ``state.edit_ts``/``edit_pts`` say their facts are unchanged, and new ones are
    sealed as the state grows; the cache is updated (it is not part of the state). Versions 3 and 4 cost
    less CPU and take more bytes; releases before them cannot read them."""
    if version not in WRITE_VERSIONS:
        raise ValueError(f"sessionizer state version {version} is not one of {WRITE_VERSIONS}")
    cache = state.cache
    if cache is None:
        cache = state.cache = (_ChunkCache([], []), _ChunkCache([], []))
    ts_cache, pts_cache = cache
    edit_ts, edit_pts = state.edit_ts, state.edit_pts
    ts_cache.valid_up_to(edit_ts)
    pts_cache.valid_up_to(edit_pts)
    _seal(ts_cache, (state.ts, state.code))
    _seal(pts_cache, (state.pts,))
    state.edit_ts, state.edit_pts = len(state.ts), len(state.pts)
    a, b = ts_cache.sealed, pts_cache.sealed
    if version == 4:
        ts_cache.tail_from = pts_cache.tail_from = -1  # (the edits since their deltas are not kept)
        # Views of the columns' memory; released at once, since an array that exports a view cannot grow.
        views = (_raw(state.ts, a), _raw(state.code, a), _raw(state.pts, b), _raw(state.sc),
                 _raw(state.comps), _raw(state.cks))
        try:
            light_bytes = _encoder.encode(_Columns(
                state.latest, state.latest_eb, state.floor, state.open_from, state.n_open, state.hosts,
                state.tzs, *views, _pub(state), state.seen,
            ))
        finally:
            for view in views:
                view.release()
        return _encoder.encode(_WireV2(4, light_bytes, list(ts_cache.blobs), list(pts_cache.blobs)))
    light = _Light(
        state.latest,
        state.latest_eb,
        state.floor,
        state.open_from,
        state.n_open,
        state.hosts,
        state.tzs,
        ts_cache.tail_deltas(state.ts, edit_ts),
        state.code[a:].tolist(),
        pts_cache.tail_deltas(state.pts, edit_pts),
        _delta(state.sc),
        state.comps.tolist(),
        state.cks.tolist(),
        _pub(state),
        state.seen,
    )
    light_bytes = _encoder.encode(light)
    if version == 2:
        light_bytes = zlib_framed(light_bytes)
    return _encoder.encode(_WireV2(version, light_bytes, list(ts_cache.blobs), list(pts_cache.blobs)))


def _join(chunks: list[list[int]], tail: array[int]) -> array[int]:
    """One time column from its chunks' delta lists (each chunk's first value absolute) and its tail."""
    out = array("q")
    for deltas in chunks:
        out.fromlist(list(accumulate(deltas)))  # (from a list: about twice as fast as extend)
    out.extend(tail)
    return out


def decode_state(data: bytes) -> UserState:
    """The inverse of :func:`encode_state` (versions 1 to 4); raises ``ValueError`` on bytes it did not
    write. The decoded state's chunks are its encoder cache."""
    try:
        if data[:1] == b"\x94":
            return _decode_v2(data)
        return _decode_v1(data)
    except OverflowError:  # an integer msgpack holds and a 64-bit column does not
        raise ValueError("not a sessionizer state: an integer out of the 64-bit range") from None


def _decode_v1(data: bytes) -> UserState:
    try:
        w = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a sessionizer state: {exc}") from None
    if w.v != _WIRE_VERSION:
        raise ValueError(f"sessionizer state version {w.v} is not {_WIRE_VERSION}")
    if len(w.ts) != len(w.code):
        raise ValueError("sessionizer state is inconsistent (facts)")
    return _state(w, _undelta(w.ts), array("q", w.code), _undelta(w.pts), _undelta(w.sc), array("q", w.comps),
                  array("q", w.cks))


def _decode_v2(data: bytes) -> UserState:
    try:
        w = _v2_decoder.decode(data)
        if w.v not in (2, 3, 4):
            raise ValueError(f"sessionizer state version {w.v} is not 2, 3 or 4")
        light: _Light | _Columns
        if w.v == 4:
            light = _columns_decoder.decode(w.light)
        else:
            light = _light_decoder.decode(zlib.decompress(w.light) if w.v == 2 else w.light)
        ts_parts = [_chunk_decoder.decode(zlib.decompress(b)) for b in w.ts_chunks]
        pts_parts = [_chunk_decoder.decode(zlib.decompress(b)) for b in w.pts_chunks]
    except (msgspec.DecodeError, zlib.error) as exc:
        raise ValueError(f"not a sessionizer state: {exc}") from None
    if any(len(p) != 2 or len(p[0]) != len(p[1]) for p in ts_parts) or any(len(p) != 1 for p in pts_parts):
        raise ValueError("sessionizer state is inconsistent (chunks)")
    if isinstance(light, _Columns):
        tails = [_unraw(light.ts), _unraw(light.code), _unraw(light.pts)]
        rest = (_unraw(light.sc), _unraw(light.comps), _unraw(light.cks))
    else:
        tails = [_undelta(light.ts), array("q", light.code), _undelta(light.pts)]
        rest = (_undelta(light.sc), array("q", light.comps), array("q", light.cks))
    ts = _join([p[0] for p in ts_parts], tails[0])
    code = array("q")
    for p in ts_parts:
        code.fromlist(p[1])
    code.extend(tails[1])
    if len(ts) != len(code):
        raise ValueError("sessionizer state is inconsistent (facts)")
    pts = _join([p[0] for p in pts_parts], tails[2])
    ts_ends = list(accumulate(len(p[0]) for p in ts_parts))
    pts_ends = list(accumulate(len(p[0]) for p in pts_parts))
    state = _state(light, ts, code, pts, *rest)
    state.edit_ts, state.edit_pts = len(ts), len(pts)
    state.cache = (_ChunkCache(ts_ends, list(w.ts_chunks)), _ChunkCache(pts_ends, list(w.pts_chunks)))
    return state


def _state(
    w: _Wire | _Light | _Columns,
    ts: array[int],
    code: array[int],
    pts: array[int],
    sc: array[int],
    comps: array[int],
    cks: array[int],
) -> UserState:
    """A :class:`UserState` of decoded wire fields and its columns."""
    return UserState(
        latest=w.latest,
        latest_eb=w.latest_eb,
        floor=w.floor,
        open_from=w.open_from,
        n_open=w.n_open,
        hosts=w.hosts,
        tzs=w.tzs,
        ts=ts,
        code=code,
        pts=pts,
        sc=sc,
        comps=comps,
        cks=cks,
        pub=w.pub,
        seen=w.seen,
    )
