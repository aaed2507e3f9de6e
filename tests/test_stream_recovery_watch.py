"""The worker's watch over its table recovery (``stream.recovery.RecoveryWatch``, pure; the clock is given).
A recovery whose changelog records never come would keep a worker assigned and idle for ever; the watch
tells it to exit so that it is restarted, and never says so of a recovery that keeps reading."""

from __future__ import annotations

from stream.recovery import RecoveryWatch
from stream.settings import load_settings


def test_a_recovery_that_reads_nothing_for_the_stall_time_is_stalled() -> None:
    watch = RecoveryWatch(stall_s=120)
    assert not watch.stalled(1000.0, recovering=True, progress=40)
    assert not watch.stalled(1119.9, recovering=True, progress=40)
    assert round(watch.stalled_for(1119.9), 1) == 119.9
    assert watch.stalled(1120.0, recovering=True, progress=40)


def test_a_long_recovery_that_keeps_reading_is_never_stalled() -> None:
    watch = RecoveryWatch(stall_s=120)
    for minute in range(60):  # an hour of recovery, one record read a minute
        assert not watch.stalled(60.0 * minute, recovering=True, progress=minute)


def test_a_rebalance_storm_is_not_a_stall() -> None:
    watch = RecoveryWatch(stall_s=120)
    for generation in range(1, 40):  # a rebalance every 60 s for 39 minutes, nothing read meanwhile
        assert not watch.stalled(60.0 * generation, recovering=True, progress=5, generation=generation)
    assert not watch.stalled(60.0 * 39 + 119, recovering=True, progress=5, generation=39)
    assert watch.stalled(60.0 * 39 + 120, recovering=True, progress=5, generation=39)  # then one stays


def test_each_recovery_counts_afresh_and_none_is_watched_when_off() -> None:
    watch = RecoveryWatch(stall_s=120)
    assert not watch.stalled(0.0, recovering=True, progress=7)
    assert not watch.stalled(100.0, recovering=False, progress=7)  # recovered (or nothing left to read)
    assert watch.stalled_for(100.0) == 0.0
    assert not watch.stalled(200.0, recovering=True, progress=7)  # a new recovery, same offsets so far
    assert not watch.stalled(319.0, recovering=True, progress=7)
    assert watch.stalled(320.0, recovering=True, progress=7)
    off = RecoveryWatch(stall_s=0)
    assert not off.stalled(0.0, recovering=True, progress=1)
    assert not off.stalled(1e9, recovering=True, progress=1)


def test_the_stall_time_is_a_setting() -> None:
    assert load_settings([], env={})[0].recovery_stall_s == 120.0
    assert load_settings([], env={"DESKTRACE_RECOVERY_STALL_S": "30"})[0].recovery_stall_s == 30.0
    assert load_settings(["--recovery-stall-s", "0"], env={})[0].recovery_stall_s == 0.0


async def test_the_watch_runner_ticks_from_its_start_and_survives_a_failing_tick() -> None:
    """``stream.periodic.Periodic`` (what runs the watch beside the Faust app: Faust's own timers start only
    after the first recovery) calls its tick at its interval from its start; a tick that raises is logged
    and the next one still comes; after the stop no tick comes."""
    import asyncio

    from stream.periodic import Periodic

    ticks: list[int] = []

    async def tick() -> None:
        ticks.append(len(ticks))
        if len(ticks) == 1:
            raise RuntimeError("the first tick fails")

    runner = Periodic(0.01, tick, name="test")
    await runner.start()
    for _ in range(200):
        if len(ticks) >= 3:
            break
        await asyncio.sleep(0.01)
    await runner.stop()
    assert len(ticks) >= 3
    stopped_at = len(ticks)
    await asyncio.sleep(0.05)
    assert len(ticks) == stopped_at
