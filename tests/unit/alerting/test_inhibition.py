from fedmesh.services.alerting.inhibition import Inhibitor
from fedmesh.services.alerting.matchers import parse_matcher
from fedmesh.services.alerting.model import Alert, AlertState, Severity
from fedmesh.services.alerting.rulebook import InhibitRule


def alert(fp: str, state: AlertState = AlertState.FIRING, **labels: str) -> Alert:
    return Alert(
        fingerprint=fp,
        name=labels["alertname"],
        labels=labels,
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


PARTITION = InhibitRule(
    source=(parse_matcher('alertname="MeshPartition"'),),
    target=(parse_matcher('alertname=~"NodeStale|NodeAnomaly"'),),
    equal=("region",),
)
WORSE_BAND = InhibitRule(
    source=(parse_matcher('severity="critical"'),),
    target=(parse_matcher('severity=~"high|medium"'),),
    equal=("alertname", "node"),
)


def test_a_partition_inhibits_stale_nodes_of_its_region_only() -> None:
    partition = alert("p", alertname="MeshPartition", region="r1")
    stale_r1 = alert("s1", alertname="NodeStale", region="r1", node="n1")
    stale_r2 = alert("s2", alertname="NodeStale", region="r2", node="n2")
    banned_r1 = alert("b1", alertname="NodeBanned", region="r1", node="n1")
    inhibitor = Inhibitor([PARTITION], [partition, stale_r1, stale_r2, banned_r1])

    assert inhibitor.inhibited_by(stale_r1) == ("p",)
    assert inhibitor.inhibited_by(stale_r2) == ()
    assert inhibitor.inhibited_by(banned_r1) == ()
    assert inhibitor.inhibited_by(partition) == ()


def test_a_resolved_source_inhibits_nothing() -> None:
    partition = alert("p", AlertState.RESOLVED, alertname="MeshPartition", region="r1")
    stale = alert("s", alertname="NodeStale", region="r1")
    assert Inhibitor([PARTITION], [partition, stale]).inhibited_by(stale) == ()


def test_equal_labels_missing_on_both_sides_count_as_equal() -> None:
    partition = alert("p", alertname="MeshPartition")
    stale = alert("s", alertname="NodeStale")
    assert Inhibitor([PARTITION], [partition]).inhibited_by(stale) == ("p",)


def test_the_worse_band_hides_the_milder_one_of_the_same_node() -> None:
    critical = alert("c", alertname="NodeAnomaly", severity="critical", node="n1")
    medium = alert("m", alertname="NodeAnomaly", severity="medium", node="n1")
    other_node = alert("o", alertname="NodeAnomaly", severity="medium", node="n2")
    inhibitor = Inhibitor([WORSE_BAND], [critical, medium, other_node])

    assert inhibitor.inhibited_by(medium) == ("c",)
    assert inhibitor.inhibited_by(other_node) == ()
    assert inhibitor.inhibited_by(critical) == ()


def test_an_alert_matching_both_sides_does_not_inhibit_itself() -> None:
    rule = InhibitRule(
        source=(parse_matcher("alertname=X"),), target=(parse_matcher("alertname=X"),), equal=()
    )
    first, second = alert("1", alertname="X"), alert("2", alertname="X")
    inhibitor = Inhibitor([rule], [first, second])

    assert inhibitor.inhibited_by(first) == ("2",)
    assert inhibitor.inhibited_by(second) == ("1",)
    assert Inhibitor([rule], [first]).inhibited_by(first) == ()
