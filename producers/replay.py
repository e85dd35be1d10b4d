"""Replay per-channel telemetry arrays onto the bus as if the channels were live.

All channels advance together, step by step (round-robin by step index), the way a
spacecraft bus delivers them; optionally paced to N× real time. The SMAP/MSL loader is here
too, because replaying that data set is what this module is for; `producers.synthetic`
reuses `stream_series` for generated data.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from producers.sender import StepSender
from stream_detector.records import CHANNEL_PATTERN

DEFAULT_PERIOD_S = 1.0


class ChannelSeries(NamedTuple):
    """One channel's steps in time order: `values` has shape (steps, features)."""

    name: str
    values: np.ndarray


class RecordChunk(NamedTuple):
    """The consecutive steps of one channel that travel in one record; `seq` is the first."""

    channel: str
    seq: int
    values: np.ndarray


@dataclass(frozen=True)
class ReplayReport:
    """What one replay sent, and how fast."""

    records: int
    steps: int
    channels: int
    seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """One line for a terminal."""
        return (
            f"sent {self.records} records, {self.steps} steps from {self.channels} channels "
            f"in {self.seconds:.2f} s ({self.steps_per_second:,.0f} steps/s)"
        )


def interleave(series: Sequence[ChannelSeries], steps_per_record: int = 1) -> Iterator[RecordChunk]:
    """Chunks in bus order: steps [0, k) of every channel, then [k, 2k), and so on.

    A channel that has run out of steps drops out; its last chunk may be shorter than `k`.
    """
    if steps_per_record < 1:
        raise ValueError(f"steps_per_record must be at least 1, got {steps_per_record}")
    longest = max((len(s.values) for s in series), default=0)
    for start in range(0, longest, steps_per_record):
        for name, values in series:
            if start < len(values):
                yield RecordChunk(name, start, values[start : start + steps_per_record])


class StepPacer:
    """Holds a record back until its last step is due: `start + step * period_s / speed`.

    The clock and the sleep are injectable so the arithmetic can be tested without waiting.
    """

    def __init__(
        self,
        period_s: float,
        speed: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.step_interval_s = period_s / speed
        self._clock = clock
        self._sleep = sleep
        self._start = clock()

    def due(self, step: int) -> float:
        """Clock time at which `step` may be sent."""
        return self._start + step * self.step_interval_s

    def wait_for(self, step: int) -> None:
        delay = self.due(step) - self._clock()
        if delay > 0:
            self._sleep(delay)


def stream_series(
    sender: StepSender,
    series: Sequence[ChannelSeries],
    *,
    steps_per_record: int = 1,
    speed: float | None = None,
    period_s: float = DEFAULT_PERIOD_S,
    start_ts: float | None = None,
    progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayReport:
    """Send every step of `series` in bus order, then flush; the shared loop of all producers.

    Step `i` of a channel gets ``seq = i`` and ``ts = start_ts + i * period_s``. With `speed`
    (N× real time) a record is sent no earlier than ``i_last * period_s / speed`` after the
    start, `i_last` being its last step; without it, as fast as the sender takes them.
    Delivery errors surface from `sender.flush()` at the end, if not earlier.
    """
    if period_s < 0:
        raise ValueError(f"period_s must not be negative, got {period_s}")
    for s in series:
        # The daemon dead-letters records with a bad channel id; refuse them here instead.
        if not re.fullmatch(CHANNEL_PATTERN, s.name):
            raise ValueError(f"channel id {s.name!r} does not match {CHANNEL_PATTERN}")
    if start_ts is None:
        start_ts = time.time()
    total_steps = sum(len(s.values) for s in series)
    started = clock()
    pacer = None if speed is None else StepPacer(period_s, speed, clock=clock, sleep=sleep)
    records = steps = 0
    # tqdm's disable=None turns the bar off when stderr is not a terminal (CI, pipes).
    with tqdm(
        total=total_steps, unit="step", unit_scale=True, disable=None if progress else True
    ) as bar:
        block_steps = 0
        block_start = 0
        for chunk in interleave(series, steps_per_record):
            n = len(chunk.values)
            if pacer is not None:
                pacer.wait_for(chunk.seq + n - 1)
            sender.send(
                chunk.channel, chunk.seq, start_ts + chunk.seq * period_s, chunk.values, period_s
            )
            records += 1
            steps += n
            # One bar update per round-robin block: per record it would cost more than the send.
            if chunk.seq != block_start:
                bar.update(block_steps)
                block_start, block_steps = chunk.seq, 0
            block_steps += n
        bar.update(block_steps)
        sender.flush()
    channels = sum(1 for s in series if len(s.values) > 0)
    return ReplayReport(records=records, steps=steps, channels=channels, seconds=clock() - started)


def available_channels(data_root: Path | str, split: str = "test") -> list[str]:
    """Channel ids that have a `<split>/<chan>.npy` file, in natural order (A-2 before A-10)."""
    split_dir = Path(data_root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no {split!r} split under {data_root}: {split_dir} is missing")
    return sorted((p.stem for p in split_dir.glob("*.npy")), key=_natural_key)


def load_channels(
    data_root: Path | str,
    channels: Sequence[str] | None = None,
    split: str = "test",
    limit_steps: int | None = None,
) -> list[ChannelSeries]:
    """Load `<data_root>/<split>/<chan>.npy` per channel (None = all), first `limit_steps` rows."""
    if limit_steps is not None and limit_steps < 0:
        raise ValueError(f"limit_steps must not be negative, got {limit_steps}")
    names = available_channels(data_root, split) if channels is None else list(channels)
    loaded = []
    for name in names:
        path = Path(data_root) / split / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"unknown channel {name!r}: {path} does not exist")
        values = np.load(path)
        if values.ndim != 2:
            raise ValueError(f"{path} has shape {values.shape}, expected (steps, features)")
        loaded.append(ChannelSeries(name, values[:limit_steps]))
    return loaded


def replay(
    sender: StepSender,
    data_root: Path | str,
    channels: Sequence[str] | None = None,
    split: str = "test",
    steps_per_record: int = 1,
    speed: float | None = None,
    period_s: float = DEFAULT_PERIOD_S,
    start_ts: float | None = None,
    limit_steps: int | None = None,
    progress: bool = True,
) -> ReplayReport:
    """Replay SMAP/MSL channels (None = every file of the split) onto `sender` as a live bus.

    `seq` is the row index in the split's array, so it matches the coordinates of
    `labeled_anomalies.csv`; `limit_steps` keeps the first rows of each channel only.
    """
    series = load_channels(data_root, channels, split, limit_steps)
    return stream_series(
        sender,
        series,
        steps_per_record=steps_per_record,
        speed=speed,
        period_s=period_s,
        start_ts=start_ts,
        progress=progress,
    )


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
