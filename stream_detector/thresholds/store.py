"""Where channel states live between batches: Redis for the daemon, a dict for evaluation."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import redis
from redis.commands.core import Script

from stream_detector.engine import ChannelState, StoredState


class StoreUnavailable(RuntimeError):
    """The store cannot be reached right now (restarting, loading, network): try again."""


class StateStore(abc.ABC):
    """Loads and saves channel states; ``save`` never lets a state move backwards.

    Both raise `StoreUnavailable` for an outage a caller should wait out; anything else is
    a bug or a misconfiguration and propagates as is.
    """

    @abc.abstractmethod
    def load(self, channels: list[str]) -> dict[str, StoredState]:
        """The stored states of those channels that have one."""

    @abc.abstractmethod
    def save(self, states: list[ChannelState]) -> int:
        """Save atomically; return how many were newer than what was stored."""

    @abc.abstractmethod
    def prime(self, states: list[ChannelState]) -> int:
        """Write primed states (`stream_detector.priming`) atomically, each only where its
        channel has no state yet; return how many were written."""


class MemoryStateStore(StateStore):
    """An honest in-process store with the same replay rule as the Redis one."""

    def __init__(self) -> None:
        self.saved: dict[str, StoredState] = {}

    def load(self, channels: list[str]) -> dict[str, StoredState]:
        return {c: self.saved[c] for c in channels if c in self.saved}

    def save(self, states: list[ChannelState]) -> int:
        applied = 0
        for st in states:
            cur = self.saved.get(st.channel)
            if cur is None or cur.partition != st.partition or cur.last_offset < st.last_offset:
                doc, rows = st.encode()
                self.saved[st.channel] = StoredState(st.partition, st.last_offset, doc, rows)
                applied += 1
        return applied

    def prime(self, states: list[ChannelState]) -> int:
        written = 0
        for st in states:
            if st.channel not in self.saved:
                doc, rows = st.encode()
                self.saved[st.channel] = StoredState(st.partition, st.last_offset, doc, rows)
                written += 1
        return written


class RedisStateStore(StateStore):
    """Channel states as Redis hashes, written by one Lua script per save (atomic, idempotent).

    Keys are namespaced by model version: a new model starts with fresh thresholds instead
    of inheriting statistics of another model's scores.
    """

    def __init__(self, client: redis.Redis, prefix: str, model_version: str) -> None:
        self._client = client
        self._namespace = f"{prefix}:state:{model_version}"
        scripts = resources.files("stream_detector.thresholds")
        # redis-py's Script re-sends the body on NOSCRIPT (e.g. after a Redis restart).
        self._save_script = client.register_script(scripts.joinpath("save_states.lua").read_text())
        self._prime_script = client.register_script(
            scripts.joinpath("prime_states.lua").read_text()
        )

    def key(self, channel: str) -> str:
        return f"{self._namespace}:{channel}"

    def load(self, channels: list[str]) -> dict[str, StoredState]:
        if not channels:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for channel in channels:
            pipe.hmget(self.key(channel), "partition", "last_offset", "state", "buffer")
        with _outage_is_unavailable():
            replies = pipe.execute()
        found: dict[str, StoredState] = {}
        for channel, (partition, offset, doc, rows) in zip(channels, replies, strict=True):
            if offset is None:
                continue
            found[channel] = StoredState(int(partition), int(offset), doc, rows or b"")
        return found

    def save(self, states: list[ChannelState]) -> int:
        return self._write(self._save_script, states)

    def prime(self, states: list[ChannelState]) -> int:
        return self._write(self._prime_script, states)

    def _write(self, script: Script, states: list[ChannelState]) -> int:
        if not states:
            return 0
        keys: list[str] = []
        args: list[bytes | int | str] = []
        for st in states:
            doc, rows = st.encode()
            keys.append(self.key(st.channel))
            args.extend([str(st.partition), str(st.last_offset), doc, rows])
        with _outage_is_unavailable():
            return int(script(keys=keys, args=args))


@contextmanager
def _outage_is_unavailable() -> Iterator[None]:
    # ConnectionError covers a refused or dropped connection and BusyLoadingError (a
    # restarted Redis still loading its snapshot); TimeoutError a stalled one.
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
