"""The Redis state store against a real Redis: atomic, offset-stamped, survives restarts."""

from __future__ import annotations

import json
import threading
import uuid

import numpy as np
import pytest
import redis

from stream_detector.buffers import ChannelBuffer
from stream_detector.engine import ChannelState
from stream_detector.thresholds import build_threshold
from stream_detector.thresholds.state_codec import unpack_state
from stream_detector.thresholds.store import RedisStateStore, StoreUnavailable

pytestmark = pytest.mark.integration


def _state(channel: str, offset: int, mean: float, partition: int = 0) -> ChannelState:
    buf = ChannelBuffer(channel, 4, 2)
    buf.push(0, 0.0, 1.0, np.full((3, 2), offset, dtype=np.float32))
    return ChannelState(
        channel, partition, offset, buf, {"n": offset, "w": 1.0, "mean": mean, "var": 1.0}
    )


@pytest.fixture
def store(redis_url: str) -> RedisStateStore:
    return RedisStateStore(redis.Redis.from_url(redis_url), f"t{uuid.uuid4().hex[:6]}", "v1")


def test_round_trip(store: RedisStateStore) -> None:
    assert store.save([_state("A", 5, 0.5), _state("B", 7, 0.7)]) == 2
    got = store.load(["A", "B", "C"])
    assert set(got) == {"A", "B"}
    assert got["A"].last_offset == 5 and got["B"].partition == 0
    rows = np.frombuffer(got["A"].buffer, dtype=np.float32).reshape(-1, 2)
    assert rows.shape == (3, 2) and (rows == 5).all()


def test_a_replayed_save_changes_nothing(store: RedisStateStore) -> None:
    store.save([_state("A", 10, 1.0)])
    assert store.save([_state("A", 10, 9.0), _state("A", 3, 9.0)]) == 0
    assert b'"mean": 1.0' in store.load(["A"])["A"].state


def test_a_new_partition_wins_whatever_its_offset(store: RedisStateStore) -> None:
    store.save([_state("A", 10, 1.0, partition=0)])
    assert store.save([_state("A", 2, 2.0, partition=3)]) == 1
    assert store.load(["A"])["A"].partition == 3


def test_concurrent_replicas_never_move_state_backwards(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}"
    errors: list[BaseException] = []

    def replica(offsets: range) -> None:
        try:
            own = RedisStateStore(redis.Redis.from_url(redis_url), prefix, "v1")
            for off in offsets:
                own.save([_state("A", off, float(off))])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(range(i, 400, 2),)) for i in range(2)]
    threads += [threading.Thread(target=replica, args=(range(399, 0, -7),))]  # a laggard
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = RedisStateStore(redis.Redis.from_url(redis_url), prefix, "v1").load(["A"])["A"]
    assert final.last_offset == 399
    assert b'"mean": 399.0' in final.state


def test_state_and_script_survive_a_redis_restart(redis_server, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, f"t{uuid.uuid4().hex[:6]}", "v1")
    store.save([_state("A", 4, 0.4)])
    redis_server.restart()  # SHUTDOWN SAVE + start: the script cache is gone, the data is not
    assert store.load(["A"])["A"].last_offset == 4
    assert store.save([_state("A", 5, 0.5)]) == 1  # NOSCRIPT → the script is loaded again
    assert store.load(["A"])["A"].last_offset == 5


def test_an_outage_is_reported_as_unavailable_and_passes(redis_server, redis_url: str) -> None:
    """While Redis is down both calls raise StoreUnavailable; afterwards they work again."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
    store = RedisStateStore(client, f"t{uuid.uuid4().hex[:6]}", "v1")
    store.save([_state("A", 4, 0.4)])
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable, match="ConnectionError"):
            store.save([_state("A", 5, 0.5)])
        with pytest.raises(StoreUnavailable):
            store.load(["A"])
    finally:
        redis_server.start()
    assert store.load(["A"])["A"].last_offset == 4
    assert store.save([_state("A", 5, 0.5)]) == 1


@pytest.mark.parametrize("kind", ["telemanom", "telemanom_batches"])
def test_a_telemanom_state_comes_back_from_redis_deciding_as_before(
    store: RedisStateStore, kind: str
) -> None:
    # Its windows are stored packed (state_codec); the copy read back must carry on exactly
    # as the state that never left memory (the batch form mid-batch, its verdict pending).
    strategy = build_threshold(kind)
    rng = np.random.default_rng(5)
    scores = np.abs(rng.normal(0, 0.05, 3000))
    scores[2600:2700] += 0.6
    values = np.sin(np.arange(3000) / 40)
    live = strategy.initial_state(None)
    for score, value in zip(scores[:2500], values[:2500], strict=True):
        live, _ = strategy.step(live, float(score), float(value))
    buf = ChannelBuffer("A", 4, 2)
    store.save([ChannelState("A", 0, 2499, buf, live)])
    stored = store.load(["A"])["A"]
    assert len(stored.state) < 60_000  # two 2,100-float windows, packed
    restored = unpack_state(json.loads(stored.state)["threshold"])
    statuses = []
    for score, value in zip(scores[2500:], values[2500:], strict=True):
        live, a = strategy.step(live, float(score), float(value))
        restored, b = strategy.step(restored, float(score), float(value))
        assert a == b
        statuses.append(a.status)
    assert "anomalous" in statuses and "normal" in statuses
