"""The client library's own logic: matcher text, and the emitter that never fails its caller."""

import logging

import grpc
import pytest
from prometheus_client import REGISTRY

from fedmesh.client.alerting import EventEmitter, format_matcher, parse_matcher
from fedmesh.rpc import open_channel
from fedmesh.store import free_port


@pytest.mark.parametrize(
    ("text", "name", "value", "is_regex", "is_equal"),
    [
        ('alertname="NodeStale"', "alertname", "NodeStale", False, True),
        ("region!=r1", "region", "r1", False, False),
        ('node=~"n[0-9]+"', "node", "n[0-9]+", True, True),
        ("node !~ n1|n2", "node", "n1|n2", True, False),
    ],
)
def test_matcher_text_round_trips(
    text: str, name: str, value: str, is_regex: bool, is_equal: bool
) -> None:
    matcher = parse_matcher(text)

    assert (matcher.name, matcher.value, matcher.is_regex, matcher.is_equal) == (
        name,
        value,
        is_regex,
        is_equal,
    )
    assert parse_matcher(format_matcher(matcher)) == matcher


@pytest.mark.parametrize("text", ["region", 'region="r1', "=r1"])
def test_malformed_matcher_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="malformed matcher"):
        parse_matcher(text)


async def test_an_emitter_without_alerting_drops_events_quietly() -> None:
    emitter = EventEmitter(None, source="coordinator")
    await emitter.emit("round_failed", {"run": "r1"})
    assert (emitter.sent, emitter.failed) == (0, 0)


def emit_failures() -> float:
    labels = {"source": "coordinator", "kind": "round_failed"}
    return REGISTRY.get_sample_value("fedmesh_alerting_emit_failures_total", labels) or 0.0


async def test_an_emitter_whose_alerting_is_down_logs_counts_and_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = emit_failures()
    async with open_channel(f"127.0.0.1:{free_port()}") as channel:
        emitter = EventEmitter(channel, source="coordinator", timeout_s=0.3)
        with caplog.at_level(logging.WARNING, logger="fedmesh.client.alerting"):
            await emitter.emit("round_failed", {"run": "r1"}, {"token": "s3cret"})

    assert (emitter.sent, emitter.failed) == (0, 1)
    assert emit_failures() == before + 1
    record = next(r for r in caplog.records if r.name == "fedmesh.client.alerting")
    fields = record.__dict__["fields"]
    assert fields["kind"] == "round_failed"
    assert fields["status"] in (
        grpc.StatusCode.UNAVAILABLE.name,
        grpc.StatusCode.DEADLINE_EXCEEDED.name,
    )
    assert "s3cret" not in str(fields)
