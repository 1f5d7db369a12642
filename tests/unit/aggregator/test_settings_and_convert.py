"""Settings from the environment, and the wire ↔ domain conversions of the contract."""

from pathlib import Path

import pytest
import torch

from fedmesh.aggregation import Rule, RuleSpec
from fedmesh.errors import InvalidArgument
from fedmesh.proto.common.v1 import common_pb2 as common
from fedmesh.services.aggregator import convert
from fedmesh.services.aggregator.settings import AggregatorSettings


def test_settings_default_to_a_local_spool_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPOOL_DIR", "MEMORY_THRESHOLD_BYTES", "MAX_UPDATE_BYTES", "DEVICE"):
        monkeypatch.delenv(f"FEDMESH_AGGREGATOR_{name}", raising=False)

    settings = AggregatorSettings.from_env()

    assert settings.spool_dir == Path("fedmesh-data") / "aggregator-spool"
    assert (settings.memory_threshold_bytes, settings.max_update_bytes) == (64 << 20, 4 << 30)
    assert (settings.device, settings.block_coordinates) == (torch.device("cpu"), 0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAX_UPDATE_BYTES", "0", "FEDMESH_AGGREGATOR_MAX_UPDATE_BYTES=0 must be ≥ 1"),
        (
            "MEMORY_THRESHOLD_BYTES",
            "lots",
            "FEDMESH_AGGREGATOR_MEMORY_THRESHOLD_BYTES='lots' is not an integer",
        ),
        ("DEVICE", "tpu", "FEDMESH_AGGREGATOR_DEVICE='tpu' is not a torch device"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"FEDMESH_AGGREGATOR_{name}", value)

    with pytest.raises(InvalidArgument) as info:
        AggregatorSettings.from_env()

    assert str(info.value).startswith(message)


@pytest.mark.parametrize("rule", list(Rule))
def test_every_rule_round_trips_through_the_wire_enum(rule: Rule) -> None:
    assert convert.rule_from_proto(convert.rule_to_proto(rule)) is rule


def test_zero_radius_bound_and_m_mean_the_rule_defaults() -> None:
    wire = common.AggregationSpec(
        rule=common.AGGREGATION_RULE_CENTERED_CLIPPING, byzantine_f=2, bucket_size=3
    )

    spec = convert.rule_spec_from_proto(wire)

    assert spec == RuleSpec(Rule.CENTERED_CLIPPING, f=2, bucket_size=3, tau=1.0, norm_bound=1.0)


def test_a_rule_number_the_contract_does_not_know_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match=r"^aggregation\.rule is 42; expected one of"):
        convert.rule_from_proto(common.AggregationRule.ValueType(42))
