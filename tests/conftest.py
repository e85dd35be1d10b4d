"""Shared fixtures: a real Kafka broker and a real Redis, started on demand.

Integration and e2e tests run against the real services rather than fakes,
because the daemon's interesting failure modes (rebalances, commit ordering,
Lua scripts, persistence across restarts) only show up there.

The services are session-scoped and *lazy*: nothing starts unless a test asks
for `kafka_bootstrap` / `redis_url` / `redis_server`, so unit-test runs stay
fast and need neither Java nor redis-server. Each session gets its own free
ports and its own state dir under pytest's tmp dir, so concurrent sessions
(or a developer's own Kafka on 9092) never collide. The start/stop logic
lives in deploy/kafka/kafka.sh and deploy/redis/redis.sh, so `make`, CI and
humans all use exactly the same code path.

For fast local iteration, point the tests at services you keep running:
    SD_TEST_KAFKA_BOOTSTRAP=127.0.0.1:9092 SD_TEST_REDIS_URL=redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
from kafka import KafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
REDIS_SH = ROOT / "deploy" / "redis" / "redis.sh"


def _free_ports(n: int) -> list[int]:
    """Ports the OS reports free right now.

    All sockets are held open until every port is chosen so the n ports are
    distinct. There is a small window before the service binds them; the
    scripts refuse to start on a busy port rather than talk to a stranger.
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run(script: Path, cmd: str, env: dict[str, str], timeout: float, check: bool = True) -> None:
    """Run a deploy script; on failure raise with its output (it has the log tail)."""
    proc = subprocess.run(
        [str(script), cmd],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{script.relative_to(ROOT)} {cmd} failed (exit {proc.returncode}):\n"
            f"{proc.stdout}{proc.stderr}"
        )


# --------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`host:port` of a single-node KRaft broker, alive for the whole session."""
    external = os.environ.get("SD_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return

    port, controller_port = _free_ports(2)
    env = {
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_DIR": str(tmp_path_factory.mktemp("kafka")),
        # C1-only JIT + serial GC: about half the CPU before the broker is
        # ready (measured ~4.5 s -> ~2.6 s on 2 cores). A test broker never
        # runs long enough for C2's faster peak code to pay off.
        "KAFKA_JVM_OPTS": os.environ.get(
            "SD_TEST_KAFKA_JVM_OPTS", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
        ),
    }
    # The first fetch downloads ~45 MB of jars through Maven; later sessions hit
    # the cache in .cache/kafka and return at once.
    _run(KAFKA_SH, "fetch", env, timeout=900)
    try:
        _run(KAFKA_SH, "start", env, timeout=240)
        yield f"127.0.0.1:{port}"
    finally:
        # In `finally` so a failed/timed-out start or a crashing session never
        # leaves a JVM behind; stop is a no-op if nothing is running.
        _run(KAFKA_SH, "stop", env, timeout=120, check=False)


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory: `make_topic(prefix, partitions=4) -> name` of a fresh topic.

    Every test gets brand-new topics, so offsets, consumer groups and leftover
    messages from other tests can never leak in. Topics are created up front
    (rather than auto-created on first produce) so the partition count is
    exact and every partition has a leader before the test starts producing.
    """
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="sd-tests-admin")
    created: list[str] = []

    def make_topic(prefix: str, partitions: int = 4) -> str:
        # Topic names allow only [A-Za-z0-9._-]; tests often pass node names.
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-")[:100] or "t"
        name = f"{safe}-{uuid.uuid4().hex[:12]}"
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})
        # CreateTopics returns before leaders are elected on KRaft; producing
        # in that window gives spurious NotLeader/UnknownTopic retries.
        admin.wait_for_topics([name], timeout_ms=30_000)
        created.append(name)
        return name

    try:
        yield make_topic
    finally:
        # Best effort: keeps a long session's broker small. Failure here must
        # not turn a passing test into an error.
        try:
            if created:
                admin.delete_topics(created, raise_errors=False)
        except Exception:
            pass
        admin.close()


@pytest.fixture
def unique_group() -> str:
    """A consumer group id no other test uses (committed offsets are per group)."""
    return f"sd-test-group-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- Redis


@dataclass
class RedisServer:
    """Handle on the session's Redis, for tests that need to bounce it."""

    url: str
    port: int
    _env: dict[str, str] | None = field(default=None, repr=False)

    def restart(self) -> None:
        """SHUTDOWN SAVE, then start again on the same port and data dir.

        Data must survive (AOF + RDB in the same dir). Clients see their
        connections drop, exactly like a real Redis restart in production.
        """
        self.stop()
        self.start()

    def stop(self) -> None:
        """SHUTDOWN SAVE: the data is on disk, clients get connection errors until start()."""
        if self._env is None:
            pytest.skip("stopping Redis needs the fixture-managed one, not SD_TEST_REDIS_URL")
        _run(REDIS_SH, "stop", self._env, timeout=60)

    def start(self) -> None:
        if self._env is None:
            pytest.skip("starting Redis needs the fixture-managed one, not SD_TEST_REDIS_URL")
        _run(REDIS_SH, "start", self._env, timeout=60)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    external = os.environ.get("SD_TEST_REDIS_URL")
    if external:
        yield RedisServer(url=external, port=urlparse(external).port or 6379)
        return

    (port,) = _free_ports(1)
    env = {"REDIS_PORT": str(port), "REDIS_DIR": str(tmp_path_factory.mktemp("redis"))}
    _run(REDIS_SH, "install", env, timeout=600)
    try:
        _run(REDIS_SH, "start", env, timeout=60)
        yield RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, _env=env)
    finally:
        _run(REDIS_SH, "stop", env, timeout=60, check=False)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """`redis://127.0.0.1:<port>/0` of the session's Redis."""
    return redis_server.url


# The score cache of D-11 that unit and integration tests share.
@pytest.fixture()
def d11_cache_of(tmp_path):
    """Makes a score cache of D-11 (SMAP) for a given ModelRecipe, judged by the default
    threshold, in tmp_path/cache. Skips where the data is not at ../shared/datasets/smap_msl."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "smap_msl"
    if not data.is_dir():
        pytest.skip(f"SMAP/MSL data not found at {data}")
    from stream_detector.evaluation.threshold_grid import ThresholdVariant, run_grid
    from stream_detector.settings import Settings

    def make(recipe):
        default = ThresholdVariant(
            "default", Settings().threshold.model_dump(), Settings().alerts.model_dump()
        )
        cache = tmp_path / "cache"
        run_grid(data, "smap", recipe, Settings(), [default], ["D-11"], False, cache=cache)
        return cache

    return make


@pytest.fixture()
def d11_cache(d11_cache_of):
    """A score cache of D-11 made in seconds: a small dense_ae, one epoch."""
    from stream_detector.evaluation.runner import ModelRecipe
    from stream_detector.models.base import FitConfig

    return d11_cache_of(
        ModelRecipe(
            kind="dense_ae",
            window=30,
            hyperparameters={"score_features": [0], "hidden": [16, 8]},
            fit=FitConfig(epochs=1, device="cpu"),
            train_stride=8,
        )
    )
