"""A worker stopped between writing a user's state and the acknowledgement of its output, without a broker:
the processor and the decoded state as the worker's commit drives them (settle, write the state, send the
output, confirm), the sessions topic modelled as the upserts and retractions applied in order.

Before, the output went first and the state after it: a worker killed between the two left the older
state, which did not know the sessions just published; the next owner re-read the events in other batches
and could not retract the sessions those batches no longer gave (the kill test against the real broker
found such orphans)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from proto import events as E
from proto.codec import decode_session_message, encode_event
from proto.keys import event_user_key
from proto.sessions import Session
from proto.topics import Topics
from stream.core import Sessionizer, SessionizerConfig
from stream.live import LiveStates
from stream.metrics import StreamMetrics
from stream.processor import Incoming, Outgoing, Processor
from stream.state import decode_record

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOPICS = Topics("u.")
NOW = 1000.0  # wall clock far from the events: nothing closes by silence unless the test says so


def worker(store: dict[bytes, bytes]) -> tuple[Processor, LiveStates, CollectorRegistry]:
    """A worker (re)started on ``store``, the changelog as its last write left it."""
    registry = CollectorRegistry()
    proc = Processor(
        TOPICS, Sessionizer(SessionizerConfig(gap_s=300, presence_timeout_s=180, retention_s=86400)),
        StreamMetrics(registry), close_timeout_s=60, keep_unsent=True,
    )
    return proc, LiveStates(store), registry


def clicks(minutes: list[int], seq0: int, user: str = "ann") -> list[Incoming]:
    out = []
    for i, m in enumerate(minutes):
        e = E.HardwareMouseClick(agent_id=f"a-{user}", seq=seq0 + i, ts=T0 + timedelta(minutes=m),
                                 input="hardware", user=user, domain="corp", host="pc1")
        out.append(Incoming(TOPICS.hid, 0, seq0 + i, event_user_key(e).encode(), encode_event(e)))
    return out


#: Two active sessions (0-3 and 9-10), closed by the clicks at 20-21 (open at the end); then a click at
#: minute 6 arrives late in the stream and joins them: the second one is retracted, the first corrected.
FIRST = clicks([0, 1, 2, 3, 9, 10, 20, 21], seq0=1)
LATE = clicks([6], seq0=9)


class SessionsTopic:
    """The sessions topic as a reader sees it: upserts and retractions applied in the order produced."""

    def __init__(self) -> None:
        self.sessions: dict[str, tuple[str, datetime, datetime]] = {}

    def apply(self, messages: list[Outgoing]) -> None:
        for msg in messages:
            assert msg.topic == TOPICS.sessions
            s = decode_session_message(msg.value)
            if isinstance(s, Session):
                self.sessions[s.session_id] = (s.kind, s.start, s.end)
            else:
                self.sessions.pop(s.session_id, None)


def commit(proc: Processor, states: LiveStates, outbox: list[Outgoing], topic: SessionsTopic,
           store: dict[bytes, bytes], crash: str | None = None) -> dict[bytes, bytes]:
    """The worker's commit (``stream.app.StreamWorker._before_commit``): settle, write the state, send the
    output, confirm. ``crash``: where the worker is killed ("before_state", "after_state",
    "after_output"). Returns the changelog as the next owner recovers it."""
    outbox += proc.settle(states, NOW).messages
    if crash == "before_state":
        return dict(store)
    states.flush()
    if crash == "after_state":
        return dict(store)
    topic.apply(outbox)
    outbox.clear()
    if crash == "after_output":
        return dict(store)
    proc.confirm(states)
    return store


def reference() -> dict[str, tuple[str, datetime, datetime]]:
    """What one worker that never stops publishes for the same records."""
    proc, states, _ = worker({})
    topic = SessionsTopic()
    outbox = proc.handle_batch(FIRST, states, NOW, settle=False).messages
    commit(proc, states, outbox, topic, states.store)  # type: ignore[arg-type]
    outbox = proc.handle_batch(LATE, states, NOW, settle=False).messages
    commit(proc, states, outbox, topic, states.store)  # type: ignore[arg-type]
    return topic.sessions


def test_the_late_click_retracts_sessions_published_before() -> None:
    """The scenario is the one that needs a retraction (else the tests below could not fail)."""
    proc, states, _ = worker({})
    topic = SessionsTopic()
    outbox = proc.handle_batch(FIRST, states, NOW, settle=False).messages
    commit(proc, states, outbox, topic, states.store)  # type: ignore[arg-type]
    before = set(topic.sessions)
    final = reference()
    assert len(before) == 2 and len(final) == 1 and not set(final) >= before


@pytest.mark.parametrize("crash", ["before_state", "after_state", "after_output"])
def test_a_worker_killed_at_any_point_of_its_commit_leaves_the_sessions_of_one_that_was_not(
    crash: str,
) -> None:
    """Killed while committing the first records, its offsets not committed: the next owner re-reads them
    (in one batch with the late click) from the state the killed one left, and the topic ends as the
    reference's."""
    store: dict[bytes, bytes] = {}
    proc, states, _ = worker(store)
    topic = SessionsTopic()
    outbox = proc.handle_batch(FIRST, states, NOW, settle=False).messages
    recovered = commit(proc, states, outbox, topic, store, crash=crash)

    proc, states, registry = worker(recovered)
    outbox = proc.handle_batch(FIRST + LATE, states, NOW, settle=False).messages
    commit(proc, states, outbox, topic, recovered)
    assert topic.sessions == reference()
    resent = registry.get_sample_value("desktrace_stream_resent_total")
    # Only a state written before its output was confirmed holds output to send again (2 sessions).
    assert resent == (2 if crash in ("after_state", "after_output") else 0)
    # Confirmed and written at the next commit: a later owner has nothing to send again.
    states.flush()
    assert all(decode_record(v).unsent == [] for v in recovered.values())


