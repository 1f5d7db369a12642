import asyncio

import pytest
import redis.asyncio as aioredis

from fedmesh.errors import FailedPrecondition, NotFound
from fedmesh.services.alerting.alert_store import AlertStore
from fedmesh.services.alerting.batcher import IngestBatcher
from fedmesh.services.alerting.drafts import Drafter
from fedmesh.services.alerting.model import AlertState, Event
from fedmesh.services.alerting.rulebook import RuleBook

T0 = 1_700_000_000_000
MINUTE = 60_000


def stale(node: str = "n1", *, resolve: bool = False, reason: str = "") -> Event:
    return Event(
        "node_stale",
        "coordinator",
        labels={"node": node, "region": "r1"},
        annotations={"reason": reason} if reason else {},
        resolve=resolve,
    )


async def test_a_storm_of_identical_events_is_one_alert_with_its_count(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store, drafter = AlertStore(redis_client), Drafter(rulebook)
    draft = drafter.from_event(stale(), T0)

    results = []
    for batch in range(10):
        results += await store.ingest_many([draft] * 1000, T0 + batch)

    alerts = await store.all_of(AlertState.FIRING)
    assert len(alerts) == 1
    assert alerts[0].count == 10_000
    assert alerts[0].fingerprint == draft.fingerprint
    assert [r.changed for r in results].count(True) == 1
    assert results[-1].count == 10_000
    assert (await store.stats())["events_received"] == 10_000


async def test_refire_updates_the_alert_and_its_deadline(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store, drafter = AlertStore(redis_client), Drafter(rulebook)
    await store.ingest(drafter.from_event(stale(reason="first"), T0), T0)
    again = await store.ingest(drafter.from_event(stale(reason="second"), T0 + 5), T0 + 5)

    alert = await store.get(again.fingerprint)
    assert alert is not None
    assert (again.state, again.count, again.changed) == (AlertState.FIRING, 2, False)
    assert alert.starts_unix_ms == T0
    assert alert.updated_unix_ms == T0 + 5
    assert alert.annotations["reason"] == "second"
    assert await store.next_expiry_ms() == T0 + 5 + MINUTE


async def test_explicit_resolve_ends_the_alert_and_a_new_fire_starts_afresh(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store, drafter = AlertStore(redis_client), Drafter(rulebook)
    fired = await store.ingest(drafter.from_event(stale(), T0), T0)
    await store.acknowledge(fired.fingerprint, "oncall", T0 + 1)
    resolved = await store.ingest(drafter.from_event(stale(resolve=True), T0 + 10), T0 + 10)
    ended = await store.get(fired.fingerprint)
    refired = await store.ingest(drafter.from_event(stale(), T0 + 20), T0 + 20)
    fresh = await store.get(fired.fingerprint)

    assert (resolved.state, resolved.changed) == (AlertState.RESOLVED, True)
    assert ended is not None
    assert (ended.state, ended.ends_unix_ms) == (AlertState.RESOLVED, T0 + 10)
    assert (refired.count, refired.changed) == (1, True)
    assert fresh is not None
    assert (fresh.state, fresh.starts_unix_ms, fresh.acknowledged_by) == (
        AlertState.FIRING,
        T0 + 20,
        "",
    )
    assert await store.count(AlertState.RESOLVED) == 0


async def test_resolving_an_unknown_alert_changes_nothing(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store = AlertStore(redis_client)
    result = await store.ingest(Drafter(rulebook).from_event(stale(resolve=True), T0), T0)

    assert (result.state, result.count, result.changed) == (None, 0, False)
    assert await store.count(AlertState.FIRING) == 0
    assert await store.count(AlertState.RESOLVED) == 0


async def test_an_alert_not_refired_within_its_timeout_resolves_at_the_timeout(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store, drafter = AlertStore(redis_client), Drafter(rulebook)
    fired = await store.ingest(drafter.from_event(stale(), T0), T0)

    assert await store.expire(T0 + MINUTE - 1) == 0
    assert await store.expire(T0 + MINUTE + 500) == 1
    alert = await store.get(fired.fingerprint)
    assert alert is not None
    assert (alert.state, alert.ends_unix_ms) == (AlertState.RESOLVED, T0 + MINUTE)


async def test_new_alerts_over_the_rate_limit_are_refused_but_refires_are_not(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store, drafter = AlertStore(redis_client), Drafter(rulebook)

    def partition(region: str) -> Event:
        return Event("mesh_partition", "mesh", labels={"region": region})

    first = await store.ingest(drafter.from_event(partition("r1"), T0), T0)
    await store.ingest(drafter.from_event(partition("r2"), T0), T0)
    third = await store.ingest(drafter.from_event(partition("r3"), T0), T0)
    refire = await store.ingest(drafter.from_event(partition("r1"), T0), T0)
    refused_alert = await store.get(third.fingerprint)
    next_minute = await store.ingest(drafter.from_event(partition("r3"), T0 + MINUTE), T0 + MINUTE)

    assert third.rate_limited
    assert third.state is None
    assert refused_alert is None
    assert (refire.count, refire.rate_limited) == (2, False)
    assert first.fingerprint == refire.fingerprint
    assert next_minute.state is AlertState.FIRING
    assert (await store.stats())["rate_limited"] == 1


async def test_acknowledge_needs_a_firing_alert(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store, drafter = AlertStore(redis_client), Drafter(rulebook)
    fired = await store.ingest(drafter.from_event(stale(), T0), T0)

    acked = await store.acknowledge(fired.fingerprint, "oncall", T0 + 7)
    await store.ingest(drafter.from_event(stale(resolve=True), T0 + 8), T0 + 8)

    assert (acked.acknowledged_by, acked.acknowledged_unix_ms) == ("oncall", T0 + 7)
    with pytest.raises(NotFound, match="no alert has fingerprint '0000000000000000'"):
        await store.acknowledge("0000000000000000", "oncall", T0)
    with pytest.raises(FailedPrecondition, match="is resolved; only a firing alert"):
        await store.acknowledge(fired.fingerprint, "oncall", T0 + 9)


async def test_prune_keeps_resolved_alerts_still_owed_to_their_group(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store, drafter = AlertStore(redis_client), Drafter(rulebook)
    draft = drafter.from_event(stale(), T0)
    await store.ingest(draft, T0)
    await store.ingest(drafter.from_event(stale(resolve=True), T0 + 1), T0 + 1)

    assert await store.prune(T0 + 10) == 0
    await redis_client.delete(f"fm:{{alerting}}:group:{draft.group_key}:alerts")
    assert await store.prune(T0 + 10) == 1
    assert await store.get(draft.fingerprint) is None


async def test_concurrent_calls_share_round_trips_and_count_every_event(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store = AlertStore(redis_client)
    batcher = IngestBatcher(store, lambda: T0)
    draft = Drafter(rulebook).from_event(stale(), T0)

    results = await asyncio.gather(*(batcher.ingest([draft]) for _ in range(300)))

    counts = sorted(r[0].count for r in results)
    assert counts == list(range(1, 301))
    assert sum(r[0].changed for r in results) == 1
    alert = await store.get(draft.fingerprint)
    assert alert is not None
    assert alert.count == 300
    assert (await store.stats())["events_received"] == 300


async def test_a_run_mixing_actions_keeps_their_order(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store, drafter = AlertStore(redis_client), Drafter(rulebook)
    fire, resolve = drafter.from_event(stale(), T0), drafter.from_event(stale(resolve=True), T0)

    results = await store.ingest_many([fire, fire, resolve, resolve, fire], T0, [True] * 5)

    assert [(r.state, r.count, r.changed) for r in results] == [
        (AlertState.FIRING, 1, True),
        (AlertState.FIRING, 2, False),
        (AlertState.RESOLVED, 2, True),
        (AlertState.RESOLVED, 2, False),
        (AlertState.FIRING, 1, True),
    ]
    assert (await store.stats())["events_received"] == 5


async def test_uncounted_drafts_are_not_received_events(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    store, drafter = AlertStore(redis_client), Drafter(rulebook)
    drafts = [drafter.from_event(stale(node), T0) for node in ("n1", "n2", "n3")]

    await store.ingest_many(drafts, T0, [True, False, False])

    assert await store.count(AlertState.FIRING) == 3
    assert (await store.stats())["events_received"] == 1
