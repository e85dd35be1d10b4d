"""The contract every registered sink keeps (a new sink gets these tests for free)."""

import json

import pytest
from pydantic import SecretStr

from stream_detector.errors import ConfigError
from stream_detector.settings import SinkSettings
from stream_detector.sinks import build_sink, sink_kinds
from stream_detector.sinks.receivers import sample_alert

SECRET_SETTINGS = SinkSettings.model_validate(
    {
        "slack": {"webhook_url": SecretStr("https://hooks.slack.test/T0/B0/slacksecret")},
        "pagerduty": {"routing_key": SecretStr("r" * 32)},
        "webhook": {
            "url": SecretStr("https://hooks.test/webhooksecret"),
            "hmac_secret": SecretStr("hmacsecret"),
        },
    }
)


def test_builtin_sinks_are_registered():
    assert {"slack", "pagerduty", "webhook"} <= set(sink_kinds())


@pytest.mark.parametrize("kind", sink_kinds())
def test_every_alert_lands_in_exactly_one_request_in_order(kind):
    sink = build_sink(kind, SECRET_SETTINGS)
    alerts = [
        sample_alert(f"C-{i % 7}", state, rev, first_seq=i)
        for i in range(60)
        for rev, state in enumerate(["open", "update", "resolve"])
    ]
    out = sink.render(alerts)
    carried = [a for o in out for a in o.alerts]
    assert carried == alerts
    for o in out:
        json.loads(o.body)  # every body is JSON


@pytest.mark.parametrize("kind", sink_kinds())
def test_open_and_resolve_are_always_wanted(kind):
    sink = build_sink(kind, SECRET_SETTINGS)
    assert sink.wants(sample_alert(state="open"), None)
    assert sink.wants(sample_alert(state="resolve", revision=1), None)


@pytest.mark.parametrize("kind", sink_kinds())
def test_secrets_are_declared_and_missing_ones_name_the_setting(kind):
    sink = build_sink(kind, SECRET_SETTINGS)
    assert sink.secrets(), "a sink must declare what to scrub"
    with pytest.raises(ConfigError) as info:
        build_sink(kind, SinkSettings())
    assert info.value.setting.startswith(f"SD_SINKS__{kind.upper()}__")


def test_unknown_sink_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown sink"):
        build_sink("carrier-pigeon", SECRET_SETTINGS)
