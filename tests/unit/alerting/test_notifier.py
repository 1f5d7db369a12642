"""Grouping, silences, inhibition and restarts, driven by a manual clock over a real Redis."""

from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from fedmesh.services.alerting.alert_store import AlertStore
from fedmesh.services.alerting.batcher import IngestBatcher
from fedmesh.services.alerting.drafts import Drafter
from fedmesh.services.alerting.expiry import Expiry
from fedmesh.services.alerting.intake import Intake
from fedmesh.services.alerting.matchers import parse_matcher
from fedmesh.services.alerting.metrics import AlertingMetrics
from fedmesh.services.alerting.model import AlertState, Event
from fedmesh.services.alerting.notification import Notification
from fedmesh.services.alerting.notifier import Notifier
from fedmesh.services.alerting.outbox import Outbox
from fedmesh.services.alerting.rulebook import RuleBook
from fedmesh.services.alerting.silences import SilenceStore

WAIT, INTERVAL, HOUR = 1_000, 10_000, 3_600_000
T0 = 1_700_000_000_000


class ManualClock:
    """A clock that moves only when told."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        self.now_ms += ms
        return self.now_ms


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class Service:
    """The domain pieces one alerting process wires, minus the background loops."""

    def __init__(self, redis: aioredis.Redis, rulebook: RuleBook, clock: ManualClock) -> None:
        self.alerts = AlertStore(redis)
        self.silences = SilenceStore(redis)
        self.outbox = Outbox(redis)
        self.woken: list[str] = []
        self.notifier = Notifier(
            redis, rulebook, self.alerts, self.silences, ["log"], on_queued=self.woken.append
        )
        self.intake = Intake(
            Drafter(rulebook),
            IngestBatcher(self.alerts, clock),
            clock,
            AlertingMetrics(),
            on_change=lambda: None,
        )
        self.expiry = Expiry(self.alerts, self.silences, retention_ms=HOUR)
        self.clock = clock

    async def stale(self, node: str, region: str = "r1", *, resolve: bool = False) -> str:
        result = await self.intake.emit(
            Event("node_stale", "coordinator", {"node": node, "region": region}, resolve=resolve)
        )
        return result.fingerprint

    async def flush(self) -> list[Notification]:
        return await self.notifier.flush_due(self.clock())


def sent(notifications: list[Notification]) -> list[list[tuple[str, str]]]:
    return [[(a.labels["node"], a.status.value) for a in n.alerts] for n in notifications]


async def test_group_wait_then_one_notification_per_group_interval(
    redis_client: aioredis.Redis, rulebook: RuleBook, clock: ManualClock
) -> None:
    svc = Service(redis_client, rulebook, clock)
    await svc.stale("n1")
    clock.advance(WAIT - 1)
    before_wait = await svc.flush()
    clock.advance(1)
    first = await svc.flush()
    for node in ("n2", "n3", "n4"):
        clock.advance(100)
        await svc.stale(node)
    early = await svc.flush()
    clock.advance(INTERVAL - 300)
    second = await svc.flush()
    clock.advance(INTERVAL)
    quiet = await svc.flush()

    assert before_wait == []
    assert sent(first) == [[("n1", "firing")]]
    assert first[0].receiver == "log"
    assert first[0].group_key == 'root:{alertname="NodeStale",region="r1"}'
    assert first[0].group_labels == {"alertname": "NodeStale", "region": "r1"}
    assert early == []
    assert sorted(sent(second)[0]) == [(n, "firing") for n in ("n1", "n2", "n3", "n4")]
    assert quiet == []
    assert svc.woken == ["log", "log"]
    assert (await svc.outbox.counters("log")).queued == 2
    head = await svc.outbox.head("log")
    assert head is not None
    assert head.notification == first[0]


async def test_a_storm_is_one_alert_in_one_notification(
    redis_client: aioredis.Redis, rulebook: RuleBook, clock: ManualClock
) -> None:
    svc = Service(redis_client, rulebook, clock)
    for _ in range(200):
        await svc.stale("n1")
    clock.advance(WAIT)

    notifications = await svc.flush()

    assert sent(notifications) == [[("n1", "firing")]]
    assert notifications[0].alerts[0].count == 200


async def test_repeat_interval_resends_and_resolution_is_notified_once(
    redis_client: aioredis.Redis, rulebook: RuleBook, clock: ManualClock
) -> None:
    svc = Service(redis_client, rulebook, clock)
    await svc.stale("n1")
    await svc.stale("n2")
    clock.advance(WAIT)
    await svc.flush()
    clock.advance(HOUR)
    for _ in range(HOUR // 50_000):  # keep them firing across the hour
        await svc.stale("n1")
        await svc.stale("n2")
    repeat = await svc.flush()
    await svc.stale("n2", resolve=True)
    clock.advance(INTERVAL)
    resolution = await svc.flush()
    clock.advance(INTERVAL)
    after = await svc.flush()

    assert sorted(sent(repeat)[0]) == [("n1", "firing"), ("n2", "firing")]
    assert sorted(sent(resolution)[0]) == [("n1", "firing"), ("n2", "resolved")]
    assert after == []
    assert await svc.notifier.group_count() == 1


async def test_a_group_whose_alerts_all_resolved_says_so_and_disappears(
    redis_client: aioredis.Redis, rulebook: RuleBook, clock: ManualClock
) -> None:
    svc = Service(redis_client, rulebook, clock)
    await svc.stale("n1")
    clock.advance(WAIT)
    await svc.flush()
    clock.advance(60_000)  # node_stale's resolve_timeout
    await svc.expiry.sweep(clock())
    clock.advance(INTERVAL)

    resolution = await svc.flush()

    assert sent(resolution) == [[("n1", "resolved")]]
    assert resolution[0].alerts[0].ends_unix_ms == T0 + 60_000  # last event + resolve_timeout
    assert await svc.notifier.group_count() == 0
    assert await svc.notifier.next_due_ms() is None


async def test_a_silence_suppresses_and_its_expiry_restores(
    redis_client: aioredis.Redis, rulebook: RuleBook, clock: ManualClock
) -> None:
    svc = Service(redis_client, rulebook, clock)
    silence = await svc.silences.create(
        [parse_matcher('node="n1"')], 3600, "oncall", "reboot", clock()
    )
    await svc.stale("n1")
    await svc.stale("n2", region="r2")
    clock.advance(WAIT)
    muted = await svc.flush()
    await svc.silences.expire(silence.id, clock())
    clock.advance(INTERVAL)
    restored = await svc.flush()

    assert sent(muted) == [[("n2", "firing")]]
    assert sent(restored) == [[("n1", "firing")]]


async def test_a_partition_inhibits_stale_nodes_of_its_region(
    redis_client: aioredis.Redis, rulebook: RuleBook, clock: ManualClock
) -> None:
    svc = Service(redis_client, rulebook, clock)
    partition = await svc.intake.emit(Event("mesh_partition", "mesh", {"region": "r1"}))
    await svc.stale("n1", region="r1")
    await svc.stale("n2", region="r2")
    clock.advance(WAIT)
    inhibited = await svc.flush()
    await svc.intake.emit(Event("mesh_partition", "mesh", {"region": "r1"}, resolve=True))
    clock.advance(INTERVAL)
    released = await svc.flush()

    by_name = {n.alerts[0].name: n for n in inhibited}
    assert set(by_name) == {"MeshPartition", "NodeStale"}
    assert sent([by_name["NodeStale"]]) == [[("n2", "firing")]]
    partition_resolved = [n for n in released if n.alerts[0].name == "MeshPartition"]
    assert partition_resolved[0].alerts[0].fingerprint == partition.fingerprint
    assert partition_resolved[0].alerts[0].status is AlertState.RESOLVED
    assert [sent([n]) for n in released if n.alerts[0].name == "NodeStale"] == [
        [[("n1", "firing")]]
    ]


async def test_a_restart_keeps_alerts_groups_silences_and_what_was_notified(
    redis_client: aioredis.Redis, rulebook: RuleBook, clock: ManualClock
) -> None:
    before = Service(redis_client, rulebook, clock)
    await before.stale("n1")
    await before.silences.create([parse_matcher('node="n9"')], 3600, "oncall", "", clock())
    clock.advance(WAIT)
    await before.flush()
    await before.stale("n2")

    after = Service(redis_client, rulebook, clock)
    clock.advance(INTERVAL)
    resumed = await after.flush()
    clock.advance(INTERVAL)

    assert [a.labels["node"] for a in await after.alerts.all_of(AlertState.FIRING)] in (
        ["n1", "n2"],
        ["n2", "n1"],
    )
    assert len(await after.silences.active(clock())) == 1
    assert sorted(sent(resumed)[0]) == [("n1", "firing"), ("n2", "firing")]
    assert await after.flush() == []
    assert (await after.outbox.counters("log")).queued == 2


async def test_inhibition_sources_are_reindexed_for_the_rules_in_force(
    redis_client: aioredis.Redis, rulebook: RuleBook, clock: ManualClock
) -> None:
    without_rules = replace(rulebook, inhibit_rules=())
    before = Service(redis_client, without_rules, clock)
    partition = await before.intake.emit(Event("mesh_partition", "mesh", {"region": "r1"}))
    await before.stale("n1", region="r1")

    after = Service(redis_client, rulebook, clock)
    unindexed = await after.alerts.inhibition_sources()
    await after.alerts.index_inhibition_sources(lambda a: rulebook.can_inhibit(a.labels))
    clock.advance(WAIT)
    notifications = await after.flush()

    assert unindexed == []
    assert [a.fingerprint for a in await after.alerts.inhibition_sources()] == [
        partition.fingerprint
    ]
    assert {n.alerts[0].name for n in notifications} == {"MeshPartition"}


async def test_the_sweep_prunes_what_outlived_the_retention_at_most_once_a_minute(
    redis_client: aioredis.Redis, rulebook: RuleBook, clock: ManualClock
) -> None:
    svc = Service(redis_client, rulebook, clock)
    await svc.silences.create([parse_matcher("alertname=X")], 1, "oncall", "", clock())
    clock.advance(HOUR - 30_000)
    await svc.expiry.sweep(clock())  # prunes now; the silence is not old enough yet
    clock.advance(32_000)  # old enough, but the last prune was 32 s ago
    await svc.expiry.sweep(clock())
    kept = len(await svc.silences.all())
    clock.advance(30_000)
    await svc.expiry.sweep(clock())

    assert kept == 1
    assert await svc.silences.all() == []
