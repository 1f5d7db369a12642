"""Delivery from the durable outbox: backoff with jitter, exactly-once, give-up, sink alarm."""

import math
import random

import pytest
import redis.asyncio as aioredis

from fedmesh.services.alerting import keys
from fedmesh.services.alerting.alert_store import AlertStore
from fedmesh.services.alerting.batcher import IngestBatcher
from fedmesh.services.alerting.courier import Courier, RetryPolicy, SinkAlarm, backoff_s
from fedmesh.services.alerting.drafts import Drafter
from fedmesh.services.alerting.intake import Intake
from fedmesh.services.alerting.metrics import AlertingMetrics
from fedmesh.services.alerting.model import AlertState, Severity
from fedmesh.services.alerting.notification import Notification, NotifiedAlert
from fedmesh.services.alerting.outbox import Outbox
from fedmesh.services.alerting.rulebook import RuleBook
from fedmesh.services.alerting.sinks import DeliveryError

T0 = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now_ms = T0

    def __call__(self) -> int:
        return self.now_ms


class FlakySink:
    """A receiver that refuses its first ``failures`` deliveries."""

    name = "webhook"
    target = "test receiver"

    def __init__(self, failures: int, *, retryable: bool = True) -> None:
        self.failures = failures
        self.retryable = retryable
        self.attempts = 0
        self.received: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise DeliveryError("HTTP 503: down for maintenance", retryable=self.retryable)
        self.received.append(notification)


def notification(number: int, created_ms: int = T0) -> Notification:
    alert = NotifiedAlert(
        fingerprint=f"{number:016x}",
        name="NodeStale",
        status=AlertState.FIRING,
        labels={"alertname": "NodeStale", "node": f"n{number}"},
        annotations={},
        severity=Severity.MEDIUM,
        starts_unix_ms=created_ms,
        ends_unix_ms=0,
        count=1,
    )
    return Notification(f"id-{number}", "webhook", "g", {}, (alert,), created_ms, 3_600_000)


async def queue(redis: aioredis.Redis, *notifications: Notification) -> None:
    pipe = redis.pipeline(transaction=True)
    for item in notifications:
        Outbox.enqueue(pipe, item)
    await pipe.execute()


def courier(
    redis: aioredis.Redis, rulebook: RuleBook, sink: FlakySink, clock: Clock, **policy: float
) -> tuple[Courier, AlertStore]:
    alerts = AlertStore(redis)
    intake = Intake(
        Drafter(rulebook), IngestBatcher(alerts, clock), clock, AlertingMetrics(), lambda: None
    )
    settings = {"base_s": 1.0, "max_s": 8.0, "unhealthy_after": 3, **policy}
    return (
        Courier(
            sink,
            Outbox(redis),
            RetryPolicy(**settings),  # type: ignore[arg-type]
            clock,
            SinkAlarm(intake),
            AlertingMetrics(),
            random.Random(7),
        ),
        alerts,
    )


async def dead_letters(redis: aioredis.Redis) -> list[Notification]:
    raws = await redis.lrange(keys.dead_letter_key("webhook"), 0, -1)
    return [Notification.from_json(str(raw)) for raw in raws]


async def drain(courier: Courier, clock: Clock) -> list[float]:
    """Deliver until the outbox is empty, moving the clock over each wait; the waits."""
    waits = []
    while (delay := await courier.deliver_next()) is not None:
        if delay > 0:
            waits.append(delay)
            clock.now_ms += math.ceil(delay * 1000)
    return waits


@pytest.mark.parametrize("failures", range(1, 13))
def test_backoff_doubles_up_to_the_cap_with_half_of_it_jittered(failures: int) -> None:
    policy = RetryPolicy(base_s=1.0, max_s=300.0)
    ceiling = min(300.0, 2.0 ** (failures - 1))
    waits = [backoff_s(policy, failures, random.Random(seed)) for seed in range(20)]

    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert len(set(waits)) > 1


async def test_a_failing_sink_gets_every_notification_once_in_order_after_backoff(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    clock, sink = Clock(), FlakySink(failures=2)
    first, second = notification(1), notification(2)
    await queue(redis_client, first, second)
    delivery, _ = courier(redis_client, rulebook, sink, clock)

    waits = await drain(delivery, clock)
    counters = await Outbox(redis_client).counters("webhook")

    assert sink.received == [first, second]
    assert sink.attempts == 4
    assert 0.5 <= waits[0] <= 1.0
    assert 1.0 <= waits[1] <= 2.0
    assert (counters.delivered, counters.failed, counters.queued) == (2, 2, 0)
    assert (counters.consecutive_failures, counters.next_attempt_unix_ms) == (0, 0)
    assert counters.last_error == "HTTP 503: down for maintenance"


async def test_no_attempt_before_the_backoff_has_passed_even_after_a_restart(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    clock, sink = Clock(), FlakySink(failures=1)
    await queue(redis_client, notification(1))
    delivery, _ = courier(redis_client, rulebook, sink, clock)
    wait = await delivery.deliver_next()

    restarted, _ = courier(redis_client, rulebook, sink, clock)
    await restarted.resume()
    clock.now_ms += 100
    remaining = await restarted.deliver_next()

    assert wait is not None
    assert remaining == pytest.approx(wait - 0.1, abs=0.002)
    assert sink.attempts == 1


async def test_a_sink_that_keeps_failing_raises_its_own_alert_until_it_recovers(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    clock, sink = Clock(), FlakySink(failures=4)
    await queue(redis_client, notification(1))
    delivery, alerts = courier(redis_client, rulebook, sink, clock)

    for _ in range(3):
        delay = await delivery.deliver_next()
        assert delay is not None
        clock.now_ms += math.ceil(delay * 1000)
    raised = await alerts.all_of(AlertState.FIRING)
    await drain(delivery, clock)
    after = await alerts.all_of(AlertState.RESOLVED)

    assert [a.name for a in raised] == ["AlertSinkFailing"]
    assert raised[0].labels["sink"] == "webhook"
    assert raised[0].annotations["last_error"] == "HTTP 503: down for maintenance"
    assert raised[0].annotations["failures"] == "3"
    assert [a.fingerprint for a in after] == [raised[0].fingerprint]
    assert after[0].count == 2  # raised at the third and fourth failures


async def test_a_refused_payload_goes_to_the_dead_letters_and_delivery_moves_on(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    clock, sink = Clock(), FlakySink(failures=1, retryable=False)
    first, second = notification(1), notification(2)
    await queue(redis_client, first, second)
    delivery, _ = courier(redis_client, rulebook, sink, clock)

    waits = await drain(delivery, clock)
    outbox = Outbox(redis_client)
    counters = await outbox.counters("webhook")

    assert waits == []
    assert sink.received == [second]
    assert await dead_letters(redis_client) == [first]
    assert (counters.given_up, counters.delivered, counters.queued) == (1, 1, 0)


async def test_a_notification_older_than_the_retry_window_is_given_up(
    redis_client: aioredis.Redis, rulebook: RuleBook
) -> None:
    clock, sink = Clock(), FlakySink(failures=100)
    old = notification(1, created_ms=T0 - 11_000)
    await queue(redis_client, old)
    delivery, _ = courier(redis_client, rulebook, sink, clock, give_up_after_s=10.0)

    assert await delivery.deliver_next() == 0.0
    counters = await Outbox(redis_client).counters("webhook")
    assert await dead_letters(redis_client) == [old]
    assert counters.last_error.startswith("gave up after 11 s: HTTP 503")
    assert await delivery.deliver_next() is None