def test_the_output_of_the_old_order_leaves_orphans() -> None:
    """The order this replaces (output, then state), for the record: killed between them, the next owner's
    state does not know the two sessions, and the one the late click retracts stays published for ever."""
    proc, states, _ = worker({})
    topic = SessionsTopic()
    outbox = proc.handle_batch(FIRST, states, NOW, settle=False).messages
    outbox += proc.settle(states, NOW).messages
    topic.apply(outbox)  # output first; killed before the state write: the next owner starts empty
    proc, states, _ = worker({})
    outbox = proc.handle_batch(FIRST + LATE, states, NOW, settle=False).messages
    commit(proc, states, outbox, topic, {})
    assert len(topic.sessions) == len(reference()) + 1


def test_the_silence_scan_sends_again_what_a_recovered_user_holds_and_then_forgets_it() -> None:
    """A user with no new events after the restart: the scan (which reads every user of the owned
    partitions) sends its unconfirmed output, and the confirmation empties it."""
    store: dict[bytes, bytes] = {}
    proc, states, _ = worker(store)
    lost = SessionsTopic()
    outbox = proc.handle_batch(FIRST, states, NOW, settle=False).messages
    recovered = commit(proc, states, outbox, lost, store, crash="after_state")
    assert lost.sessions == {}  # the output never reached the topic
    assert len(decode_record(recovered[next(iter(recovered))]).unsent) == 2

    proc, states, registry = worker(recovered)
    topic = SessionsTopic()
    out = proc.scan(states, {0}, NOW)  # the user's last event is minutes old: it is also closed
    topic.apply(out.messages)
    resent = [decode_session_message(m.value) for m in out.messages[:2]]
    assert all(isinstance(s, Session) for s in resent)  # what was lost, first
    assert registry.get_sample_value("desktrace_stream_resent_total") == 2
    # a second scan before the commit sends nothing again
    assert proc.scan(states, {0}, NOW + 1).messages == []
    proc.confirm(states)
    states.flush()
    assert decode_record(recovered[next(iter(recovered))]).unsent == []
    assert set(topic.sessions) >= {s.session_id for s in resent}  # type: ignore[union-attr]


def test_a_processor_that_does_not_keep_output_writes_no_unsent() -> None:
    """The table-lookup callers (offline replays, tests) confirm nothing: their records hold no output."""
    registry = CollectorRegistry()
    proc = Processor(
        TOPICS, Sessionizer(SessionizerConfig(gap_s=300, presence_timeout_s=180, retention_s=86400)),
        StreamMetrics(registry), close_timeout_s=60,
    )
    store: dict[bytes, bytes] = {}
    result = proc.handle_batch(FIRST, store.get, NOW)
    assert result.messages and all(decode_record(w.value).unsent == [] for w in result.writes)
