import json
import os

import click
import pytest
from click.testing import CliRunner

from stream_detector.cli import main
from stream_detector.errors import ConfigError
from stream_detector.settings import load_settings
from stream_detector.sinks.cli import parse_until

SECRETS = {
    "SD_SINKS__SLACK__WEBHOOK_URL": "https://hooks.slack.com/services/T1/B2/slackSecretTok",
    "SD_SINKS__PAGERDUTY__ROUTING_KEY": "pdRoutingKeySecret0123456789abcd",
    "SD_SINKS__WEBHOOK__URL": "https://user:webhookPass@example.test/hook",
    "SD_SINKS__WEBHOOK__HMAC_SECRET": "hmacSecretValue",
}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("SD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_config_masks_every_sink_secret(clean_env):
    for key, value in SECRETS.items():
        clean_env.setenv(key, value)
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0, result.output
    for secret in ["slackSecretTok", "pdRoutingKeySecret", "webhookPass", "hmacSecretValue"]:
        assert secret not in result.output
    sinks = json.loads(result.output)["sinks"]
    assert sinks["slack"]["webhook_url"] == "**********"
    assert sinks["pagerduty"]["routing_key"] == "**********"
    assert sinks["webhook"]["hmac_secret"] == "**********"
    assert sinks["pagerduty"]["events_url"] == "https://events.pagerduty.com/v2/enqueue"
    assert sinks["dead_letter_topic"] == "alerts.sink-dlq"


def test_bad_sink_setting_names_it_without_echoing_a_secret(clean_env):
    clean_env.setenv("SD_SINKS__WEBHOOK__URL", "")
    clean_env.setenv("SD_SINKS__SLACK__RATE_PER_S", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == "SD_SINKS__SLACK__RATE_PER_S"


@pytest.mark.parametrize(
    "args",
    [
        ["sink"],
        ["sink", "slack"],
        ["sink", "pagerduty"],
        ["sink", "webhook"],
        ["silence"],
        ["silence", "add"],
        ["silence", "list"],
        ["silence", "remove"],
    ],
)
def test_sink_commands_have_help(clean_env, args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize(
    ("kind", "setting"),
    [
        ("slack", "SD_SINKS__SLACK__WEBHOOK_URL"),
        ("pagerduty", "SD_SINKS__PAGERDUTY__ROUTING_KEY"),
        ("webhook", "SD_SINKS__WEBHOOK__URL"),
    ],
)
def test_sink_without_its_secret_names_the_setting(clean_env, kind, setting):
    result = CliRunner().invoke(main, ["sink", kind])
    assert result.exit_code != 0 and setting in result.output


def test_parse_until():
    assert parse_until(None, "90s", now=1000.0) == 1090.0
    assert parse_until(None, "2h", now=0.0) == 7200.0
    assert parse_until("2026-01-01T00:00:00Z", None, now=0.0) == 1767225600.0
    assert parse_until("2026-01-01T00:00", None, now=0.0) == 1767225600.0  # UTC if no zone
    with pytest.raises(click.BadParameter):
        parse_until(None, "soon", now=0.0)
    with pytest.raises(click.UsageError):
        parse_until("2026-01-01", "1h", now=0.0)
