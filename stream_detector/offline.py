"""Drive the detection engine over an array, in stream order, exactly as the daemon does.

No Kafka and no Redis: records are encoded and parsed as on the wire, windows flow through
the same buffers, scores through the same threshold and episode code, with channel state in
a `MemoryStateStore`. Evaluation and channel selection use this; a test checks that the
daemon fed by `replay` publishes the same alerts.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stream_detector.buffers import Window
from stream_detector.engine import ChannelState, DetectionEngine
from stream_detector.records import AlertRecord, parse_telemetry, telemetry_bytes
from stream_detector.thresholds.store import MemoryStateStore


@dataclass
class OfflineRun:
    channel: str
    alerts: list[AlertRecord] = field(default_factory=list)
    end_seqs: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    thresholds: list[float | None] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    still_open: tuple[int, int] | None = None  # an episode the stream ended in
    state: ChannelState | None = None  # the channel's state when the stream ended

    def episodes(self) -> list[tuple[int, int]]:
        """(first_seq, last_seq) of every episode.

        A resolved episode's span comes from its resolve event; one still open when the
        stream ended runs to its last anomalous window (its latest event may be older).
        """
        spans: dict[int, int] = {}
        for alert in self.alerts:
            spans[alert.first_seq] = max(spans.get(alert.first_seq, alert.last_seq), alert.last_seq)
        if self.still_open is not None:
            first, last = self.still_open
            spans[first] = max(spans.get(first, last), last)
        return sorted(spans.items())


def run_offline(
    engine: DetectionEngine,
    channel: str,
    values: np.ndarray,
    *,
    steps_per_record: int = 1,
    flush_windows: int = 256,
    period_s: float = 1.0,
    ts0: float = 0.0,
    breaks: Sequence[int] = (),
    state: ChannelState | None = None,
) -> OfflineRun:
    """Stream `values` (T, F) of one channel through `engine`; collect alerts and scores.

    At each index in `breaks` the sequence numbers skip one step, as when telemetry misses
    one: the buffer starts over there (no window spans it), and the channel's threshold and
    episode state carry on. Steps after k breaks have sequence number index + k.

    `state` starts the channel from a given state (a primed one, `stream_detector.priming`)
    instead of a new one; the run's last state is `OfflineRun.state`."""
    if not engine.emit_scores:
        raise ValueError("run_offline needs an engine built with emit_scores=True")
    store = MemoryStateStore()
    states: dict[str, ChannelState] = {
        channel: engine.new_state(channel, 0) if state is None else state
    }
    run = OfflineRun(channel)
    pending: list[Window] = []

    def flush() -> None:
        outcome = engine.decide(states, pending, engine.score(pending), now=0.0)
        run.alerts.extend(outcome.alerts)
        for sc in outcome.scores:
            run.end_seqs.append(sc.seq)
            run.scores.append(sc.score)
            run.thresholds.append(sc.threshold)
            run.statuses.append(sc.status)
        store.save(list(states.values()))
        pending.clear()

    edges = [0, *sorted(set(breaks)), len(values)]
    if edges != sorted(edges) or any(b <= 0 or b >= len(values) for b in breaks):
        raise ValueError(f"breaks must lie inside the {len(values)} steps, got {list(breaks)}")
    offset = 0
    for skipped, (begin, end) in enumerate(itertools.pairwise(edges)):
        for start in range(begin, end, steps_per_record):
            chunk = values[start : min(start + steps_per_record, end)]
            seq = start + skipped
            raw = telemetry_bytes(channel, seq, ts0 + seq * period_s, chunk, period_s)
            record = parse_telemetry(raw, engine.n_features)
            pending.extend(engine.ingest(states[channel], record, 0, offset))
            offset += 1
            if len(pending) >= flush_windows:
                flush()
    flush()
    run.state = states[channel]
    if run.state.episode.active:
        run.still_open = (run.state.episode.first_seq, run.state.episode.last_seq)
    return run
