from fedmesh.services.alerting.grouping import plan_flush
from fedmesh.services.alerting.model import Alert, AlertState, Mute, Severity

HOUR = 3_600_000


def alert(fp: str, state: AlertState = AlertState.FIRING) -> Alert:
    return Alert(
        fingerprint=fp,
        name="NodeStale",
        labels={"alertname": "NodeStale", "node": fp},
        annotations={},
        severity=Severity.MEDIUM,
        state=state,
        starts_unix_ms=0,
        ends_unix_ms=0,
        updated_unix_ms=0,
        count=1,
        group_key="g",
        source="test",
    )


SILENCED = Mute(silenced_by=("s1",))


def test_the_first_flush_notifies_every_unmuted_firing_alert() -> None:
    a, b = alert("a"), alert("b")
    plan = plan_flush([a, b], {}, set(), 0, 1_000, HOUR)

    assert plan.notify
    assert plan.firing == (a, b)
    assert plan.resolved == ()
    assert plan.notified == {"a", "b"}
    assert plan.leaving == frozenset()


def test_nothing_new_within_the_repeat_interval_sends_nothing() -> None:
    plan = plan_flush([alert("a")], {}, {"a"}, 1_000, 1_000 + HOUR - 1, HOUR)

    assert not plan.notify
    assert plan.firing == ()
    assert plan.notified == {"a"}


def test_the_repeat_interval_resends_what_still_fires() -> None:
    plan = plan_flush([alert("a")], {}, {"a"}, 1_000, 1_000 + HOUR, HOUR)

    assert plan.notify
    assert [a.fingerprint for a in plan.firing] == ["a"]


def test_a_new_alert_sends_the_whole_group() -> None:
    plan = plan_flush([alert("a"), alert("b")], {}, {"a"}, 1_000, 2_000, HOUR)

    assert plan.notify
    assert [a.fingerprint for a in plan.firing] == ["a", "b"]
    assert plan.notified == {"a", "b"}


def test_a_resolved_alert_that_was_notified_is_sent_once_and_leaves() -> None:
    plan = plan_flush(
        [alert("a"), alert("b", AlertState.RESOLVED)], {}, {"a", "b"}, 1_000, 2_000, HOUR
    )

    assert plan.notify
    assert [a.fingerprint for a in plan.firing] == ["a"]
    assert [a.fingerprint for a in plan.resolved] == ["b"]
    assert plan.leaving == {"b"}
    assert plan.notified == {"a"}


def test_a_resolved_alert_never_notified_leaves_silently() -> None:
    plan = plan_flush([alert("b", AlertState.RESOLVED)], {}, set(), 0, 2_000, HOUR)

    assert not plan.notify
    assert plan.leaving == {"b"}
    assert plan.notified == frozenset()


def test_muted_alerts_are_not_sent_and_their_unmuting_is_news() -> None:
    muted = plan_flush([alert("a")], {"a": SILENCED}, set(), 0, 1_000, HOUR)
    unmuted = plan_flush([alert("a")], {}, muted.notified, 0, 2_000, HOUR)

    assert not muted.notify
    assert muted.notified == frozenset()
    assert unmuted.notify
    assert [a.fingerprint for a in unmuted.firing] == ["a"]


def test_an_alert_muted_after_its_notification_is_still_owed_its_resolution() -> None:
    later = plan_flush([alert("a")], {"a": SILENCED}, {"a"}, 1_000, 2_000, HOUR)
    resolved = plan_flush([alert("a", AlertState.RESOLVED)], {}, later.notified, 1_000, 3_000, HOUR)

    assert not later.notify
    assert later.notified == {"a"}
    assert resolved.notify
    assert [a.fingerprint for a in resolved.resolved] == ["a"]


def test_a_fully_muted_group_does_not_repeat() -> None:
    plan = plan_flush([alert("a")], {"a": SILENCED}, {"a"}, 1_000, 1_000 + 2 * HOUR, HOUR)
    assert not plan.notify
