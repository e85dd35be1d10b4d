"""The one settings tree. Every value comes from here; no other module reads the environment.

Environment variables use the prefix ``SD_`` and ``__`` between sections, e.g.
``SD_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092`` or ``SD_THRESHOLD__K=4``. A ``.env`` file in the
working directory is read too. Invalid values fail at start with the setting named.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream_detector.errors import ConfigError

ENV_PREFIX = "SD_"
_SECRET_LIKE = re.compile(r"url|routing_key|api_key|webhook|token|secret|password", re.IGNORECASE)


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    telemetry_topic: str = "telemetry"
    alerts_topic: str = "alerts"
    dead_letter_topic: str = "telemetry.dlq"
    scores_topic: str | None = Field(
        default=None, description="publish every scored window here (dashboards, benchmarks)"
    )
    group_id: str = "stream-detector"
    group_instance_id: str | None = Field(
        default=None,
        description="static membership: a restart within the session timeout "
        "does not rebalance the group",
    )
    # 'earliest': a group that never committed must not skip what was produced before it
    # joined (kafka-python's default 'latest' loses that data).
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = Field(default=2000, ge=1)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    session_timeout_ms: int = Field(default=45_000, ge=6_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    poll_timeout_ms: int = Field(default=100, ge=1)
    publish_timeout_s: float = Field(default=30.0, gt=0)
    client_id: str = "stream-detector"


class RedisSettings(BaseModel):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    key_prefix: str = Field(default="sd", pattern=r"^[A-Za-z0-9_.:\-]+$")
    socket_timeout_s: float = Field(default=5.0, gt=0)


class ModelSettings(BaseModel):
    checkpoint: Path = Path("artifacts/model.pt")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    stride: int | None = Field(
        default=None, ge=1, description="score every S-th step; default: the checkpoint's stride"
    )
    channels: list[str] | None = Field(
        default=None,
        description="channels to accept; default: the checkpoint's channels, or any if it has none",
    )

    torch_threads: int | None = Field(
        default=1,
        ge=1,
        description="CPU threads torch may use; one avoids oversubscription beside Kafka's "
        "own threads on small hosts (unset: torch's default)",
    )


class BatchingSettings(BaseModel):
    max_batch_size: int = Field(default=256, ge=1)
    max_wait_ms: int = Field(default=50, ge=0)


class ThresholdSettings(BaseModel):
    # telemanom's threshold streamed, with its defaults (error buffer 100, re-learning after
    # 100, spikes ×1.5) and one hit opening an episode: the configuration chosen without test
    # labels in docs/threshold-race.md ("The threshold race", second round; its spike margin and the
    # default detector, `lstm_dt` with n_predictions 10, by the same rule in the eighth look;
    # the episodes' lead of 49 by the rule written down in the tenth look).
    kind: str = "telemanom"
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="parameters of the chosen strategy, as JSON, e.g. "
        "SD_THRESHOLD__PARAMS='{\"error_buffer\": 25}' for telemanom; for ewma_sigma the "
        "fields below are its parameters (params override them)",
    )
    k: float = Field(
        default=4.0, gt=0, description="ewma_sigma: threshold = mean + k·std of normal scores"
    )
    alpha: float = Field(
        default=0.01, gt=0, le=1, description="ewma_sigma: EWMA weight of a new score"
    )
    warmup: int = Field(
        default=100,
        ge=0,
        description="ewma_sigma: normal scores a channel needs before it may alarm",
    )
    prior_weight: int = Field(
        default=100,
        ge=0,
        description="ewma_sigma: how many observations the training calibration counts as at start",
    )
    log_scores: bool = Field(
        default=False, description="ewma_sigma: track log(score) instead of the score itself"
    )
    min_ratio: float = Field(
        default=2.0,
        ge=1.0,
        description="ewma_sigma: never alarm below this multiple of the channel's typical score",
    )
    calibration: Literal["none", "zscore"] = Field(
        default="none",
        description="zscore: map raw scores onto |N(0,1)| by the training scores' quantiles "
        "before the threshold (alert scores and thresholds are then in z units)",
    )

    def strategy_params(self) -> dict[str, Any]:
        """The keyword arguments the strategy `kind` is built with: `params`, and for
        ewma_sigma the fields above beneath them."""
        if self.kind != "ewma_sigma":
            return dict(self.params)
        fields = ("k", "alpha", "warmup", "prior_weight", "log_scores", "min_ratio")
        return {name: getattr(self, name) for name in fields} | self.params


class AlertSettings(BaseModel):
    min_hits: int = Field(
        default=1, ge=1, description="anomalous windows within `hit_window` that open an episode"
    )
    hit_window: int = Field(default=1, ge=1)
    hold_down: int = Field(default=100, ge=1, description="normal windows in a row before resolve")
    update_ratio: float = Field(
        default=1.5, gt=1.0, description="send an update when the peak score grows by this factor"
    )
    suppress: int = Field(
        default=0, ge=0, description="windows after a resolve during which no episode opens"
    )
    # 49, half telemanom's error buffer: the tenth look's written rule moved it from 99
    # (docs/threshold-race.md); the episode's end keeps the full buffer of 99 steps after a hit.
    lead: int = Field(
        default=49,
        ge=0,
        description="steps an episode's start is back-dated before its first hit "
        "(telemanom's error buffer, backwards)",
    )


class LoggingSettings(BaseModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DataSettings(BaseModel):
    root: Path = Path("../shared/datasets/smap_msl")


class SeverityLevels(BaseModel):
    """Severity from peak score ÷ threshold; shared by the sinks (PagerDuty's severity, Slack's
    "update only when severity rises")."""

    critical_ratio: float = Field(default=4.0, gt=0)
    error_ratio: float = Field(default=2.0, gt=0)
    no_threshold: Literal["critical", "error", "warning", "info"] = Field(
        default="error", description="severity of an alert whose threshold is unknown"
    )


class SlackSinkSettings(BaseModel):
    webhook_url: SecretStr | None = Field(
        default=None, description="Slack incoming webhook URL (the URL is the credential)"
    )
    group_window_s: float = Field(
        default=2.0, ge=0, description="alerts arriving within this window share one message"
    )
    rate_per_s: float = Field(
        default=1.0, gt=0, description="messages per second per webhook (Slack allows ~1)"
    )
    group_id: str = "stream-detector-sink-slack"


class PagerDutySinkSettings(BaseModel):
    routing_key: SecretStr | None = Field(
        default=None, description="Events API v2 integration (routing) key"
    )
    events_url: str = "https://events.pagerduty.com/v2/enqueue"
    rate_per_s: float = Field(
        default=2.0, gt=0, description="events per second (PagerDuty allows ~120/min per key)"
    )
    group_id: str = "stream-detector-sink-pagerduty"


class WebhookSinkSettings(BaseModel):
    url: SecretStr | None = None
    hmac_secret: SecretStr | None = Field(
        default=None, description="sign each body with HMAC-SHA256 when set"
    )
    rate_per_s: float = Field(default=50.0, gt=0)
    group_id: str = "stream-detector-sink-webhook"


class DeliverySettings(BaseModel):
    timeout_s: float = Field(default=10.0, gt=0, description="per HTTP attempt")
    max_attempts: int = Field(
        default=0,
        ge=0,
        description="attempts per message before it goes to the sink dead-letter topic; "
        "0 retries until the receiver accepts (no alert lost in an outage)",
    )
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    retry_after_max_s: float = Field(
        default=300.0, gt=0, description="cap on a receiver's Retry-After"
    )
    dedupe_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="how long a delivered alert event is remembered"
    )


class SinkSettings(BaseModel):
    slack: SlackSinkSettings = SlackSinkSettings()
    pagerduty: PagerDutySinkSettings = PagerDutySinkSettings()
    webhook: WebhookSinkSettings = WebhookSinkSettings()
    delivery: DeliverySettings = DeliverySettings()
    severity: SeverityLevels = SeverityLevels()
    dead_letter_topic: str = "alerts.sink-dlq"


class Settings(BaseSettings):
    """Everything stream-detector can be told, in one tree."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        validate_default=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    model: ModelSettings = ModelSettings()
    batching: BatchingSettings = BatchingSettings()
    threshold: ThresholdSettings = ThresholdSettings()
    alerts: AlertSettings = AlertSettings()
    logging: LoggingSettings = LoggingSettings()
    data: DataSettings = DataSettings()
    sinks: SinkSettings = SinkSettings()

    @model_validator(mode="after")
    def _topics_distinct(self) -> Settings:
        k = self.kafka
        topics = [k.telemetry_topic, k.alerts_topic, k.dead_letter_topic]
        if k.scores_topic:
            topics.append(k.scores_topic)
        if len(set(topics)) != len(topics):
            raise ValueError(
                "kafka topics must be distinct (telemetry, alerts, dead letter, scores)"
            )
        return self

    def masked(self) -> dict[str, Any]:
        """The effective settings as JSON-able data, secrets shown as '**********'."""
        return self.model_dump(mode="json")


def load_settings(**overrides: Any) -> Settings:
    """Settings from environment, .env and overrides; ConfigError names a bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = "__".join(str(p) for p in first["loc"]) or "settings"
        setting = ENV_PREFIX + loc.upper()
        detail = first["msg"]
        # Never echo what might be a secret (URLs with passwords, routing keys, tokens).
        if not _SECRET_LIKE.search(loc):
            detail += f" (got {first.get('input')!r})"
        raise ConfigError(setting, detail) from None
