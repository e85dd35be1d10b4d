"""The composition root: builds the engine, the state store and the daemon from settings."""

from __future__ import annotations

import contextlib

import redis
import structlog
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from stream_detector.alerts.episodes import EpisodeRules
from stream_detector.daemon import DetectorDaemon
from stream_detector.engine import DetectionEngine, ScoringModel
from stream_detector.errors import CheckpointError, ConfigError
from stream_detector.serving import ServedModel
from stream_detector.settings import KafkaSettings, Settings
from stream_detector.thresholds import build_threshold
from stream_detector.thresholds.calibration import ScoreCalibrator
from stream_detector.thresholds.store import RedisStateStore

log = structlog.get_logger(__name__)


def load_model(settings: Settings) -> ServedModel:
    path = settings.model.checkpoint
    if not path.is_file():
        raise ConfigError(
            "SD_MODEL__CHECKPOINT",
            f"no checkpoint at {path}; train one with `stream-detector train`",
        )
    try:
        return ServedModel.load(path, device=settings.model.device)
    except CheckpointError as exc:
        raise ConfigError("SD_MODEL__CHECKPOINT", str(exc)) from None


def build_engine(settings: Settings, model: ScoringModel) -> DetectionEngine:
    t = settings.threshold
    try:
        threshold = build_threshold(t.kind, **t.strategy_params())
    except KeyError as exc:
        raise ConfigError("SD_THRESHOLD__KIND", str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError("SD_THRESHOLD__PARAMS", f"{t.kind}: {exc}") from None
    a = settings.alerts
    try:
        rules = EpisodeRules(
            min_hits=a.min_hits,
            hit_window=a.hit_window,
            hold_down=a.hold_down,
            update_ratio=a.update_ratio,
            suppress=a.suppress,
            lead=a.lead,
        )
    except ValueError as exc:
        raise ConfigError("SD_ALERTS__MIN_HITS", str(exc)) from None
    calibrator = None
    if t.calibration == "zscore":
        if model.score_prior is None:
            raise ConfigError(
                "SD_THRESHOLD__CALIBRATION", "zscore needs the checkpoint's training scores"
            )
        try:
            calibrator = ScoreCalibrator.from_prior(model.score_prior)
        except ValueError as exc:
            raise ConfigError("SD_THRESHOLD__CALIBRATION", str(exc)) from None
    return DetectionEngine(
        model,
        threshold,
        rules,
        calibrator=calibrator,
        stride=settings.model.stride,
        channels=settings.model.channels,
        max_batch_size=settings.batching.max_batch_size,
        topic=settings.kafka.telemetry_topic,
        emit_scores=bool(settings.kafka.scores_topic),
    )


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis.url.get_secret_value(),
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=settings.redis.socket_timeout_s,
    )


def ensure_topics(kafka: KafkaSettings, partitions: int = 4) -> list[str]:
    """Create the daemon's topics if missing; return the ones created."""
    wanted = [kafka.telemetry_topic, kafka.alerts_topic, kafka.dead_letter_topic]
    if kafka.scores_topic:
        wanted.append(kafka.scores_topic)
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id=kafka.client_id)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            # Another replica may win the race to create them; that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
        return missing
    finally:
        admin.close()


def build_daemon(settings: Settings) -> DetectorDaemon:
    model = load_model(settings)
    engine = build_engine(settings, model)
    client = redis_client(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError("SD_REDIS__URL", f"cannot reach Redis: {exc}") from None
    store = RedisStateStore(client, settings.redis.key_prefix, model.model_info.version)
    created = ensure_topics(settings.kafka)
    if created:
        log.info("topics_created", topics=created)
    return DetectorDaemon(
        engine,
        store,
        settings.kafka,
        max_wait_ms=settings.batching.max_wait_ms,
    )
