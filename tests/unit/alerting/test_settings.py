from pathlib import Path

import pytest

from fedmesh.errors import InvalidArgument
from fedmesh.services.alerting.settings import AlertingSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FEDMESH_ALERTING_RULES",
        "FEDMESH_ALERTING_ALERTMANAGER_URL",
        "FEDMESH_ALERTING_WEBHOOK_URL",
        "FEDMESH_ALERTING_WEBHOOK_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)

    settings = AlertingSettings.from_env()

    assert settings.rules_path is None
    assert (settings.alertmanager_url, settings.webhook_url) == (None, None)
    assert settings.retry.unhealthy_after == 5
    assert settings.retry.give_up_after_s == 86_400.0
    assert settings.tick_s == 1.0


def test_reads_every_variable_and_keeps_secrets_out_of_repr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FEDMESH_ALERTING_RULES", str(tmp_path / "rules.yaml"))
    monkeypatch.setenv("FEDMESH_ALERTING_ALERTMANAGER_URL", "http://am:9093")
    monkeypatch.setenv("FEDMESH_ALERTING_WEBHOOK_URL", "https://hooks/x?token=s3cret")
    monkeypatch.setenv("FEDMESH_ALERTING_WEBHOOK_TOKEN", "t0ken")
    monkeypatch.setenv("FEDMESH_ALERTING_RETRY_BASE_S", "0.5")
    monkeypatch.setenv("FEDMESH_ALERTING_UNHEALTHY_AFTER", "2")

    settings = AlertingSettings.from_env()

    assert settings.rules_path == tmp_path / "rules.yaml"
    assert settings.alertmanager_url == "http://am:9093"
    assert settings.webhook_token == "t0ken"
    assert settings.retry.base_s == 0.5
    assert settings.retry.unhealthy_after == 2
    assert "s3cret" not in repr(settings)
    assert "t0ken" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FEDMESH_ALERTING_WEBHOOK_URL", "hooks.example/x", "must be an http:// or https:// URL"),
        ("FEDMESH_ALERTING_TICK_S", "0", "FEDMESH_ALERTING_TICK_S=0.0 must be greater than 0"),
        (
            "FEDMESH_ALERTING_RETRY_MAX_S",
            "soon",
            "FEDMESH_ALERTING_RETRY_MAX_S='soon' is not a number",
        ),
    ],
)
def test_malformed_values_are_refused_with_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidArgument) as info:
        AlertingSettings.from_env()
    assert message in str(info.value)
    assert name in str(info.value)
